"""The few exceptions the pipeline raises, each with operation, path and a hint.

- ``Retryable``: the step failed for a reason that passes (disk full, I/O error,
  destination not writable, too many open files). The file stays where it is,
  its ledger record stays in its state, the step is redone after a back-off.
- ``BadInput``: the file itself is the problem (a symlink, a FIFO, unreadable).
  It is never ingested; it stays where it is and is logged once per identity.
- ``Gone``: the source vanished or changed under us. Not an error: a changed
  file goes back to waiting, a vanished one is forgotten.
- ``Fatal``: the service cannot go on (ledger unusable, landing root missing at
  start). The process exits non-zero and systemd restarts it.
- ``Refused``: a start that restarting cannot fix (another ledger's directories,
  a lost ledger): one line, exit 2, and systemd does not restart it.

``from_oserror`` translates errno at the boundary into one of these, with a
sentence an operator can act on.
"""

from __future__ import annotations

import errno
import os


class IngestError(Exception):
    def __init__(self, op: str, path: str, cause: str, hint: str = "") -> None:
        super().__init__(f"{op} {path}: {cause}" + (f" ({hint})" if hint else ""))
        self.op = op
        self.path = path
        self.cause = cause
        self.hint = hint

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def __reduce__(self) -> tuple[type[IngestError], tuple[str, str, str, str]]:
        # crosses process boundaries in an Outcome (lander processes)
        return type(self), (self.op, self.path, self.cause, self.hint)


class Retryable(IngestError):
    pass


class BadInput(IngestError):
    pass


class Gone(IngestError):
    pass


class Fatal(IngestError):
    pass


class Refused(Exception):
    """A start refused for what the operator must decide (a directory bound to another ledger,
    a ledger that does not hold the manifests): one line, exit 2, no restart."""


class Stopping(Exception):
    """Shutdown asked a long step to stop; nothing was recorded for it."""


_HINTS = {
    errno.ENOSPC: "disk full: free space on the destination; landing resumes by itself",
    errno.EDQUOT: "quota exceeded on the destination; landing resumes by itself",
    errno.EIO: "I/O error: the step will be redone from the ledger",
    errno.EROFS: "destination filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EMFILE: "too many open files in this process",
    errno.ENFILE: "too many open files on the system",
    errno.ELOOP: "a symlink: never followed",
    errno.EXDEV: "the path leaves the landing dir",
    errno.ENXIO: "not a regular file (a socket or a device)",
}


# a source file the kernel refused, in the words of a rejection (cause, hint)
_BAD_INPUT = {
    errno.ELOOP: ("a symlink: never followed", "deliver the file itself, not a symlink to it"),
    errno.EACCES: ("unreadable: permission denied", "let the ingestor's user read it: it then lands"),
    errno.EPERM: ("unreadable: operation not permitted", "let the ingestor's user read it: it then lands"),
}


def from_oserror(op: str, path: str, exc: OSError, *, source: bool) -> IngestError:
    """Classify an OSError raised on the source side or the destination side."""
    code = exc.errno or 0
    cause = exc.strerror or os.strerror(code) if code else str(exc)
    hint = _HINTS.get(code, "")
    if source:
        if code in (errno.ENOENT, errno.ENOTDIR):
            return Gone(op, path, "vanished")
        if code in (errno.ELOOP, errno.EXDEV, errno.ENXIO, errno.EACCES, errno.EPERM, errno.EISDIR):
            if code in _BAD_INPUT and cause == os.strerror(code):  # the kernel's words: ours instead
                cause, hint = _BAD_INPUT[code]
            return BadInput(op, path, cause, hint)
    if code in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EMFILE,
        errno.ENFILE,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ENOMEM,
        errno.ESTALE,
    ):
        return Retryable(op, path, cause, hint)
    return Retryable(op, path, cause, hint or "unexpected error; the step will be retried")
