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

source bench/lib.sh

machine
for g in "${sizes[@]}"; do
    rm -rf "$work/repo" "$work/cache" "$work/src" "$work/out"
    mkdir -p "$work/src"
    head -c "$((g * 1024 * 1024 * 1024))" /dev/urandom >"$work/src/video.mp4"
    "$bin" init --kdf-log-n 10 --quiet
    measure "backup ${g} GiB" "$bin" --quiet backup "$work/src"
    measure "restore ${g} GiB" "$bin" --quiet restore --target "$work/out"
    cmp "$work/src/video.mp4" "$work/out/$work/src/video.mp4" && echo "restore byte-identical"
done
