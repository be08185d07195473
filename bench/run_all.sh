#!/usr/bin/env bash
# Every benchmark of issue 6, full size, one after the other, each recording its
# section of bench/RESULTS.md. Run from anywhere as root (for drop_caches); takes
# roughly half an hour on a 2-core machine. Extra arguments go to every script
# (e.g. --quick for a dry run that records nothing unless --record is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
for b in limits small_files large_file latency memory compare; do
    echo "=== bench_$b $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$py" "bench/bench_$b.py" --record "$@"
done
