"""Worker: one batch of candidates through digest → ledger → move → manifest.

``land`` is the whole path of a batch, in commit order; it runs in a worker
thread (or a lander process) and blocks on the ledger's group commits, so
concurrent batches share transactions. ``finish`` is its second half
(records already HASHED or MOVED), and it is what recovery and retries
re-enter: there is no second copy of the protocol.

1. digest every candidate (``digest.py``) — identities in flight elsewhere or
   kept as duplicates are skipped before their bytes are read;
2. plan them in one transaction (HASHED: duplicate or not, destination,
   manifest file, and that file's size: the floor below which its line
   cannot start);
3. move them (``move.py``); MOVED is committed only for a file that changed
   while it landed (its new hash goes in the ledger before its line);
4. append their manifest lines (fsync) and record MANIFESTED.

Per-file problems never fail the batch: every file comes back as one
``FileResult`` (``outcome.py``) saying what happens to it next. A failure of
a shared step (a commit, a directory fsync, the manifest append) leaves the
records in their recorded state; they come back ``UNFINISHED``, each as the
ledger now holds it, for ``finish`` later.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from ingestor import faults, logs
from ingestor.digest import digest
from ingestor.errors import BadInput, Gone, IngestError, Retryable, Stopping, from_oserror
from ingestor.fsops import PATH_MAX, TOO_LONG, TempDir, longer_than, rel_room, replaced
from ingestor.layout import render, with_suffix
from ingestor.ledger import Ledger, MovedUpdate
from ingestor.manifest import LATE_APPEND_SECONDS, ManifestRecord, ManifestWriter, hour_end_ns
from ingestor.move import Moved, Mover
from ingestor.outcome import Outcome, Then, stat_key
from ingestor.plan import DUPLICATES_DIR, Defer, PlanPolicy
from ingestor.records import Candidate, Hashed, Identity, Record, State, Status


class Worker:
    def __init__(
        self,
        *,
        landing: Path,
        landing_fd: int,
        warehouse: Path,
        ledger: Ledger,
        manifest: ManifestWriter,
        tmp: TempDir,
        policy: PlanPolicy,
        stability_ns: int,
        stop: threading.Event,
        log: Any,
        dry_run: bool = False,
        tail: bytes | None = None,
    ) -> None:
        self.landing = landing
        # the end of every manifest line: the source's name and values, the host, the run
        self.tail = tail if tail is not None else ManifestRecord.tail_of("default", {})
        self.landing_fd = landing_fd
        self.warehouse = warehouse
        self.landing_s = str(landing)
        self.warehouse_s = str(warehouse)
        self.warehouse_dev = os.stat(warehouse).st_dev
        self.ledger = ledger
        self.manifest = manifest
        self.tmp = tmp
        self.policy = policy
        self.stability_ns = stability_ns
        self.stop = stop
        self.log = log
        self.dry_run = dry_run
        self.mover = Mover(landing_fd, warehouse, tmp, stop)
        # paths longer than this are checked against PATH_MAX before they are read: a layout adds
        # the warehouse dir and at most a few hundred bytes (a date, a time, a hash)
        self.dest_room = min(rel_room(landing), rel_room(warehouse) - 512)

    # ------------------------------------------------------------ first half

    def land(self, batch: list[Candidate]) -> Outcome:
        out = Outcome()
        # one stat a batch: files judged through the path must be read through a descriptor
        # of the directory that is at the path
        out.landing_replaced = replaced(self.landing, self.landing_fd)
        if out.landing_replaced is not None:
            for cand in batch:
                out.add(cand.rel, Then.STOPPED)
            return out
        hashed: list[Hashed] = []
        for i, cand in enumerate(batch):
            if self.stop.is_set():
                for rest in batch[i:]:
                    out.add(rest.rel, Then.STOPPED)
                break
            try:
                h = self._digest(cand)
            except Stopping:
                for rest in batch[i:]:
                    out.add(rest.rel, Then.STOPPED)
                break
            except Gone as exc:
                out.add(cand.rel, Then.VANISHED if exc.cause == "vanished" else Then.CHANGED)
                continue
            except BadInput as exc:
                out.add(cand.rel, Then.REJECTED, error=exc, key=self._key(cand.rel))
                continue
            except Retryable as exc:
                out.add(cand.rel, Then.BACK_OFF, error=exc)
                continue
            except OSError as exc:
                out.add(cand.rel, Then.BACK_OFF, error=from_oserror("read", cand.rel, exc, source=False))
                continue
            if h is None:
                out.add(cand.rel, Then.SKIPPED)
            else:
                hashed.append(h)
        if not hashed:
            return out
        if self.dry_run:
            self._report(hashed, out)
            return out
        if faults.ACTIVE:
            faults.ACTIVE.hit("before_plan")
        try:
            self.manifest.check_room(len(hashed))
            plans = self.ledger.plan(hashed, self.policy, self.manifest.size)
        except Retryable as exc:
            for h in hashed:
                self._drop_temp(h)
                out.add(h.candidate.rel, Then.BACK_OFF, error=exc)
            return out
        if faults.ACTIVE:
            faults.ACTIVE.hit("after_plan")
        records: list[Record] = []
        for h, plan in zip(hashed, plans, strict=True):
            if isinstance(plan, Record):
                records.append(plan)
                continue
            self._drop_temp(h)
            out.add(h.candidate.rel, Then.DEFER if isinstance(plan, Defer) else Then.SKIPPED)
        out.files += self.finish(records).files
        return out

    def _report(self, hashed: list[Hashed], out: Outcome) -> None:
        """Dry run: say where each file would land; move nothing."""
        for h in hashed:
            self.log.info(
                "file_would_land",
                path=str(self.landing / h.candidate.rel),
                warehouse_path=str(
                    self.warehouse
                    / render(self.policy.layout, h.candidate.rel, time.time_ns(), h.sha256, self.policy.extra)
                ),
                sha256=h.sha256,
                bytes=h.identity.size,
            )
            self._drop_temp(h)
            out.add(h.candidate.rel, Then.REPORTED, key=self._key(h.candidate.rel))

    def _drop_temp(self, h: Hashed) -> None:
        if h.temp is not None:
            self.tmp.remove(h.temp)

    def _key(self, rel: str) -> tuple[int, int, int, int] | None:
        try:
            return stat_key(os.lstat(self.landing / rel))
        except OSError:
            return None  # gone: nothing to remember

    def _digest(self, cand: Candidate) -> Hashed | None:
        """Hash a candidate, or None when its identity is already in flight or kept."""
        if longer_than(cand.rel, self.dest_room):
            self._check_length(cand.rel)
        return digest(
            self.landing_fd,
            cand,
            warehouse_dev=self.warehouse_dev,
            tmp=self.tmp,
            stop=self.stop,
            before_read=self._admit,
        )

    def _check_length(self, rel: str) -> None:
        """Refuse a file whose landing or warehouse path would not fit in ``PATH_MAX``.

        Asked only of long paths (``dest_room`` leaves room for what any
        layout adds to a short one). The warehouse path is the layout's, with
        the ``_duplicates/`` prefix and a content suffix it may get.
        """
        if longer_than(rel, rel_room(self.landing)):
            raise BadInput("land", rel, TOO_LONG)
        dest = render(self.policy.layout, rel, time.time_ns(), "0" * 64, self.policy.extra)
        extra = len(DUPLICATES_DIR) + 1 + len(with_suffix("x", "0" * 64, 99)) - 1
        if len(os.fsencode(dest)) + extra > rel_room(self.warehouse):
            raise BadInput(
                "land",
                rel,
                f"its warehouse path would be longer than {PATH_MAX} bytes: it can never be landed",
                "a shorter name or layout",
            )

    def _admit(self, rel: str, ident: Identity) -> bool:
        """Checked between the first fstat and the first read.

        Whether another process already has this identity in flight is decided
        atomically at planning; the scan leaves out known identities in bulk.
        """
        if self.stability_ns:
            age = time.time_ns() - ident.mtime_ns
            if 0 <= age < self.stability_ns:
                raise Gone("hash", rel, "changed since it was judged complete")
        return True

    # ------------------------------------------------------------ second half

    def finish(self, records: list[Record], *, recovering: bool = False) -> Outcome:
        """HASHED → MOVED → MANIFESTED for planned records; re-entered after a crash or a failure."""
        out = Outcome()
        # Each record as the ledger holds it now: a re-planned destination or manifest file
        # replaces the record here once committed, so a retry re-enters with it, never with
        # a version the ledger no longer has. A record made final is taken out.
        current = {r.id: r for r in records}
        try:
            moved = self._move(self._written(records) if recovering else records, out, current)
            self._manifest(moved, out, current, recovering=recovering)
        except (Retryable, OSError, Stopping) as exc:
            # an OSError not classified where it was raised is still environmental: retry;
            # a copy stopped by shutdown is redone from the ledger at the next start
            if isinstance(exc, Retryable):
                err: IngestError = exc
            elif isinstance(exc, Stopping):
                err = Retryable(
                    "move", records[0].source_rel, "stopped by shutdown", "redone at the next start"
                )
            else:
                err = from_oserror("land", records[0].source_rel, exc, source=False)
            for rec in current.values():
                out.add(rec.source_rel, Then.UNFINISHED, record=rec, error=err)
        return out

    def _move(self, records: list[Record], out: Outcome, current: dict[str, Record]) -> list[Record]:
        """Place the files; MOVED is committed only where the ledger lacks something.

        A row planned with its manifest floor needs no MOVED commit: recovery
        judges a HASHED row from the disk (placed or not) and from the manifest
        (line there or not) alike. A MOVED commit is still made for a file that
        changed while it landed (its new hash must be in the ledger before its
        line is) and for rows planned without a floor (older ledgers).
        """
        ready = [r for r in records if r.state is State.MOVED]
        todo = [r for r in records if r.state is State.HASHED]
        for _attempt in range(3):
            if not todo:
                break
            results = self.mover.move_all(todo)
            todo = []
            updates: list[MovedUpdate] = []
            committed: list[Record] = []  # in MOVED once `updates` is committed
            floors: dict[str, int] = {}
            for res in results:
                rec = res.record
                if res.outcome in (Moved.MOVED, Moved.ALREADY):
                    if res.changed is None and rec.manifest_floor is not None:
                        ready.append(rec)
                        continue
                    floor = rec.manifest_floor
                    if floor is None:
                        floor = floors.get(rec.manifest_rel)
                        if floor is None:
                            floor = floors[rec.manifest_rel] = self.manifest.size(rec.manifest_rel)
                    updates.append(MovedUpdate(rec.id, floor, res.changed))
                    if res.changed is not None:
                        ident, sha = res.changed
                        self.log.warning(
                            "file_changed_during_landing",
                            path=str(self.landing / rec.source_rel),
                            sha256_hashed=rec.sha256,
                            sha256=sha,
                            hint="the writer was still writing: use a longer --stability-seconds, "
                            "a sidecar or a rename",
                        )
                        rec = replace(rec, identity=ident, sha256=sha)
                    committed.append(replace(rec, state=State.MOVED, manifest_floor=floor))
                elif res.outcome is Moved.COLLISION:
                    rec = current[rec.id] = self.ledger.replan_dest(rec, self.policy)
                    todo.append(rec)
                else:
                    note = (
                        "vanished before it moved"
                        if res.outcome is Moved.VANISHED
                        else "changed before it moved"
                    )
                    self.ledger.abandon(rec.id, note)
                    del current[rec.id]
                    if res.outcome is Moved.CHANGED:
                        out.add(rec.source_rel, Then.CHANGED, record=rec)
                    else:
                        out.add(rec.source_rel, Then.VANISHED, record=rec)
                        self.log.warning("file_vanished", path=str(self.landing / rec.source_rel), id=rec.id)
            if updates:
                self.ledger.moved(updates, self.policy)
            for rec in committed:  # what the ledger now holds: retried as such
                current[rec.id] = rec
            ready += committed
            if faults.ACTIVE:
                faults.ACTIVE.hit("after_moved")
        if todo:
            raise Retryable("move", todo[0].source_rel, "destination taken three times in a row")
        return ready

    def _written(self, records: list[Record]) -> list[Record]:
        """Recovery: HASHED rows whose line is already written count as MOVED.

        A line is appended only after the whole move (sources removed, every
        directory fsynced), so such a row's move is done; it is not redone, as
        a MOVED row's is not.
        """
        by_file: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            if r.state is State.HASHED:
                by_file[r.manifest_rel].append(r)
        written: set[str] = set()
        for rel, group in by_file.items():
            floor = min((r.manifest_floor or 0) for r in group)
            written |= self.manifest.find_ids(rel, floor, {r.id for r in group})
        return [replace(r, state=State.MOVED) if r.id in written else r for r in records]

    def _manifest(
        self, records: list[Record], out: Outcome, current: dict[str, Record], *, recovering: bool
    ) -> None:
        by_file: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            by_file[r.manifest_rel].append(r)
        for rel, group in sorted(by_file.items()):
            if recovering:
                floor = min((r.manifest_floor or 0) for r in group)
                present = self.manifest.find_ids(rel, floor, {r.id for r in group})
                if present:
                    self.ledger.manifested(sorted(present))
                    self._done([r for r in group if r.id in present], out, current)
                    group = [r for r in group if r.id not in present]
                if not group:
                    continue
            if time.time_ns() > hour_end_ns(rel) + LATE_APPEND_SECONDS * 1_000_000_000 // 2:
                # that hour's file is closed to readers following it: use the current one
                group = self.ledger.replan_manifest(group, self.manifest.size)
                current.update((r.id, r) for r in group)
                rel = group[0].manifest_rel
            landing, warehouse = self.landing_s, self.warehouse_s
            tail = self.tail
            lines = [ManifestRecord.line_of(r, landing, warehouse, tail) for r in group]
            self.manifest.append(rel, lines)
            self.ledger.manifested([r.id for r in group])
            if faults.ACTIVE:
                faults.ACTIVE.hit("after_manifested")
            self._done(group, out, current)

    def _done(self, records: list[Record], out: Outcome, current: dict[str, Record]) -> None:
        now = time.monotonic()
        landing, warehouse = self.landing_s, self.warehouse_s
        ingested: list[dict[str, Any]] = []
        duplicates: list[dict[str, Any]] = []
        for r in records:
            if r.status is Status.INGESTED:
                ingested.append(
                    {
                        "id": r.id,
                        "path": f"{landing}/{r.source_rel}",
                        "warehouse_path": f"{warehouse}/{r.dest_rel}",
                        "sha256": r.sha256,
                        "bytes": r.identity.size,
                        "latency_ms": round((now - r.seen_at) * 1000, 1) if r.seen_at else None,
                    }
                )
            else:
                duplicates.append(
                    {
                        "id": r.id,
                        "path": f"{landing}/{r.source_rel}",
                        "duplicate_of": r.duplicate_of,
                        "action": r.action.value,
                        "warehouse_path": f"{warehouse}/{r.dest_rel}" if r.dest_rel else None,
                        "sha256": r.sha256,
                        "bytes": r.identity.size,
                    }
                )
        logs.info_many(self.log, "file_ingested", ingested)
        logs.info_many(self.log, "file_duplicate", duplicates)
        for r in records:
            del current[r.id]
            out.add(r.source_rel, Then.DONE, record=r)
