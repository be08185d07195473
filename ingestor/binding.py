"""Binding: each landing dir, warehouse and manifests dir belongs to one ledger.

Exactly once is decided in a ledger. Two processes with different ledgers on
one landing dir would each land every file (twice in all); a daemon started
on a new ledger beside manifests written by a lost one would land every
resend again. Both are refused at start, before anything is watched or moved.

Each of the three directories holds one hidden file, ``.ingestor-ledger``:

- its content (one JSON object) names the ledger the directory is bound to:
  its id (a random id kept in the ledger's ``meta`` table, so a ledger that
  is moved keeps its directories), its path, and the host and process that
  bound it. It outlives every process: it is what tells a lost ledger.
- every live process working on the directory for that ledger holds a shared
  ``flock`` on it; the kernel drops it when the process dies, however it
  dies, so a live owner is told from a dead one without trusting a pid.

``Binding.acquire`` decides, holding the file's lock:

- nobody alive (an exclusive lock is granted): the directory is bound to no
  ledger yet, or to this one: bind it (once the ledger is open, ``commit``);
  bound to another ledger: refused (``Refused``, exit 2) with what to do
  (point at that ledger, or ``ingestor rebuild-ledger`` if it was lost);
- somebody alive: shared with them if they use this ledger (a replay beside
  the daemon, as ever); otherwise refused, naming the other ledger.

``check_history`` covers what the files cannot: directories written before
this file existed (or whose file was removed) by a ledger that is gone, and
a ledger restored from a backup older than the manifests.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from ingestor.errors import Refused
from ingestor.fsops import fsync_dir
from ingestor.manifest import MANIFEST_NAME, iter_lines, line_start_at_or_before

NAME = ".ingestor-ledger"
SHARE_WAIT_SECONDS = 10.0
_MAX = 4096


def _what(role: str) -> str:
    return {"input": "the landing dir", "warehouse": "the warehouse", "manifests": "the manifests dir"}.get(
        role, role
    )


def _show(marker: dict[str, Any]) -> str:
    where = f"host {marker.get('host', '?')}, pid {marker.get('pid', '?')}"
    return f"the ledger {marker.get('ledger', '?')} (id {marker.get('ledger_id', '?')}; bound by {where})"


class Binding:
    """One directory's ``.ingestor-ledger``, held (shared) for the life of this process."""

    def __init__(self, directory: Path, role: str) -> None:
        self.directory = directory
        self.role = role
        self.path = directory / NAME
        self.fd = -1
        self.marker: dict[str, Any] | None = None
        self._exclusive = False
        self.writable = True
        # True while the directory cannot be written (a read-only mount) and was never bound:
        # nothing can land there either; the daemon binds it once it can (``retry``)
        self.pending = False
        self.cause = ""

    def acquire(self, ledger_id: str | None, ledger_path: Path) -> None:
        """Lock the file and judge its marker against this ledger (``None``: not created yet)."""
        if not self._open():
            return
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._exclusive = True
            except BlockingIOError:
                self._share()
            self.marker = self._read()
            if self.marker is None:
                if not self._exclusive:
                    raise Refused(
                        f"{_what(self.role)} {self.directory} is in use by another ingestor whose ledger "
                        f"is unknown ({self.path} is empty); stop it first"
                    )
                return  # bound by commit() once the ledger exists
            if self.marker.get("ledger_id") == ledger_id:
                return
            if not self._exclusive:
                raise Refused(
                    f"{_what(self.role)} {self.directory} is in use by another ingestor with "
                    f"{_show(self.marker)}; give it the same --state-path, or other directories"
                )
            if self.marker.get("ledger") == str(ledger_path):
                raise Refused(
                    f"{_what(self.role)} {self.directory} was written by {_show(self.marker)}, and the "
                    f"ledger at that path now is another one (lost or replaced?): restore it from a "
                    "backup, or rebuild it from the manifests with `ingestor rebuild-ledger`"
                )
            raise Refused(
                f"{_what(self.role)} {self.directory} was written by {_show(self.marker)}, not by the "
                f"ledger {ledger_path}: point --state-path at that ledger; if it was lost, rebuild it "
                "from the manifests with `ingestor rebuild-ledger`"
            )
        except BaseException:
            self.release()
            raise

    def _open(self) -> bool:
        """Open the file to lock it; False when it cannot exist yet (see ``pending``)."""
        self.pending = False
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            self.writable = True
            return True
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise Refused(f"cannot open {self.path}: {exc.strerror}") from None
            self.cause = exc.strerror or str(exc)
        try:  # not writable now (a read-only mount): an existing file can still be locked and read
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self.writable = False
            return True
        except FileNotFoundError:
            # never bound, and nothing can be written there now: bound once it is writable
            self.pending = True
            return False
        except OSError as exc:
            raise Refused(f"cannot open {self.path}: {exc.strerror}") from None

    def retry(self, ledger_id: str, ledger_path: Path) -> bool:
        """A pending binding, once more: True once bound (``Refused`` if another ledger was first)."""
        self.acquire(ledger_id, ledger_path)
        if self.pending:
            return False
        self.commit(ledger_id, ledger_path)
        return not self.pending

    def acquire_alone(self) -> None:
        """Lock the file for a process that must be the only one on the directory (a rebuild)."""
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                marker = self._read()
                who = _show(marker) if marker else "an unknown ledger"
                raise Refused(
                    f"{_what(self.role)} {self.directory} is in use by an ingestor with {who}; stop it first"
                ) from None
            self._exclusive = True
            self.marker = self._read()
        except BaseException:
            self.release()
            raise

    def rebind(self, ledger_id: str, ledger_path: Path) -> None:
        """Bind a directory held alone to another ledger (the one a rebuild made)."""
        assert self._exclusive
        self.marker = None
        self.commit(ledger_id, ledger_path)

    def _share(self) -> None:
        """Somebody alive holds the lock: share it, once a start-up's brief exclusive hold ends.

        Bounded, not blocking: two starts binding each other's directories in
        opposite roles would otherwise wait for each other for ever.
        """
        deadline = time.monotonic() + SHARE_WAIT_SECONDS
        delay = 0.001
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(
                        f"{_what(self.role)} {self.directory} is held by another ingestor that is "
                        f"starting and did not finish within {SHARE_WAIT_SECONDS:.0f} s; try again"
                    ) from None
                time.sleep(delay)  # a lock held by another process: nothing to wait on but time
                delay = min(delay * 2, 0.05)

    def commit(self, ledger_id: str, ledger_path: Path) -> None:
        """Bind the directory to this (open) ledger if it is not yet, then share the lock."""
        if self.pending:
            return
        if (
            self.marker is None
            or self.marker.get("ledger_id") != ledger_id
            or (self.marker.get("ledger") != str(ledger_path) and self._exclusive)
        ):
            assert self._exclusive, "bound only while no other process uses the directory"
            if not self.writable:
                if self.marker is None:  # an empty file on a read-only mount: bound once writable
                    self.release()
                    self.pending = True
                return  # the same ledger, moved: its new path is written at a later start
            self.marker = {
                "ledger_id": ledger_id,
                "ledger": str(ledger_path),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            data = orjson.dumps(self.marker) + b"\n"
            try:
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, data, 0)
                os.fsync(self.fd)
                fsync_dir(self.directory)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                    raise
                # a full disk: nothing lands there either until it has room; bound then
                self.cause = exc.strerror or str(exc)
                self.marker = None
                self.release()
                self.pending = True
                return
        if self._exclusive:
            # not atomic (flock(2)): a process starting in between sees this marker, as it should
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            self._exclusive = False

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops the lock
            self.fd = -1

    def _read(self) -> dict[str, Any] | None:
        data = os.pread(self.fd, _MAX, 0)
        if not data.strip():
            return None
        try:
            marker = orjson.loads(data)
        except orjson.JSONDecodeError:
            marker = None
        if not isinstance(marker, dict) or not isinstance(marker.get("ledger_id"), str):
            raise Refused(
                f"{self.path} is not an ingestor ledger binding; remove it only if no ingestor uses "
                f"{_what(self.role)} {self.directory}"
            )
        return marker


def bind_all(dirs: dict[str, Path], ledger_id: str | None, ledger_path: Path) -> list[Binding]:
    """Acquire the binding of each directory (see ``Binding.acquire``); all or none."""
    held: list[Binding] = []
    try:
        for role, directory in dirs.items():
            b = Binding(directory, role)
            b.acquire(ledger_id, ledger_path)
            held.append(b)
    except BaseException:
        for b in held:
            b.release()
        raise
    return held


def newest_line_id(manifests: Path) -> tuple[str, str] | None:
    """(manifest rel path, id of its last complete line) of the newest manifest holding a line.

    Hour files sort by path (``YYYY/MM/DD/HH``): the newest is found by
    descending into the greatest name at each level, trying the next one
    where a directory holds no line.
    """

    def walk(rel: str, depth: int) -> tuple[str, str] | None:
        try:
            names = sorted(os.listdir(manifests / rel if rel else manifests), reverse=True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        for name in names:
            if name.startswith("."):
                continue
            sub = f"{rel}/{name}" if rel else name
            if depth < 4:
                found = walk(sub, depth + 1)
                if found is not None:
                    return found
            elif name == MANIFEST_NAME:
                line_id = _last_id(manifests / sub)
                if line_id is not None:
                    return sub, line_id
        return None

    return walk("", 0)


def _last_id(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise
    try:
        size = os.fstat(fd).st_size
        end = line_start_at_or_before(fd, size)  # after the last complete line
        start = line_start_at_or_before(fd, max(end - 1, 0))
        for line, _ in iter_lines(fd, start, end):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                return None
            value = obj.get("id") if isinstance(obj, dict) else None
            return value if isinstance(value, str) else None
    finally:
        os.close(fd)
    return None


def check_history(manifests: Path, ledger_path: Path, knows: Any) -> None:
    """Refuse a ledger that does not hold the newest manifest line (lost, or restored from an old backup).

    ``knows(id) -> bool`` asks the ledger. A line is appended only after its
    record is committed, so a ledger that wrote these manifests knows every id
    in them; the newest one is enough to tell.
    """
    newest = newest_line_id(manifests)
    if newest is None:
        return
    rel, line_id = newest
    if not knows(line_id):
        raise Refused(
            f"the manifests in {manifests} were written by a ledger that {ledger_path} is not "
            f"(the last line of {rel}, id {line_id}, has no record in it): the ledger was lost, "
            "replaced or restored from an older backup. Point --state-path at the ledger that wrote "
            "them, or rebuild it from the manifests with `ingestor rebuild-ledger`"
        )
