#!/usr/bin/env bash
# What a verified move costs: N photo-sized files of random bytes (default 200 x 5 MiB), a plain
# backup into one folder repository, then `vault move` into two (two backups, two read-backs, one
# fresh local read), RUNS rounds (default 3), wall time and peak RSS from /usr/bin/time.
# Usage: bench/move.sh [N] [MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
mib=${2:-5}
runs=${RUNS:-3}
cargo build --release --quiet
bin=$PWD/target/release/vault
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export VAULT_PASSWORD=bench VAULT_CONFIG=$work/config.toml VAULT_CACHE_DIR=$work/cache

source bench/lib.sh

machine
mkdir -p "$work/orig/Private"
for i in $(seq 1 "$n"); do
    head -c "$((mib * 1024 * 1024))" /dev/urandom >"$work/orig/Private/IMG_$i.JPG"
done
for round in $(seq 1 "$runs"); do
    rm -rf "$work/a" "$work/b" "$work/c" "$work/cache" "$work/src"
    cp -a "$work/orig" "$work/src"
    for r in a b c; do "$bin" --repo "$work/$r" init --kdf-log-n 10 --quiet 2>/dev/null; done
    sync
    measure "round $round: backup to one" "$bin" --repo "$work/c" --quiet backup "$work/src"
    rm -rf "$work/cache"
    sync
    measure "round $round: move to two" "$bin" --quiet move --to "$work/a,$work/b" "$work/src/Private"
    [ ! -e "$work/src/Private" ] && echo "round $round: originals gone"
done
