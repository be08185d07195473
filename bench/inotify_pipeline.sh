#!/usr/bin/env bash
# The shell alternative: what a careful operator writes with inotify-tools.
#
#   bench/inotify_pipeline.sh LANDING WAREHOUSE MANIFEST [--durable]
#
# For every file closed after writing or moved into LANDING (recursively):
# skip hidden and .tmp/.part/.swp names, sha256sum it, `mv -n` it to
# WAREHOUSE/ingest_date=YYYY-MM-DD/<relpath>, append one JSON line to MANIFEST.
# With --durable, `sync` the manifest, the destination dir and the source dir
# after each file (coreutils `sync FILE...` fsyncs each one).
#
# What it does not guarantee (by nature, not by neglect):
# - no dedup: a re-sent file lands again (mv -n only refuses an existing name,
#   and then the file stays in the landing dir);
# - no completion check: IN_CLOSE_WRITE also fires for a writer that closes
#   and reopens, or is killed mid-write;
# - no crash safety: a kill between mv and the manifest line loses the line;
#   files dropped while it is down are never seen (no scan at start);
# - events can be lost: inotify's queue (max_queued_events, 16384 here) overflows
#   when the loop falls behind a burst, and those files are never moved;
# - names with a newline break `read`; quotes or backslashes break the JSON line.
#
# stderr carries inotifywait's "Watches established." (the benchmark waits for it).
set -u
landing=${1:?landing dir} warehouse=${2:?warehouse dir} manifest=${3:?manifest file}
durable=${4:-}
export TZ=UTC
mkdir -p -- "$warehouse" "$(dirname -- "$manifest")"

inotifywait -m -r -e close_write,moved_to --format '%w%f' -- "$landing" |
while IFS= read -r path; do
    name=${path##*/}
    case $name in
        .* | *.tmp | *.part | *.swp) continue ;;
    esac
    [ -f "$path" ] && [ ! -L "$path" ] || continue
    sum=$(sha256sum -- "$path") || continue
    sum=${sum%% *}
    rel=${path#"$landing"/}
    printf -v day '%(%Y-%m-%d)T' -1
    dest=$warehouse/ingest_date=$day/$rel
    mkdir -p -- "${dest%/*}"
    mv -n -- "$path" "$dest" || continue
    if [ -e "$path" ]; then  # mv -n exits 0 when it refuses (coreutils < 9.2)
        echo "not moved, name taken: $path" >&2
        continue
    fi
    size=$(stat -c %s -- "$dest")
    printf -v now '%(%Y-%m-%dT%H:%M:%SZ)T' -1
    printf '{"status":"ingested","source_path":"%s","warehouse_path":"%s","sha256":"%s","size":%s,"ingested_at":"%s"}\n' \
        "$path" "$dest" "$sum" "$size" "$now" >>"$manifest"
    if [ "$durable" = --durable ]; then
        sync -- "$manifest" "${dest%/*}" "${path%/*}"
    fi
done
