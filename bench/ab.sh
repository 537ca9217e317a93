#!/usr/bin/env bash
# Two vault builds against each other on the same photo tree, interleaved round by round: initial
# backup, no-change backup and restore (cold cache when the script may drop it), wall time and
# peak RSS, medians. For showing that a change does not slow the backup or restore paths.
#
# Usage: bench/ab.sh OLD_VAULT NEW_VAULT [PICTURES]   RUNS=5 (default 3), ROWS=1 to print
#   every measurement as well as the medians
#   e.g. git worktree add /tmp/old <commit> && CARGO_TARGET_DIR=/tmp/old-target cargo build
#   --release --manifest-path /tmp/old/Cargo.toml, then bench/ab.sh /tmp/old-target/release/vault
#   target/release/vault. PICTURES defaults to the corpus of ../shared/corpus/make-corpus.sh.
# Both unlock with a device key in a private kernel session keyring (keyctl), as compare.sh does,
# so that the scrypt of a passphrase unlock does not blur the figures.
set -euo pipefail
if [ -z "${VAULT_BENCH_SESSION:-}" ] && command -v keyctl >/dev/null; then
    VAULT_BENCH_SESSION=1 exec keyctl session - bash "$0" "$@"
fi
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
old=$(realpath "$1") new=$(realpath "$2")
pics=${3:-${CORPUS_DIR:-$HOME/.cache/vault-bench-corpus}/base/Pictures}
runs=${RUNS:-3}
[ -d "$pics" ] || { echo "no photo tree at $pics" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=$work/results.txt
: >"$results"
can_drop=no
[ -w /proc/sys/vm/drop_caches ] && can_drop=yes
export VAULT_PASSWORD=bench

run() { # LABEL STEP COMMAND...
    local label=$1 step=$2
    shift 2
    sync
    if [ "$step" = restore ]; then
        [ "$can_drop" = yes ] && echo 1 >/proc/sys/vm/drop_caches
    else
        find "$pics" -type f -print0 | xargs -0 cat >/dev/null
    fi
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out.log" 2>&1 ||
        { echo "$label $step failed:" >&2; tail -5 "$work/out.log" >&2; exit 1; }
    read -r secs kib <"$work/time"
    echo "$label $step $secs $kib" >>"$results"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); tree: $pics ($(du -sh "$pics" | cut -f1)); $runs rounds"
for round in $(seq 1 "$runs"); do
    for label in old new; do
        bin=$old
        [ "$label" = new ] && bin=$new
        r=$work/repo-$label
        rm -rf "$r" "$work/cache-$label" "$work/out"
        "$bin" --repo "$r" init --quiet >/dev/null 2>&1
        v=(env VAULT_CACHE_DIR="$work/cache-$label" "$bin" --repo "$r" --quiet)
        if [ -n "${VAULT_BENCH_SESSION:-}" ]; then
            VAULT_KEYRING=keyutils "$bin" --repo "$r" --quiet key remember >/dev/null
            v=(env -u VAULT_PASSWORD VAULT_KEYRING=keyutils VAULT_CACHE_DIR="$work/cache-$label" "$bin" --repo "$r" --quiet)
        fi
        run "$label" initial "${v[@]}" backup "$pics"
        run "$label" nochange "${v[@]}" backup "$pics"
        run "$label" restore "${v[@]}" restore --target "$work/out"
        diff -r -q "$pics" "$work/out$pics" >/dev/null || { echo "$label: restore differs" >&2; exit 1; }
        rm -rf "$work/out" "$r"
    done
    echo "round $round done" >&2
done
[ -n "${ROWS:-}" ] && cat "$results"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(label, step, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == label and r[1] == step)
print(f"{'step':<10}{'old':>22}{'new':>22}{'new/old':>10}")
for step in ["initial", "nochange", "restore"]:
    o, n = med("old", step, 2), med("new", step, 2)
    print(f"{step:<10}{o:>10.3f} s {med('old', step, 3) / 1024:>6.0f} MiB{n:>10.3f} s {med('new', step, 3) / 1024:>6.0f} MiB{n / o:>10.3f}")
PY
