#!/usr/bin/env bash
# Whole-repository fuzz campaign (tests/repo_fuzz.rs, in release mode): each case copies a real
# repository, attacks it as a stolen write-only profile (hostile snapshots and trees, mutated)
# or as a hostile bucket (changed bytes in any stored object), then runs check --read-data and
# restore of every snapshot. Fails on a panic, a file written outside the restore target, or
# check and restore disagreeing. The test suite runs 60 cases; this runs many more.
#
# Usage: scripts/repo-fuzz.sh [CASES] [FIRST_SEED]   (default 5000 cases from seed 1)
#
# Memory: the run is limited to 4 GiB of address space (ulimit -v), so an unbounded
# allocation a hostile object asks for fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-5000}
seed=${2:-1}
cargo test --release --test repo_fuzz --no-run --quiet
start=$(date +%s)
(
    ulimit -v $((4 * 1024 * 1024))
    VAULT_REPO_FUZZ_CASES=$cases VAULT_REPO_FUZZ_SEED=$seed \
        cargo test --release --quiet --test repo_fuzz -- --nocapture 2>&1 | grep -E "repo fuzz|panicked|seed|test result"
)
echo "repo-fuzz: $cases cases in $(( $(date +%s) - start )) s"
