#!/usr/bin/env bash
# The whole test suite, from a fresh clone: format and lint checks, unit, property and CLI
# integration tests. Installs and starts whatever the tests need, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
    echo "cargo is required: install Rust from https://rustup.rs" >&2
    exit 1
fi
if ! command -v mkfifo >/dev/null; then
    echo "coreutils (mkfifo) is required by the tests" >&2
    exit 1
fi

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --all-targets --locked -- -D warnings

step "tests"
cargo test --all-targets --locked
