"""The benchmark's --quick run as a smoke test: bounded memory, no time blow-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_benchmark(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "bench" / "bench_sampler.py"), "--quick", "--json",
           "--repeat", "3", "--dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 8
    for row in rows:
        assert row["peak_mb"] < 200, row
        assert row["seconds"] < 0.5, row  # 64 MB read whole would not fit this at 2 cores
        assert row["rows"] == 100, row
    assert list(tmp_path.iterdir()) == []  # cleaned up
