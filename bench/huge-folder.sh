#!/usr/bin/env bash
# One flat folder of FILES small photos (default 1,000,000, as a phone's "Camera Uploads"), vault
# against restic, each into a local repository: initial backup, no-change backup, one photo added
# (and how many bytes the repository grew), `ls` of the folder, restore (checked with diff -r),
# check --read-data. Wall time, peak RSS (VmHWM, from /usr/bin/time) and peak anonymous memory
# (RssAnon, sampled every 0.1 s: without the pages of files mapped read-only, such as vault's
# local index, which the kernel can drop at will).
#
# Usage: bench/huge-folder.sh        FILES=200000 RUNS=1 TOOLS="vault restic" to change.
# The folder is generated once under $WORK (default /tmp/vault-huge-folder, about 4 GB on disk
# per million files, twice that during a restore).
set -euo pipefail
# vault unlocks with its device key in the OS keyring (here the kernel's, in a private session
# keyring), as a device set up for daily use does: a passphrase unlock spends 256 MiB on scrypt,
# which would be every step's peak.
if ! command -v keyctl >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq keyutils >/dev/null 2>&1 || true
fi
if [ -z "${VAULT_BENCH_SESSION:-}" ] && command -v keyctl >/dev/null; then
    VAULT_BENCH_SESSION=1 exec keyctl session - bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
root=$PWD
files=${FILES:-1000000}
runs=${RUNS:-1}
work=${WORK:-/tmp/vault-huge-folder}
tools=(${TOOLS:-vault restic})
mkdir -p "$work"
src=$work/src-$files
dir="$src/Camera Uploads"

if ! command -v restic >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq restic >/dev/null 2>&1 || true
fi
command -v restic >/dev/null || { echo "restic not installed: vault only" >&2; tools=(vault); }

cargo build --release --quiet
vault_bin=$root/target/release/vault

if [ ! -f "$src/.complete" ]; then
    rm -rf "$src"
    mkdir -p "$dir"
    echo "creating $files files in $dir" >&2
    python3 - "$dir" "$files" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
pool = os.urandom(1 << 20)
for i in range(n):
    o = (i * 7919) % ((1 << 20) - 64)
    with open(f"{d}/IMG_{i:07d}.jpg", "wb") as f:
        f.write(pool[o:o + 40 + i % 24] + str(i).encode())
PY
    touch "$src/.complete"
    sleep 3
fi

export VAULT_PASSWORD=bench RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache
results=$work/results.txt
: >"$results"

descendants() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

# measure TOOL STEP COMMAND...: time, peak RSS and peak anonymous memory of one step.
measure() {
    local tool=$1 step=$2
    shift 2
    sync
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out.log" 2>&1 &
    local tpid=$! anon=0 a pid
    while kill -0 "$tpid" 2>/dev/null; do
        for pid in $(descendants "$tpid"); do
            a=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
        done
        sleep 0.1
    done
    if ! wait "$tpid"; then
        echo "$tool $step failed:" >&2
        tail -5 "$work/out.log" >&2
        exit 1
    fi
    read -r secs kib <"$work/time"
    echo "$tool $step $secs $kib $anon" >>"$results"
}

for round in $(seq 1 "$runs"); do
    rm -f "$dir/IMG_new.jpg"
    for t in "${tools[@]}"; do
        r=$work/repo-$t
        rm -rf "$r" "$work/cache-$t" "$RESTIC_CACHE_DIR"
        case $t in
        vault)
            "$vault_bin" --repo "$r" init --quiet >/dev/null 2>&1
            v=(env VAULT_CACHE_DIR="$work/cache-vault" "$vault_bin" --repo "$r")
            if [ -n "${VAULT_BENCH_SESSION:-}" ]; then
                VAULT_KEYRING=keyutils "$vault_bin" --repo "$r" --quiet key remember >/dev/null
                v=(env -u VAULT_PASSWORD VAULT_KEYRING=keyutils VAULT_CACHE_DIR="$work/cache-vault" "$vault_bin" --repo "$r")
            fi
            measure vault initial "${v[@]}" --quiet backup "$src"
            measure vault nochange "${v[@]}" --quiet backup "$src"
            before=$(du -sb "$r" | cut -f1)
            head -c 3000000 /dev/urandom >"$dir/IMG_new.jpg"
            measure vault addone "${v[@]}" --quiet backup "$src"
            echo "vault grew $(($(du -sb "$r" | cut -f1) - before)) 0 0" >>"$results"
            measure vault ls sh -c '"$@" ls latest "$0" | wc -l' "$dir" "${v[@]}"
            out=$work/out-vault
            rm -rf "$out"
            measure vault restore "${v[@]}" --quiet restore --target "$out"
            measure vault check "${v[@]}" check --read-data
            ;;
        restic)
            restic -r "$r" init >/dev/null
            measure restic initial restic -r "$r" backup --quiet "$src"
            measure restic nochange restic -r "$r" backup --quiet "$src"
            before=$(du -sb "$r" | cut -f1)
            head -c 3000000 /dev/urandom >"$dir/IMG_new.jpg"
            measure restic addone restic -r "$r" backup --quiet "$src"
            echo "restic grew $(($(du -sb "$r" | cut -f1) - before)) 0 0" >>"$results"
            measure restic ls sh -c "restic -r '$r' ls latest '$dir' | wc -l"
            out=$work/out-restic
            rm -rf "$out"
            measure restic restore restic -r "$r" restore latest --target "$out"
            measure restic check restic -r "$r" check --read-data
            ;;
        esac
        if ! diff -r -q "$src" "$out$src" >/dev/null; then
            echo "$t: restore differs from the source" >&2
            exit 1
        fi
        rm -rf "$out" "$r"
        rm -f "$dir/IMG_new.jpg"
    done
    echo "round $round done" >&2
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/ {print $2}') GiB"
echo "folder: $files files in one folder; tools: ${tools[*]}; $runs round(s), medians"
python3 - "$results" "${tools[@]}" <<'PY'
import statistics, sys
path, tools = sys.argv[1], sys.argv[2:]
rows = [l.split() for l in open(path)]
def med(tool, step, col):
    v = [float(r[col]) for r in rows if r[0] == tool and r[1] == step]
    return statistics.median(v) if v else None
print(f"{'step':<10}" + "".join(f"{t:>52}" for t in tools))
for step in ["initial", "nochange", "addone", "ls", "restore", "check"]:
    def cell(t):
        s = med(t, step, 2)
        if s is None:
            return f"{'-':>52}"
        txt = f"{s:.2f} s, {med(t, step, 3) / 1024:.0f} MiB RSS, {med(t, step, 4) / 1024:.0f} MiB anon"
        if t != "vault" and med("vault", step, 2):
            txt += f" (x{s / med('vault', step, 2):.1f})"
        return f"{txt:>52}"
    print(f"{step:<10}" + "".join(cell(t) for t in tools))
print(f"{'+1 photo':<10}" + "".join(f"{(str(int(med(t, 'grew', 2))) + ' bytes added') if med(t, 'grew', 2) is not None else '-':>52}" for t in tools))
print("(xN: restic's time / vault's; RSS: peak resident set; anon: peak anonymous memory, sampled)")
PY
