#!/usr/bin/env bash
# Every option in every process's config table is documented (pgbouncer's habit: the docs cannot
# silently fall behind the code), and --help exits 0: the services and fraudshield-redrive in
# README.md (scripts/config-doc.sh), the detection tools in docs/detection.md section 8.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
missing=0
for bin in ingest scorer alerter devbroker redrive train eval replay; do
    case $bin in
    train | eval | replay) doc=docs/detection.md ;;
    *) doc=README.md ;;
    esac
    help=$("$BUILD/bin/fraudshield-$bin" --help) || fs_fail "fraudshield-$bin --help failed"
    for opt in $(grep -oE '^  --[a-z0-9-]+' <<<"$help" | sed 's/^  //'); do
        if ! grep -qF -- "| \`$opt\` |" "$REPO/$doc"; then # a row of its table, not a mention
            echo "fraudshield-$bin: $opt has no row in the options table of $doc (sh scripts/config-doc.sh)"
            missing=$((missing + 1))
        fi
    done
done
fs_assert_eq 0 "$missing" "undocumented options"
