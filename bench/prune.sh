#!/usr/bin/env bash
# forget + prune against restic and borg (and rustic when installed): the shared photo corpus
# backed up 30 times, one snapshot a day, each day adding 16 MiB of new incompressible "photos"
# and deleting those of three days before (and the corpus's incremental change set on day 15).
# Then `--keep-daily 7 --keep-weekly 4` and the peer's way to free the space, timed from a copy
# of the same repositories RUNS times (default 3): wall time, peak RSS, bytes read and written
# (filesystem block I/O, cache dropped first when run as root), repository size before and
# after, and for vault the requests it made (what S3 would bill; vault counts them on folders
# too).
#
# vault runs `forget --prune --grace 0` then `prune --grace 0`: its lock-free prune condemns
# first and deletes in a later run (design.md §13.2); with the default 24 h grace the second run
# is the next day's. Both runs are in the figures. restic: `forget --prune` (max-unused 5%,
# as vault). borg: `prune` then `compact`.
#
# Usage: bench/prune.sh [PICTURES]   (default: $CORPUS_DIR/base/Pictures, see compare.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
corpus_dir=${CORPUS_DIR:-$HOME/.cache/vault-bench-corpus}
pics=${1:-$corpus_dir/base/Pictures}
runs=${RUNS:-3}
shared=$root/../shared/corpus/make-corpus.sh
[ -d "$pics" ] || { echo "no photo tree at $pics: build it with $shared" >&2; exit 1; }
have() { command -v "$1" >/dev/null; }
tools=(vault)
for t in restic borg rustic; do if have "$t"; then tools+=("$t"); else echo "skipping $t: not installed" >&2; fi; done

cargo build --release --quiet
vault_bin=$root/target/release/vault
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-prune.XXXXXX")
trap 'rm -rf "$work"' EXIT
export VAULT_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench RUSTIC_PASSWORD=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR=$work/borg-home RESTIC_CACHE_DIR=$work/restic-cache VAULT_CACHE_DIR=$work/vault-cache
results=$work/results.txt
: >"$results"
start=1790812800 # 2026-10-01 00:00 UTC

q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@" 2>&1 | tail -5 >&2; exit 1; }; }
for t in "${tools[@]}"; do
    r=$work/repo-$t
    case $t in
    vault) q "$vault_bin" --repo "$r" init --kdf-log-n 14 ;;
    restic) q restic -r "$r" init --repository-version 2 ;;
    rustic) q rustic -r "$r" init ;;
    borg) q borg init -e repokey-blake2 "$r" ;;
    esac
done
cp -al "$pics" "$work/pics"
mkdir -p "$work/pics/Daily"
echo "tree: $pics ($(du -sh "$pics" | cut -f1)); 30 daily snapshots; tools: ${tools[*]}" >&2
for day in $(seq 0 29); do
    head -c $((16 << 20)) /dev/urandom >"$work/pics/Daily/day$day.bin"
    rm -f "$work/pics/Daily/day$((day - 3)).bin"
    if [ "$day" = 15 ]; then bash "$shared" incremental "$work/pics" >/dev/null 2>&1; fi
    ts=$((start + day * 86400 + 3600))
    human=$(date -u -d "@$ts" '+%Y-%m-%d %H:%M:%S')
    for t in "${tools[@]}"; do
        r=$work/repo-$t
        case $t in
        vault) q "$vault_bin" --repo "$r" backup --time "$ts" "$work/pics" ;;
        restic) q restic -r "$r" backup --time "$human" "$work/pics" ;;
        rustic) q rustic -r "$r" backup --time "$human" "$work/pics" ;;
        borg) q borg create -C auto,zstd,3 --timestamp "${human/ /T}" "$r::day$day" "$work/pics" ;;
        esac
    done
done
rm -rf "$work/pics"
for t in "${tools[@]}"; do mv "$work/repo-$t" "$work/pristine-$t"; done
# Each run starts from the same state: the repositories and every tool's local cache (borg also
# refuses a repository older than what its security folder saw).
caches=("$BORG_BASE_DIR" "$RESTIC_CACHE_DIR" "$VAULT_CACHE_DIR")
for c in "${caches[@]}"; do mkdir -p "$c" && cp -a "$c" "$c.pristine"; done

can_drop=no
[ -w /proc/sys/vm/drop_caches ] && can_drop=yes
for run in $(seq 1 "$runs"); do
    for c in "${caches[@]}"; do rm -rf "$c" && cp -a "$c.pristine" "$c"; done
    for t in "${tools[@]}"; do
        r=$work/repo-$t
        rm -rf "$r"
        cp -a "$work/pristine-$t" "$r"
        before=$(du -sb "$r" | cut -f1)
        sync
        [ "$can_drop" = yes ] && echo 3 >/proc/sys/vm/drop_caches
        case $t in
        vault) cmd=(sh -c "'$vault_bin' --repo '$r' --json forget --keep-daily 7 --keep-weekly 4 --prune --grace 0 >'$work/v1.json' && '$vault_bin' --repo '$r' --json prune --grace 0 >'$work/v2.json'") ;;
        restic) cmd=(restic -r "$r" forget --keep-daily 7 --keep-weekly 4 --prune) ;;
        rustic) cmd=(rustic -r "$r" forget --keep-daily 7 --keep-weekly 4 --prune) ;;
        borg) cmd=(sh -c "borg prune --keep-daily 7 --keep-weekly 4 '$r' && borg compact '$r'") ;;
        esac
        /usr/bin/time -f "%e %M %I %O" -o "$work/time" "${cmd[@]}" >"$work/out.log" 2>&1 ||
            { echo "$t failed:" >&2; tail -5 "$work/out.log" >&2; exit 1; }
        read -r secs kib rd wr <"$work/time"
        after=$(du -sb "$r" | cut -f1)
        reqs=-
        if [ "$t" = vault ]; then
            reqs=$(python3 -c "
import json,sys
a=json.load(open('$work/v1.json'))['prune']['requests']; b=json.load(open('$work/v2.json'))['requests']
print('/'.join(str(a[k]+b[k]) for k in ['put','get','list','delete']))")
            # Restores the kept snapshots' newest byte-exact? check proves every pack is sound.
            q "$vault_bin" --repo "$r" check
        fi
        echo "$t $secs $kib $rd $wr $before $after $reqs" >>"$results"
    done
    echo "run $run done" >&2
done

sed 's/^/raw: /' "$results"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); cache dropped before each: $can_drop"
python3 - "$results" "${tools[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
tools = sys.argv[2:]
def med(t, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == t)
base = med("vault", 1)
print(f"| tool | forget+prune wall (median) | vs vault | peak RSS | read | written | repo before | after | requests put/get/list/delete |")
print("|---|---|---|---|---|---|---|---|---|")
for t in tools:
    reqs = [r[7] for r in rows if r[0] == t][0]
    print(f"| {t} | {med(t,1):.2f} s | {med(t,1)/base:.2f}x | {med(t,2)/1024:.0f} MiB | "
          f"{med(t,3)*512/2**20:.0f} MiB | {med(t,4)*512/2**20:.0f} MiB | "
          f"{med(t,5)/2**20:.0f} MiB | {med(t,6)/2**20:.0f} MiB | {reqs} |")
PY
