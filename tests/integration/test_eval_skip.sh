#!/usr/bin/env bash
# `make eval` / `make bench-e2e` without the handbook's data: a clear message and exit 0 (CI and
# machines without ../shared/datasets), before anything is started.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup eval_skip
for script in scripts/eval.sh bench/e2e_bench.sh; do
    out=$(DATA="$FS_TEST_DIR/absent.csv.gz" EVAL_DIR="$FS_TEST_DIR/eval" BENCH_DIR="$FS_TEST_DIR/bench" \
          bash "$REPO/$script") || fs_fail "$script exited with $?"
    [[ $out == *"absent.csv.gz not found"*"skipped"* ]] || fs_fail "$script: $out"
    [[ ! -e "$FS_TEST_DIR/eval" && ! -e "$FS_TEST_DIR/bench" ]] || fs_fail "$script created its work dir"
done
echo ok
