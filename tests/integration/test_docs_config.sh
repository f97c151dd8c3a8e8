#!/usr/bin/env bash
# Every option in every process's config table is documented in README.md (pgbouncer's habit: the
# docs cannot silently fall behind the code), and --help exits 0.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
missing=0
for bin in ingest scorer alerter devbroker redrive; do
    help=$("$BUILD/bin/fraudshield-$bin" --help) || fs_fail "fraudshield-$bin --help failed"
    for opt in $(grep -oE '^  --[a-z0-9-]+' <<<"$help" | sed 's/^  //'); do
        if ! grep -qF -- "$opt" "$REPO/README.md"; then
            echo "fraudshield-$bin: $opt is not documented in README.md"
            missing=$((missing + 1))
        fi
    done
done
fs_assert_eq 0 "$missing" "undocumented options"
