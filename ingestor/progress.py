"""Progress of a long one-shot run (``ingestor replay``): a bar on a terminal, JSON lines otherwise.

The daemon calls ``update`` from the loop thread after every batch with the
totals so far: files and bytes judged complete (the total grows while the
scan runs) and files and bytes finished. On a terminal, rich draws files,
bytes, rate and ETA, and log lines are printed above the bar; elsewhere a
``replay_progress`` log line is written every few seconds.
"""

from __future__ import annotations

import time
from typing import Any, BinaryIO, Protocol


class Progress(Protocol):
    def update(self, total_files: int, total_bytes: int, done_files: int, done_bytes: int) -> None: ...
    def close(self) -> None: ...


class LogProgress:
    """A ``replay_progress`` JSON line every ``interval`` seconds, and one at the end."""

    def __init__(self, log: Any, interval: float = 5.0) -> None:
        self.log = log
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0
        self._state = (0, 0, 0, 0)

    def update(self, total_files: int, total_bytes: int, done_files: int, done_bytes: int) -> None:
        self._state = (total_files, total_bytes, done_files, done_bytes)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        total_files, total_bytes, done_files, done_bytes = self._state
        elapsed = max(now - self.started, 1e-9)
        rate = done_bytes / elapsed
        eta = (total_bytes - done_bytes) / rate if rate > 0 and total_bytes > done_bytes else 0.0
        self.log.info(
            "replay_progress",
            files_done=done_files,
            files_total=total_files,
            bytes_done=done_bytes,
            bytes_total=total_bytes,
            files_per_s=round(done_files / elapsed, 1),
            bytes_per_s=round(rate),
            eta_s=round(eta, 1),
        )

    def close(self) -> None:
        self._emit(time.monotonic())


class BarProgress:
    """rich's progress bar on stderr; log lines go above it through ``log_stream``."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._bar.add_task("replay", total=None, files="0/0 files")
        self._bar.start()

    @property
    def log_stream(self) -> BinaryIO:
        """A byte stream for the JSON logs that prints above the bar."""
        console = self.console

        class _AboveBar:
            def write(self, data: bytes) -> int:
                console.print(
                    data.decode("utf-8", "replace"), end="", markup=False, highlight=False, soft_wrap=True
                )
                return len(data)

            def flush(self) -> None:
                console.file.flush()

        return _AboveBar()  # type: ignore[return-value]

    def update(self, total_files: int, total_bytes: int, done_files: int, done_bytes: int) -> None:
        self._bar.update(
            self._task,
            total=max(total_bytes, 1),
            completed=done_bytes,
            files=f"{done_files}/{total_files} files",
        )

    def close(self) -> None:
        self._bar.stop()
