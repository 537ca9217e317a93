#!/usr/bin/env bash
# Fuzz campaign over every decoder of stored data (fuzz/fuzz_targets): cargo-fuzz (libFuzzer)
# on the nightly toolchain, seeded with the real objects of tests/vectors/format-v11.txt.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; CI runs a short pass)
#
# A run fails on any panic, abort, sanitizer report, single allocation of 256 MiB or more
# (-malloc_limit_mb) or RSS above 1 GiB; inputs up to 64 KiB. Crashes are left in
# fuzz/artifacts/ for a regression test. Installs cargo-fuzz when it is missing. Prints the
# executions of each target and their total.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
if ! rustup toolchain list | grep -q nightly; then
    echo "fuzz: no nightly toolchain; skipped" >&2
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
targets="decode_objects decode_trees walk_folder decode_pack_table"
corpus=fuzz/corpus
# Seeds: the pinned objects, each behind the selector byte decode_objects uses.
python3 - "$corpus" <<'PY'
import os, sys
out = sys.argv[1]
v = dict(l.split(" ", 1) for l in open("tests/vectors/format-v11.txt").read().splitlines()
         if l and not l.startswith("#"))
b = {k: bytes.fromhex(x.strip()) for k, x in v.items()}
seeds = {
    "decode_objects": {"key": b"\0" + b["keyfile-plaintext"], "config": b"\2" + b["config"],
                       "lock": b"\2" + b["config-object-lock"], "index": b"\3" + b["index"],
                       "snap": b"\4" + b["snapshot"], "snapwo": b"\4" + b["snapshot-write-only"],
                       "keyobj": b"\x08" + b["key-file-object"]},
    "decode_trees": {"leaf": b["tree"], "index": b["tree-index"]},
    "walk_folder": {"leaf": b["tree"], "split": b["tree-index"] + b"\xfe" + b["tree"]},
    "decode_pack_table": {"pack": b["pack-plaintext"]},
}
for t, s in seeds.items():
    os.makedirs(f"{out}/{t}", exist_ok=True)
    for name, data in s.items():
        open(f"{out}/{t}/seed-{name}", "wb").write(data)
PY
total=0
for t in $targets; do
    log=$(mktemp)
    if ! cargo +nightly fuzz run "$t" "$corpus/$t" -- -max_total_time="$secs" \
        -malloc_limit_mb=256 -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $t FAILED (input in fuzz/artifacts/$t)" >&2
        exit 1
    fi
    runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' | tail -1)
    echo "fuzz: $t: ${runs:-0} executions in ${secs}s, no crash"
    total=$((total + ${runs:-0}))
    rm -f "$log"
done
echo "fuzz: $total executions in total"
