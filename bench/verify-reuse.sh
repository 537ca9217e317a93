#!/usr/bin/env bash
# What verifying a write-only device's chunks before reuse costs (design.md §13.1): a laptop
# backs up the photo corpus into a repository where a phone (write-only profile) uploaded the
# same photos first, against a laptop backing up into an empty repository. Prints, per round,
# time, bytes stored and bytes downloaded for both. Usage: bash bench/verify-reuse.sh [PICTURES]
# (default: the corpus of ../shared/corpus/make-corpus.sh); RUNS=3.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
V=$PWD/target/release/vault
PICS=${1:-${CORPUS_DIR:-$HOME/.cache/vault-bench-corpus}/base/Pictures}
W=$(mktemp -d "${TMPDIR:-/tmp}/vault-verify.XXXXXX")
trap 'rm -rf "$W"' EXIT
export VAULT_PASSWORD=bench
for round in $(seq 1 "${RUNS:-3}"); do
  rm -rf "$W"/r1 "$W"/r2 "$W"/h1 "$W"/h2 "$W"/hp "$W"/p.profile
  HOME=$W/h1 VAULT_REPO=$W/r1 $V init --kdf-log-n 10 >/dev/null 2>&1
  find "$PICS" -type f -exec cat {} + >/dev/null
  s=$(date +%s.%N); HOME=$W/h1 VAULT_REPO=$W/r1 $V --json backup "$PICS" >"$W"/a.json 2>/dev/null; e=$(date +%s.%N)
  a=$(echo "$e-$s" | bc)
  HOME=$W/h2 VAULT_REPO=$W/r2 $V init --kdf-log-n 10 >/dev/null 2>&1
  HOME=$W/h2 VAULT_REPO=$W/r2 $V key add --write-only --label phone --profile-file "$W"/p.profile >/dev/null 2>&1
  HOME=$W/hp VAULT_REPO=$W/r2 VAULT_PROFILE_FILE=$W/p.profile env -u VAULT_PASSWORD $V --quiet backup "$PICS" >/dev/null 2>&1
  before=$(du -sb "$W"/r2/data | cut -f1)
  find "$PICS" -type f -exec cat {} + >/dev/null
  s=$(date +%s.%N); HOME=$W/h2 VAULT_REPO=$W/r2 $V --json backup "$PICS" >"$W"/b.json 2>/dev/null; e=$(date +%s.%N)
  b=$(echo "$e-$s" | bc)
  after=$(du -sb "$W"/r2/data | cut -f1)
  python3 - "$W" "$a" "$b" "$before" "$after" <<'PY'
import json, sys
w, a_t, b_t, before, after = sys.argv[1:]
a = json.load(open(f"{w}/a.json")); b = json.load(open(f"{w}/b.json"))
M = 2**20
print(f"empty repository: {float(a_t):.2f} s, stored {a['bytes_added']/M:.1f} MiB, downloaded "
      f"{a['requests']['bytes_received']/M:.1f} MiB | after the phone: {float(b_t):.2f} s, "
      f"verified {b['blobs_verified']} chunks, stored {b['bytes_added']/M:.1f} MiB, downloaded "
      f"{b['requests']['bytes_received']/M:.1f} MiB, data/ grew {(int(after)-int(before))/M:.1f} MiB")
PY
done
