"""Records cross process boundaries (``--processes``): pickling keeps every field and type."""

from __future__ import annotations

import pickle

from ingestor.records import Action, Candidate, Hashed, Identity, Record, State, Status


def test_records_pickle_to_equal_objects_of_the_same_types() -> None:
    ident = Identity(2049, 123, 4096, 1_700_000_000_123_456_789)
    cand = Candidate("a/\udcffb.csv", 4096, 12.5, "a/\udcffb.csv.ok")
    hashed = Hashed(cand, ident, "ab" * 32, None)
    rec = Record(
        id="01J000000000000000000000AA",
        state=State.HASHED,
        status=Status.DUPLICATE,
        action=Action.QUARANTINED,
        source_rel=cand.rel,
        identity=ident,
        sha256="ab" * 32,
        dest_rel="_duplicates/x.csv",
        manifest_rel="2026/11/23/19/manifest.jsonl",
        manifest_floor=17,
        ingested_ns=5,
        duplicate_of="01J000000000000000000000AB",
        sidecar_rel=None,
        seen_at=3.25,
        temp=".tmp-x",
    )
    for obj in (ident, cand, hashed, rec, [rec, rec]):
        back = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        assert back == obj and type(back) is type(obj)
    back = pickle.loads(pickle.dumps(rec))
    assert (
        back.state is State.HASHED and back.status is Status.DUPLICATE and back.action is Action.QUARANTINED
    )
    assert type(back.identity) is Identity
