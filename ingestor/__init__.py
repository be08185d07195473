"""ingestor: land files dropped into a landing directory exactly once."""

__version__ = "0.1.0"
