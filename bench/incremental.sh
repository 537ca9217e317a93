#!/usr/bin/env bash
# Incremental backups of many small files: initial backup, no-change re-backup, and re-backup
# after changing 1% of the files, with wall time, peak RSS (/usr/bin/time -v) and the file
# content bytes vault read (its --json `bytes_read`), plus the kernel's count of all bytes the
# process read (rchar from /proc, which includes the local index and repository metadata).
#
# Usage: bench/incremental.sh [N...]       (default: 10000 100000)
#        RUNS=3 (rounds per N; medians are reported)
#        MIN_KIB=16 MAX_KIB=64 (file sizes, uniform; thumbnails and small photos)
# Each round starts from an empty repository and an empty local index. The repository uses a
# low scrypt work factor so that unlocking (the same in every step) does not blur the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ $# -eq 0 ] && counts=(10000 100000)
runs=${RUNS:-3}
min_kib=${MIN_KIB:-16}
max_kib=${MAX_KIB:-64}
cargo build --release --quiet
bin=$PWD/target/release/vault
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export VAULT_PASSWORD=bench VAULT_REPO=$work/repo VAULT_CACHE_DIR=$work/cache

# One timed vault run: prints "seconds peak_kib content_bytes_read rchar".
timed() {
    /usr/bin/time -v -o "$work/time" sh -c '"$0" "$@" >"'"$work"'/out.json"; grep "^rchar" /proc/$$/io >"'"$work"'/io"' "$@"
    local secs kib read rchar
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$work/time")
    kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time")
    read=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_read"])' "$work/out.json")
    rchar=$(awk '{print $2}' "$work/io")
    echo "$secs $kib $read $rchar"
}

# A tree of N files of MIN_KIB to MAX_KIB of random bytes, 100 per folder, mtimes in the past.
generate() {
    python3 - "$1" "$2" "$min_kib" "$max_kib" <<'EOF'
import os, random, sys
n, root = int(sys.argv[1]), sys.argv[2]
lo, hi = int(sys.argv[3]) * 1024, int(sys.argv[4]) * 1024
rng = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"{i // 10000:02d}", f"{(i // 100) % 100:02d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"IMG_{i:07d}.JPG")
    with open(p, "wb") as f:
        f.write(rng.randbytes(rng.randint(lo, hi)))
    os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i))
EOF
}

# Rewrite 1% of the files with new content (new mtime).
change_one_percent() {
    python3 - "$1" "$2" <<'EOF'
import os, random, sys
n, root = int(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
for i in rng.sample(range(n), max(1, n // 100)):
    p = os.path.join(root, f"{i // 10000:02d}", f"{(i // 100) % 100:02d}", f"IMG_{i:07d}.JPG")
    with open(p, "ab") as f:
        f.write(rng.randbytes(512))
EOF
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "vault $(git rev-parse --short HEAD), $runs rounds per size, medians; files of $min_kib to $max_kib KiB"
printf '%-8s %-10s %9s %10s %14s %14s\n' files step seconds "peak RSS" "content read" "all reads"
for n in "${counts[@]}"; do
    rm -rf "$work/src"
    generate "$n" "$work/src"
    sleep 3 # files younger than 2 s are never trusted by the local index
    : >"$work/results"
    for r in $(seq "$runs"); do
        rm -rf "$work/repo" "$work/cache"
        "$bin" init --kdf-log-n 10 --quiet 2>"$work/init.log" # (shows the recovery key)
        echo "initial $(timed "$bin" --json backup "$work/src")" >>"$work/results"
        echo "nochange $(timed "$bin" --json backup "$work/src")" >>"$work/results"
        # Each round changes another 1% (appends), so every round measures a fresh change set.
        change_one_percent "$n" "$work/src"
        sleep 3
        echo "1%change $(timed "$bin" --json backup "$work/src")" >>"$work/results"
    done
    for step in initial nochange 1%change; do
        secs=$(awk -v s="$step" '$1==s {print $2}' "$work/results" | median)
        kib=$(awk -v s="$step" '$1==s {print $3}' "$work/results" | median)
        read=$(awk -v s="$step" '$1==s {print $4}' "$work/results" | median)
        rchar=$(awk -v s="$step" '$1==s {print $5}' "$work/results" | median)
        printf '%-8s %-10s %9.2f %6.1f MiB %10.1f MiB %10.1f MiB\n' "$n" "$step" "$secs" \
            "$(echo "$kib/1024" | bc -l)" "$(echo "$read/1048576" | bc -l)" "$(echo "$rchar/1048576" | bc -l)"
        echo "$n $step $secs $kib" >>"$work/summary"
    done
done
python3 - "$work/summary" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1])]
t = {(int(n), s): (float(sec), int(kib)) for n, s, sec, kib in rows}
sizes = sorted({k[0] for k in t})
for n in sizes:
    print(f"{n} files: no-change re-backup takes {100 * t[(n, 'nochange')][0] / t[(n, 'initial')][0]:.1f}% of the initial backup time")
if len(sizes) >= 2:
    a, b = sizes[0], sizes[-1]
    peak = lambda n: max(t[(n, s)][1] for s in ("initial", "nochange", "1%change"))
    print(f"peak RSS at {b} files / at {a} files: {peak(b) / peak(a):.2f}x")
EOF
