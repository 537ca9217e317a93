#!/usr/bin/env bash
# Memory and speed for one large file (a long video): backup and restore of an N GiB file of
# random bytes, with wall time and peak RSS from /usr/bin/time. Shows that memory does not grow
# with file size. Usage: bench/large-file.sh [GiB...]   (default: 1 4)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-1 4}")
[ $# -eq 0 ] && sizes=(1 4)
cargo build --release --quiet
bin=$PWD/target/release/vault
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export VAULT_PASSWORD=bench VAULT_REPO=$work/repo VAULT_CACHE_DIR=$work/cache

measure() { # label, command...
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null
    read -r secs kb <"$work/time"
    printf '%-28s %8.2f s %8.1f MiB peak RSS\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for g in "${sizes[@]}"; do
    rm -rf "$work/repo" "$work/cache" "$work/src" "$work/out"
    mkdir -p "$work/src"
    head -c "$((g * 1024 * 1024 * 1024))" /dev/urandom >"$work/src/video.mp4"
    "$bin" init --kdf-log-n 10 --quiet
    measure "backup ${g} GiB" "$bin" --quiet backup "$work/src"
    measure "restore ${g} GiB" "$bin" --quiet restore --target "$work/out"
    cmp "$work/src/video.mp4" "$work/out/$work/src/video.mp4" && echo "restore byte-identical"
done
