"""Command line: ingestor lookup (registered on ``cli.app`` when ``cli`` imports this module)."""
