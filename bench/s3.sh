#!/usr/bin/env bash
# Backup throughput into S3 (SeaweedFS on 127.0.0.1, started here) against a local folder
# repository, on the same photo tree: RUNS interleaved rounds (default 3), each into an empty
# repository, unlocked with an identity file (no KDF in the timings). Prints medians, the
# S3/local throughput ratio and the CPU time the server itself used (on a small machine the
# server competes with vault for the same cores). Each round also uploads the local round's pack
# files with curl, 4 at a time as vault does: what the server takes in when the client does
# next to nothing, the ceiling of any S3 client against this server on this machine.
#
# Then restores (RESTORE=0 skips them): the last round's S3 repository restored by vault, and the
# same tree backed up by restic into the same server and restored by restic, RUNS interleaved
# rounds, each into an empty folder with a fresh local cache: wall time and peak RSS; and one
# round each through bench/countproxy.py for the bytes the server sent and the GETs it answered.
#
# Usage: bench/s3.sh [PICTURES]   (default: the corpus of ../shared/corpus/make-corpus.sh)
# Needs SeaweedFS in .venv (scripts/test-all.sh installs it there).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh
pics=${1:-${CORPUS_DIR:-$HOME/.cache/vault-bench-corpus}/base/Pictures}
runs=${RUNS:-3}
weed=$root/.venv/bin/weed
[ -d "$pics" ] || { echo "no photo tree at $pics" >&2; exit 1; }
[ -x "$weed" ] || { echo "no SeaweedFS at $weed: run scripts/test-all.sh once" >&2; exit 1; }
cargo build --release --quiet
vault=$root/target/release/vault
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-s3bench.XXXXXX")
export AWS_ACCESS_KEY_ID=vaultaccess AWS_SECRET_ACCESS_KEY=vaultsecret0123456789 AWS_REGION=us-east-1
cat >"$work/s3.json" <<JSON
{"identities":[{"name":"vault","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
mkdir -p "$work/s3data"
(cd "$work" && exec "$weed" mini -dir="$work/s3data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.volumeSizeLimitMB=64 -s3.config="$work/s3.json" -webdav=false -admin.ui=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -s3.port=33333 -master.port=34333 -volume.port=33080 -filer.port=33888 >"$work/weed.log" 2>&1) &
stop_server() {
    # SeaweedFS can take seconds to stop, and one left running would answer the next run's requests.
    pkill -f "weed mini -dir=$work" 2>/dev/null || true
    for _ in $(seq 1 30); do pgrep -f "weed mini -dir=$work" >/dev/null || break; sleep 0.5; done
    pkill -9 -f "weed mini -dir=$work" 2>/dev/null || true
    rm -rf "$work"
}
trap stop_server EXIT
for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:33333/ || true)" = 403 ] && break
    sleep 0.5
done
# A server left over from an earlier run would answer on the port while this one failed to start.
pgrep -f "weed mini -dir=$work" >/dev/null || { echo "SeaweedFS did not start:" >&2; tail -3 "$work/weed.log" >&2; exit 1; }
export AWS_ENDPOINT_URL=http://127.0.0.1:33333 VAULT_PASSWORD=bench
echo "$(machine)"
echo "tree: $pics ($(du -sh "$pics" | cut -f1)); $runs rounds"
: >"$work/results"
for round in $(seq 1 "$runs"); do
    for kind in local s3; do
        if [ $kind = local ]; then repo=$work/repo-$round; else repo=s3://bench-$round/r; fi
        # The recovery key goes to the file; the notice that shows it is not wanted here.
        "$vault" --repo "$repo" init --quiet --recovery-key-file "$work/id-$kind-$round" >/dev/null 2>"$work/init.log" ||
            { cat "$work/init.log" >&2; exit 1; }
        sync
        server=$(pgrep -f "weed mini -dir=$work" | head -1)
        ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
        before=$(ticks)
        /usr/bin/time -f "%e %M" -o "$work/time" env -u VAULT_PASSWORD VAULT_CACHE_DIR="$work/cache-$kind-$round" \
            "$vault" --repo "$repo" --identity "$work/id-$kind-$round" --quiet backup "$pics" ||
            { echo "$kind backup failed" >&2; exit 1; }
        echo "$kind $(cat "$work/time") $(($(ticks) - before))" >>"$work/results"
    done
    bucket=ceiling-$round
    sign=(--aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
    curl -sf -o /dev/null "${sign[@]}" -X PUT "$AWS_ENDPOINT_URL/$bucket"
    before=$(ticks)
    for f in "$work/repo-$round"/data/*/*; do
        printf 'upload-file = "%s"\nurl = "%s/%s/%s"\noutput = "/dev/null"\n' \
            "$f" "$AWS_ENDPOINT_URL" "$bucket" "$(basename "$f")"
    done >"$work/curl.cfg"
    /usr/bin/time -f "%e %M" -o "$work/time" curl -sSf --no-progress-meter --parallel --parallel-max 4 \
        "${sign[@]}" -K "$work/curl.cfg" 2>"$work/curl.err" || { echo "curl upload failed:" >&2; tail -3 "$work/curl.err" >&2; exit 1; }
    echo "curl $(cat "$work/time") $(($(ticks) - before)) $(du -sb "$work/repo-$round/data" | cut -f1)" >>"$work/results"
    rm -rf "$work/repo-$round"
done
if [ "${RESTORE:-1}" = 1 ]; then
    command -v restic >/dev/null || { echo "no restic: apt-get install restic" >&2; exit 1; }
    export RESTIC_PASSWORD=bench
    restic -r "s3:$AWS_ENDPOINT_URL/restic-bench" init --quiet >/dev/null
    restic -r "s3:$AWS_ENDPOINT_URL/restic-bench" backup --quiet --cache-dir "$work/restic-cache" "$pics" >/dev/null
    last=$runs
    for round in $(seq 1 "$runs"); do
        for tool in vault restic; do
            out=$work/out-$tool; rm -rf "$out" "$work/cache-r" "$work/restic-cache-r"; sync
            [ -w /proc/sys/vm/drop_caches ] && echo 1 >/proc/sys/vm/drop_caches
            if [ $tool = vault ]; then
                cmd=(env -u VAULT_PASSWORD VAULT_CACHE_DIR="$work/cache-r" "$vault" --repo "s3://bench-$last/r"
                     --identity "$work/id-s3-$last" --quiet restore --target "$out")
            else
                cmd=(restic -r "s3:$AWS_ENDPOINT_URL/restic-bench" --cache-dir "$work/restic-cache-r" --quiet
                     restore latest --target "$out")
            fi
            /usr/bin/time -f "%e %M" -o "$work/time" "${cmd[@]}" >/dev/null || { echo "$tool restore failed" >&2; exit 1; }
            echo "restore-$tool $(cat "$work/time") 0" >>"$work/results"
        done
    done
    # Bytes and requests, through the counting proxy (once each: they do not vary).
    for tool in vault restic; do
        out=$work/out-$tool; rm -rf "$out" "$work/cache-r" "$work/restic-cache-r"
        python3 bench/countproxy.py 33444 33333 "$work/counts-$tool" & px=$!
        for _ in $(seq 1 50); do [ -s "$work/counts-$tool" ] && break; sleep 0.1; done
        if [ $tool = vault ]; then
            env -u VAULT_PASSWORD VAULT_CACHE_DIR="$work/cache-r" AWS_ENDPOINT_URL=http://127.0.0.1:33444 \
                "$vault" --repo "s3://bench-$last/r" --identity "$work/id-s3-$last" --quiet restore --target "$out" >/dev/null
        else
            restic -r "s3:http://127.0.0.1:33444/restic-bench" --cache-dir "$work/restic-cache-r" --quiet \
                restore latest --target "$out" >/dev/null
        fi
        kill -TERM $px; wait $px || true
        echo "bytes-$tool $(cat "$work/counts-$tool")" >>"$work/results"
    done
fi
python3 - "$work/results" "$(du -sb "$pics" | cut -f1)" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size = int(sys.argv[2])
med = {k: (statistics.median(float(r[1]) for r in rows if r[0] == k), statistics.median(float(r[2]) for r in rows if r[0] == k)) for k in ("local", "s3")}
for k, (s, kib) in med.items():
    print(f"{k:<6} {s:6.2f} s  {size / 1e6 / s:6.0f} MB/s  peak RSS {kib / 1024:.0f} MiB")
server = {k: statistics.median(int(r[3]) / 100 for r in rows if r[0] == k) for k in ("s3", "curl")}
print(f"SeaweedFS CPU time during an S3 backup: {server['s3']:.1f} s (it shares the machine's cores)")
curl = statistics.median(float(r[1]) for r in rows if r[0] == "curl")
packs = statistics.median(int(r[4]) for r in rows if r[0] == "curl")
print(f"curl uploading the local repository's packs ({packs / 1e6:.0f} MB, 4 at a time): {curl:.2f} s,"
      f" {packs / 1e6 / curl:.0f} MB/s, server CPU {server['curl']:.1f} s")
print(f"S3 throughput / local: {med['local'][0] / med['s3'][0]:.2f}")
print(f"server ceiling (curl) / local: {med['local'][0] / curl:.2f}")
print(f"vault's S3 backup / server ceiling: {curl / med['s3'][0]:.2f}")
rest = {k: [r for r in rows if r[0] == "restore-" + k] for k in ("vault", "restic")}
if rest["vault"]:
    counts = {r[0][6:]: (int(r[1]), int(r[2])) for r in rows if r[0].startswith("bytes-")}
    print(f"restore from S3 of the tree ({size / 1e6:.0f} MB), medians of {len(rest['vault'])} rounds:")
    for k, rs in rest.items():
        t = statistics.median(float(r[1]) for r in rs)
        m = statistics.median(float(r[2]) for r in rs) / 1024
        b, g = counts.get(k, (0, 0))
        print(f"  {k:<7} {t:6.2f} s  {size / 1e6 / t:5.0f} MB/s  peak RSS {m:4.0f} MiB  downloaded {b / 1e6:7.1f} MB ({b / size:.3f}x)  GETs {g}")
    tv = statistics.median(float(r[1]) for r in rest["vault"])
    tr = statistics.median(float(r[1]) for r in rest["restic"])
    print(f"  vault time / restic: {tv / tr:.2f}")
PY
