#!/usr/bin/env bash
# Opt-in compatibility run against Garage (a second S3 implementation): builds Garage with cargo
# (about 20 minutes on 2 cores, kept under ~/.cache/vault-garage), starts a single-node server on
# 127.0.0.1, and runs the S3 tests against it. Garage has no Object Lock and ignores
# If-None-Match; the tests account for both.
set -euo pipefail
cd "$(dirname "$0")/.."
GARAGE_VERSION=2.5.0
prefix=${VAULT_GARAGE_ROOT:-$HOME/.cache/vault-garage}
garage=$prefix/bin/garage
if [ ! -x "$garage" ] || ! "$garage" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    echo "building garage $GARAGE_VERSION (slow, once)"
    cargo install garage --version "$GARAGE_VERSION" --locked --root "$prefix"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/vault-garage.XXXXXX")
key_id=GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$work/garage.toml" <<TOML
metadata_dir = "$work/meta"
data_dir = "$work/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:23901"
rpc_public_addr = "127.0.0.1:23901"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:23900"
root_domain = ".s3.garage.localhost"
TOML
GARAGE_DEFAULT_ACCESS_KEY=$key_id GARAGE_DEFAULT_SECRET_KEY=$secret GARAGE_DEFAULT_BUCKET=vault-compat \
    "$garage" -c "$work/garage.toml" server --single-node --default-bucket >"$work/garage.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 60); do
    code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:23900/ || true)
    [ "$code" != 000 ] && break
    sleep 0.5
done
echo "garage answered HTTP $code"
export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=garage
export VAULT_TEST_S3_ENDPOINT=http://127.0.0.1:23900 VAULT_TEST_S3_REQUIRED=1
export VAULT_TEST_S3_BUCKET=vault-compat VAULT_TEST_S3_NO_OBJECT_LOCK=1 VAULT_TEST_S3_NO_CREATE_ONLY=1
cargo test --locked --test s3 --test backend_conformance -- --nocapture --test-threads 2
