#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 60) from the committed corpus
# (fuzz/corpus/<target>); new inputs go to a scratch directory, not the repo.
# Exits 1 when a target does not build or finds a failing input (left in
# fuzz/artifacts/), 0 with a "skipped" message where cargo-fuzz cannot be
# installed.
#
#   fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked >/dev/null 2>&1 || true
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: skipped (cargo-fuzz is not installed and could not be installed)"
    exit 0
fi
# cargo-fuzz passes nightly-only flags; RUSTC_BOOTSTRAP lets the stable
# toolchain take them.
export RUSTC_BOOTSTRAP=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# A target that does not compile is a broken target, not a reason to skip:
# the fuzz crate uses the hub's decoders directly, so a changed API shows here.
if ! cargo fuzz build -O >"$scratch/build.log" 2>&1; then
    echo "fuzz: the fuzz targets do not build:"
    tail -n 40 "$scratch/build.log"
    exit 1
fi
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target"
    status=0
    cargo fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1 || status=$?
    runs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$scratch/$target.log")
    found=$(awk '/^stat::new_units_added/ {print $2}' "$scratch/$target.log")
    echo "fuzz: $target: ${runs:-?} runs in ${seconds} s, ${found:-?} new inputs, exit ${status}"
    if [ "$status" -ne 0 ] || compgen -G "artifacts/$target/*" >/dev/null; then
        echo "fuzz: $target failed; its log ends:"
        tail -n 40 "$scratch/$target.log"
        ls -l "artifacts/$target" 2>/dev/null || true
        exit 1
    fi
done
