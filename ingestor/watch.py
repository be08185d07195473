"""Watch: filesystem events → hints ("look at this path"), never decisions.

``InotifyWatcher`` (Linux): the inotify descriptor is read from the asyncio
loop with ``add_reader`` — no thread, no polling. Every directory of the tree
is watched (``IN_ONLYDIR | IN_DONT_FOLLOW``: a symlinked directory is never
entered). A directory that appears is watched and then scanned, because files
created in it before its watch existed produce no event at all.

Kernel facts handled here:
- ``IN_CLOSE_WRITE`` does not mean complete (a killed writer closes too), so it
  is only a hint; readiness decides. But a file that got ``IN_MODIFY`` is not
  complete *until* an ``IN_CLOSE_WRITE`` (or ``IN_MOVED_TO`` of its name): a
  writer that pauses longer than the stability window still holds it open. A file moved in gives only
  ``IN_MOVED_TO``; a hard link or ``O_TMPFILE`` + ``linkat`` only ``IN_CREATE``.
- ``IN_Q_OVERFLOW`` (wd -1): events were lost; the only correct answer is a
  full rescan. ``IN_IGNORED`` / ``IN_UNMOUNT``: that watch is dead.
- ``IN_DELETE_SELF`` / ``IN_MOVE_SELF`` / ``IN_UNMOUNT`` on the landing dir
  itself: its path no longer names it; the sink stops landing from it.
- A directory moved inside the tree keeps its watch descriptors under stale
  paths: the scan of its new place re-adds each watch, which returns the same
  descriptor and so re-maps it.

``WatchdogWatcher`` is the portable fallback: watchdog's observer thread hands
each event to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from inotify_simple import INotify, flags, parse_events

# IN_MODIFY: a file written to is not complete until its IN_CLOSE_WRITE (readiness.written)
FILE_EVENTS = flags.CLOSE_WRITE | flags.MOVED_TO | flags.CREATE | flags.MODIFY
DIR_MASK = (
    FILE_EVENTS | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW | flags.EXCL_UNLINK
)
PARENT_MASK = flags.DELETE | flags.MOVED_FROM | flags.ONLYDIR | flags.DONT_FOLLOW
READ_SIZE = 1 << 18
# the landing dir itself: moved away, deleted, unmounted (its watch is then dead: IGNORED)
_ROOT_GONE = flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT
_ROOT_GONE_CAUSE = {
    flags.DELETE_SELF: "the landing dir was deleted",
    flags.MOVE_SELF: "the landing dir was renamed: its files are outside the landing path now",
    flags.UNMOUNT: "the filesystem of the landing dir was unmounted",
}


class Sink(Protocol):
    """Where a watcher reports; every call happens on the loop thread."""

    def hint(self, rel: str) -> None: ...
    def new_dir(self, rel: str) -> None: ...
    def overflow(self) -> None: ...
    def landing_replaced(self, cause: str) -> None: ...
    def written(self, rel: str) -> None: ...
    def closed(self, rel: str) -> None: ...


# a directory above landing dirs (a source's placeholder levels): a new or removed name there
# may make or end a landing dir
LEVEL_MASK = (
    flags.CREATE | flags.MOVED_TO | flags.DELETE | flags.MOVED_FROM | flags.ONLYDIR | flags.DONT_FOLLOW
)


class InotifyHub:
    """One inotify descriptor for every landing dir of a daemon (the kernel's default limit is
    128 instances per user), read from the loop; each event goes to the watcher of its
    directory, a landing dir's parent, or the discovery of new landing dirs (``levels``)."""

    def __init__(self, log: Any, on_level: Callable[[Path, str], None] | None = None) -> None:
        self.log = log
        self.on_level = on_level
        self.inotify: INotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.owners: dict[int, InotifyWatcher] = {}  # a landing dir's (or its subdir's) wd
        self.parents: dict[int, set[InotifyWatcher]] = {}
        self.levels: dict[int, Path] = {}
        self.events = 0
        self.overflows = 0
        self.watchers: set[InotifyWatcher] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.inotify = INotify(nonblocking=True)
        self._loop = loop
        loop.add_reader(self.inotify.fileno(), self._readable)

    def close(self) -> None:
        if self.inotify is not None:
            if self._loop is not None:
                self._loop.remove_reader(self.inotify.fileno())
            self.inotify.close()
            self.inotify = None

    def add(self, path: Path | str, mask: int) -> int:
        assert self.inotify is not None
        return int(self.inotify.add_watch(path, mask | flags.MASK_ADD))

    def watch_level(self, path: Path) -> bool:
        """Watch a directory above landing dirs for new names; False if it cannot be."""
        if self.inotify is None:
            return False
        try:
            wd = self.add(path, LEVEL_MASK)
        except OSError:
            return False
        with self.lock:
            self.levels[wd] = path
        return True

    def _readable(self) -> None:
        assert self.inotify is not None
        try:
            data = os.read(self.inotify.fileno(), READ_SIZE)
        except BlockingIOError:
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Events as the kernel packs them → calls on the sinks (the loop thread)."""
        for ev in parse_events(data):
            self.events += 1
            if ev.mask & flags.Q_OVERFLOW:
                self.overflows += 1
                self.log.warning("inotify_overflow", hint="events were lost; rescanning everything")
                for w in list(self.watchers):
                    w.sink.overflow()
                if self.on_level is not None:
                    self.on_level(Path("/"), "")
                continue
            with self.lock:
                owner = self.owners.get(ev.wd)
                parents = self.parents.get(ev.wd, ())
                level = self.levels.get(ev.wd)
                if ev.mask & (flags.IGNORED | flags.UNMOUNT):
                    self.levels.pop(ev.wd, None)
            if owner is not None:
                owner.event(ev)
            for w in list(parents):
                w.parent_event(ev)
            if (
                level is not None
                and self.on_level is not None
                and ev.mask & flags.ISDIR
                and not ev.name.startswith(".")
            ):
                self.on_level(level, ev.name)


class InotifyWatcher:
    """One landing dir's watches: every directory of its tree, and its parent (its name)."""

    def __init__(self, landing: Path, sink: Sink, log: Any, hub: InotifyHub | None = None) -> None:
        self.landing = landing
        self.sink = sink
        self.log = log
        self.hub = hub
        self._own_hub = hub is None
        # wd → relative dir; mutated from the loop and from scan threads (add_dir)
        self._dirs: dict[int, str] = {}
        self._failed: set[str] = set()  # dirs whose watch failed (reported once)
        self._lock = threading.Lock()
        self._parent_wd = -2  # the watch of the landing dir's parent (its name only)
        self._closed = False

    @property
    def inotify(self) -> INotify | None:
        return None if self.hub is None or self._closed else self.hub.inotify

    @property
    def events(self) -> int:
        return self.hub.events if self.hub is not None else 0

    @property
    def overflows(self) -> int:
        return self.hub.overflows if self.hub is not None else 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.hub is None:
            self.hub = InotifyHub(self.log)
        if self.hub.inotify is None:
            self.hub.start(loop)
        hub = self.hub
        hub.watchers.add(self)
        # The landing dir's own IN_DELETE_SELF never comes while the daemon holds it open
        # (its descriptor keeps the inode): its parent says when its name goes away.
        try:
            self._parent_wd = hub.add(self.landing.parent, PARENT_MASK)
            with hub.lock:
                hub.parents.setdefault(self._parent_wd, set()).add(self)
        except OSError as exc:  # the scan's check of the landing dir's identity still covers it
            self.log.warning("watch_failed", path=str(self.landing.parent), error=exc.strerror)

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching this landing dir (the hub goes on for the others)."""
        if self._closed:
            return
        self._closed = True
        hub = self.hub
        if hub is None:
            return
        hub.watchers.discard(self)
        with hub.lock:
            hub.parents.get(self._parent_wd, set()).discard(self)
            wds = [wd for wd in self._dirs if hub.owners.get(wd) is self]
            for wd in wds:
                del hub.owners[wd]
        if self._own_hub:
            hub.close()
            return
        for wd in wds:
            if hub.inotify is not None:
                try:
                    hub.inotify.rm_watch(wd)
                except OSError:
                    pass  # gone already (its directory was removed): nothing to stop

    def add_dir(self, rel: str) -> None:
        """Watch one directory (thread-safe: the scan calls it for every dir it enters)."""
        hub = self.hub
        if hub is None or hub.inotify is None or self._closed:
            return
        path = self.landing / rel if rel else self.landing
        try:
            wd = hub.inotify.add_watch(path, DIR_MASK)
        except OSError as exc:
            # gone, replaced by a symlink, or out of watches: the scan still covers it;
            # said once per directory, not at every scan
            with self._lock:
                first = rel not in self._failed
                self._failed.add(rel)
            if first:
                self.log.warning(
                    "watch_failed", path=str(path), error=exc.strerror, hint="the scan covers it"
                )
            return
        with self._lock:
            self._dirs[wd] = rel
            self._failed.discard(rel)
        with hub.lock:
            hub.owners[wd] = self

    @property
    def watched(self) -> int:
        return len(self._dirs)

    def feed(self, data: bytes) -> None:
        """Events as the kernel packs them → calls on the sink (the loop thread)."""
        assert self.hub is not None
        self.hub.feed(data)

    def parent_event(self, ev: Any) -> None:
        mask = ev.mask
        if ev.name == self.landing.name and mask & flags.ISDIR and mask & PARENT_MASK:
            self.sink.landing_replaced(
                "the landing dir was renamed away"
                if mask & flags.MOVED_FROM
                else "the landing dir was deleted"
            )

    def event(self, ev: Any) -> None:
        mask = ev.mask
        with self._lock:
            rel_dir = self._dirs.get(ev.wd)
            if mask & (flags.IGNORED | flags.UNMOUNT):
                self._dirs.pop(ev.wd, None)
        if rel_dir == "" and mask & _ROOT_GONE:
            self.sink.landing_replaced(_ROOT_GONE_CAUSE.get(mask & _ROOT_GONE, "the landing dir is gone"))
            return
        if rel_dir is None or mask & (_ROOT_GONE | flags.IGNORED):
            return
        rel = f"{rel_dir}/{ev.name}" if rel_dir else ev.name
        if mask & flags.ISDIR:
            if mask & (flags.CREATE | flags.MOVED_TO) and not ev.name.startswith("."):
                self.add_dir(rel)
                self.sink.new_dir(rel)
            return
        if mask & flags.MODIFY:
            self.sink.written(rel)
        elif mask & (flags.CLOSE_WRITE | flags.MOVED_TO):
            self.sink.closed(rel)
        else:
            self.sink.hint(rel)


class WatchdogWatcher:
    """watchdog's observer thread → the loop; for systems without inotify."""

    def __init__(self, landing: Path, sink: Sink, log: Any) -> None:
        self.landing = landing
        self.sink = sink
        self.log = log
        self.events = 0
        self.overflows = 0
        self._observer: Any = None

    @property
    def watched(self) -> int:
        return 1 if self._observer is not None else 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        root = str(self.landing)
        sink = self.sink
        watcher = self

        def rel_of(path: str | bytes) -> str | None:
            p = os.fsdecode(path)
            if p == root or not p.startswith(root + "/"):
                return None
            return p[len(root) + 1 :]

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                watcher.events += 1
                paths = [event.src_path]
                if event.event_type == "moved":
                    paths = [event.dest_path]
                elif event.event_type not in ("created", "modified", "closed"):
                    return
                for p in paths:
                    rel = rel_of(p)
                    if rel is None:
                        continue
                    call: Callable[[str], None] = sink.new_dir if event.is_directory else sink.hint
                    loop.call_soon_threadsafe(call, rel)

        self._observer = Observer()
        self._observer.schedule(Handler(), root, recursive=True)
        self._observer.start()

    def add_dir(self, rel: str) -> None:
        """watchdog watches recursively by itself."""

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    async def stop(self) -> None:
        """``close`` off the loop: joining the observer's threads waits for their poll."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)
