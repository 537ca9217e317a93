#!/usr/bin/env bash
# vault against restic, rustic and borg on the same photo tree, each into a local encrypted
# repository: initial backup, no-change re-backup, incremental backup after the corpus change set,
# full restore (checked byte-identical with diff -r), repository size and object count, wall time
# and peak RSS. Runs are interleaved (every tool does a step before the next step), RUNS rounds
# (default 3); the table shows medians and the peers' time / vault's time.
#
# Usage: bench/compare.sh [PICTURES]   (default: the corpus of ../shared/corpus/make-corpus.sh,
#        $CORPUS_DIR/base/Pictures). Peers missing are installed when possible (restic and borg
#        with apt-get as root, rustic with `cargo install rustic-rs`), else skipped with a note.
#        TOOLS="vault restic" limits the tools.
#
# Settings: vault defaults (zstd level 3 where it pays); restic repository v2 with its default
# `auto` compression; rustic defaults; borg repokey-blake2 with `-C auto,zstd,3`.
#
# Unlocking: `vault` runs as on a device set up for daily use, with its device key in the OS
# keyring (`vault key remember`; here the kernel keyutils store in a private session keyring).
# `vault-pass` is a no-change backup of vault's repository unlocked by passphrase instead: the
# scrypt work factor (2^18, 256 MiB, ~0.5 s) that every passphrase run pays on top (only that
# step is run, to keep disk use down). The peers unlock by password with their own, smaller KDF
# settings (restic calibrates scrypt to at most 60 MiB).
set -euo pipefail
if [ -z "${VAULT_BENCH_SESSION:-}" ] && command -v keyctl >/dev/null; then
    VAULT_BENCH_SESSION=1 exec keyctl session - bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
root=$PWD
corpus_dir=${CORPUS_DIR:-$HOME/.cache/vault-bench-corpus}
pics=${1:-$corpus_dir/base/Pictures}
runs=${RUNS:-3}
shared=$root/../shared/corpus/make-corpus.sh
if [ ! -d "$pics" ]; then
    echo "no photo tree at $pics: build the corpus with $shared (about 25 minutes)" >&2
    exit 1
fi

have() { command -v "$1" >/dev/null; }
tools=()
for t in ${TOOLS:-vault vault-pass restic rustic borg}; do
    case $t in
    vault)
        if command -v keyctl >/dev/null; then tools+=(vault); else echo "skipping vault (keyring): no keyctl; vault-pass still runs" >&2; fi
        ;;
    vault-pass) tools+=(vault-pass) ;;
    restic | borg)
        pkg=$t
        [ "$t" = borg ] && pkg=borgbackup
        if ! have "$t" && have apt-get && [ "$(id -u)" = 0 ]; then
            apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
                { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$pkg" >/dev/null 2>&1; } || true
        fi
        if have "$t"; then tools+=("$t"); else echo "skipping $t: not installed and cannot be installed here" >&2; fi
        ;;
    rustic)
        if ! have rustic && have cargo; then
            echo "installing rustic (cargo install rustic-rs, once; takes a while)" >&2
            cargo install --locked --quiet rustic-rs >/dev/null 2>&1 || true
        fi
        if have rustic; then tools+=(rustic); else echo "skipping rustic: cannot be installed here" >&2; fi
        ;;
    esac
done

cargo build --release --quiet
vault_bin=$root/target/release/vault
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
export VAULT_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench RUSTIC_PASSWORD=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR=$work/borg-home RESTIC_CACHE_DIR=$work/restic-cache
results=$work/results.txt
: >"$results"

# Page cache: every backup starts with the photo tree in memory (read once beforehand), so the
# backups compare CPU work, not the disk; every restore starts with nothing cached (when the
# script may drop the cache, as root), as a real restore does, days after the backup. Without
# this, a tool that writes its packs past the page cache (vault) would restore from the disk
# while the others restore from memory, and the memory left over from earlier steps decides
# how much the kernel must reclaim on the way.
can_drop=no
if [ -w /proc/sys/vm/drop_caches ]; then can_drop=yes; fi
cache_for() { # STEP
    sync
    if [ "$1" = restore ]; then
        if [ "$can_drop" = yes ]; then echo 1 >/proc/sys/vm/drop_caches; fi
    else
        find "$work/pics" -type f -print0 | xargs -0 cat >/dev/null
    fi
}

# run TOOL STEP COMMAND...: time one step, record "tool step seconds kib".
run() {
    local tool=$1 step=$2
    shift 2
    cache_for "$step"
    if ! /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out.log" 2>&1; then
        echo "$tool $step failed:" >&2
        tail -5 "$work/out.log" >&2
        exit 1
    fi
    read -r secs kib <"$work/time"
    echo "$tool $step $secs $kib" >>"$results"
}

init() {
    local t=$1 r=$work/repo-$1
    rm -rf "$r" "$work/cache-$t" "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR"
    case $t in
    vault) "$vault_bin" --repo "$r" init --quiet 2>/dev/null &&
        VAULT_KEYRING=keyutils "$vault_bin" --repo "$r" --quiet key remember >/dev/null ;;
    vault-pass) ;;
    restic) restic -r "$r" init --repository-version 2 >/dev/null ;;
    rustic) rustic -r "$r" init >/dev/null 2>&1 ;;
    borg) borg init -e repokey-blake2 "$r" >/dev/null 2>&1 ;;
    esac
}

backup() { # tool step
    local t=$1 step=$2 r=$work/repo-$1
    case $t in
    vault) run "$t" "$step" env -u VAULT_PASSWORD VAULT_KEYRING=keyutils VAULT_CACHE_DIR="$work/cache-$t" "$vault_bin" --repo "$r" --quiet backup "$work/pics" ;;
    vault-pass) if [ "$step" = nochange ]; then run "$t" "$step" env VAULT_CACHE_DIR="$work/cache-vault" "$vault_bin" --repo "$work/repo-vault" --quiet backup "$work/pics"; fi ;;
    restic) run "$t" "$step" restic -r "$r" backup --quiet "$work/pics" ;;
    rustic) run "$t" "$step" rustic -r "$r" backup "$work/pics" ;;
    borg) run "$t" "$step" borg create -C auto,zstd,3 "$r::$step" "$work/pics" ;;
    esac
}

restore() {
    local t=$1 r=$work/repo-$1 out=$work/out-$1
    rm -rf "$out"
    mkdir -p "$out"
    case $t in
    vault) run "$t" restore env -u VAULT_PASSWORD VAULT_KEYRING=keyutils VAULT_CACHE_DIR="$work/cache-$t" "$vault_bin" --repo "$r" --quiet restore --target "$out" ;;
    vault-pass) return 0 ;;
    restic) run "$t" restore restic -r "$r" restore latest --target "$out" ;;
    rustic) run "$t" restore rustic -r "$r" restore latest "$out" ;;
    borg) run "$t" restore sh -c "cd '$out' && borg extract '$r::incremental'" ;;
    esac
    # Durable: until the restored files are on the disk. Tools that write through the page cache
    # finish with data still to be written back; vault writes large files directly. `sync` right
    # after the restore measures what was left.
    local t0 t1 secs
    t0=$(date +%s.%N)
    sync
    t1=$(date +%s.%N)
    secs=$(awk -v t="$t" '$1 == t && $2 == "restore" { x = $3 } END { print x }' "$results")
    echo "$t durable $(awk -v a="$secs" -v b="$t0" -v c="$t1" 'BEGIN { printf "%.2f", a + c - b }') 0" >>"$results"
    local got=$out$work/pics
    diff -r -q "$work/pics" "$got" >/dev/null || { echo "$t: restore differs from the source" >&2; exit 1; }
    echo "$t size $(du -sb "$r" | cut -f1) $(find "$r" -type f | wc -l)" >>"$results"
    rm -rf "$out"
    if [ "$t" = vault ]; then disk_floor "$r"; fi
    rm -rf "$r" # the next round starts afresh; frees the disk for the next restore
}

# The disk's floor for a durable restore, with no CPU work: read vault's packs from a cold cache,
# 4 at a time, while writing as many bytes as the tree holds with direct I/O, 4 files at a time.
# No tool can restore durably faster from this disk. Needs a dropped cache (root) and a
# filesystem that takes direct I/O; skipped otherwise.
disk_floor() { # REPO
    [ "$can_drop" = yes ] || return 0
    local mib secs
    mib=$(($(du -sb "$work/pics" | cut -f1) / 4 / 1048576 + 1))
    mkdir -p "$work/floor"
    sync
    echo 1 >/proc/sys/vm/drop_caches
    if /usr/bin/time -f "%e %M" -o "$work/time" bash -c '
        find "$1/data" -type f -print0 | xargs -0 -n4 -P4 cat >/dev/null &
        for i in 1 2 3 4; do dd if=/dev/zero of="$2/f$i" bs=1M count="$3" oflag=direct status=none & done
        ok=0; for j in $(jobs -p); do wait "$j" || ok=1; done; exit $ok' _ "$1" "$work/floor" "$mib" 2>/dev/null; then
        read -r secs _ <"$work/time"
        echo "floor durable $secs 0" >>"$results"
    fi
    rm -rf "$work/floor"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/ {print $2}') GiB"
echo "page cache: photo tree read before each backup; dropped before each restore: $can_drop"
echo "tree: $pics ($(du -sh "$pics" | cut -f1), $(find "$pics" -type f | wc -l) files); tools: ${tools[*]}; $runs rounds"
for round in $(seq 1 "$runs"); do
    rm -rf "$work/pics"
    cp -a "$pics" "$work/pics"
    for t in "${tools[@]}"; do init "$t"; done
    for t in "${tools[@]}"; do backup "$t" initial; done
    for t in "${tools[@]}"; do backup "$t" nochange; done
    bash "$shared" incremental "$work/pics" >/dev/null 2>&1
    for t in "${tools[@]}"; do backup "$t" incremental; done
    for t in "${tools[@]}"; do restore "$t"; done
    echo "round $round done" >&2
done

python3 - "$results" "$(du -sb "$pics" | cut -f1)" "${tools[@]}" <<'PY'
import statistics, sys
path, tree_bytes, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = [l.split() for l in open(path)]
def med(tool, step, col):
    v = [float(r[col]) for r in rows if r[0] == tool and r[1] == step]
    return statistics.median(v) if v else None
def cells(f):
    return "".join(f"{f(t) or '-':>24}" for t in tools)
print(f"{'step':<12}" + "".join(f"{t:>24}" for t in tools))
for step in ["initial", "nochange", "incremental", "restore"]:
    ref = med("vault", step, 2)
    time_rss = lambda t: med(t, step, 2) is not None and f"{med(t, step, 2):.2f} s {med(t, step, 3) / 1024:>7.0f} MiB"
    print(f"{step:<12}" + cells(time_rss))
    ratio = lambda t: t != "vault" and ref and med(t, step, 2) is not None and f"x{med(t, step, 2) / ref:.2f} / RSS x{med(t, step, 3) / med('vault', step, 3):.2f}"
    print(" " * 12 + cells(ratio))
    if step in ("initial", "restore"):
        print(" " * 12 + cells(lambda t: med(t, step, 2) is not None and f"{tree_bytes / 1e6 / med(t, step, 2):.0f} MB/s"))
step = "durable"
ref = med("vault", step, 2)
print(f"{'restore+sync':<12}" + cells(lambda t: med(t, step, 2) is not None and f"{med(t, step, 2):.2f} s"))
print(" " * 12 + cells(lambda t: t != "vault" and ref and med(t, step, 2) is not None and f"x{med(t, step, 2) / ref:.2f}"))
print(" " * 12 + cells(lambda t: med(t, step, 2) is not None and f"{tree_bytes / 1e6 / med(t, step, 2):.0f} MB/s"))
floor = med("floor", "durable", 2)
if floor is not None:
    print(f"{'disk floor':<12}{floor:>24.2f} s  (no CPU work: read vault's packs cold and write the tree's bytes with direct I/O)")
    if ref:
        print(f"{'':<12}{'vault at ' + format(floor / ref, '.0%') + ' of it':>24}")
size = lambda t: med(t, "size", 2) is not None and f"{med(t, 'size', 2) / 2**20:.1f} MiB {int(med(t, 'size', 3))} obj"
print(f"{'repo size':<12}" + cells(size))
print("(xN: the peer's median time / vault's, above 1 means vault is faster; RSS xN: the peer's peak RSS / vault's;")
print(" restore+sync: the restore, then `sync` until its files are on the disk)")
PY
