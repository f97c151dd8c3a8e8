#!/bin/sh
# Regenerates the configuration tables from the binaries' own tables (between the CONFIG-TABLES
# markers): the services and fraudshield-redrive in README.md, the detection tools in
# docs/detection.md section 8. `sh scripts/config-doc.sh build/release`.
# tests/integration/test_docs_config.sh fails when an option has no row in its table.
set -eu
build=${1:-build/release}

# regen FILE BIN...: FILE's tables replaced by those of the BINs, in that order.
regen() {
    file=$1
    shift
    tables=$(mktemp)
    for bin in "$@"; do
        printf '### fraudshield-%s\n\n' "$bin"
        "$build/bin/fraudshield-$bin" --help-markdown
        printf '\n'
    done >"$tables"
    awk -v tables="$tables" '
        /<!-- CONFIG-TABLES:BEGIN -->/ { print; while ((getline line < tables) > 0) print line; skip = 1; next }
        /<!-- CONFIG-TABLES:END -->/ { skip = 0 }
        !skip { print }
    ' "$file" >"$file.new"
    mv "$file.new" "$file"
    rm -f "$tables"
}
regen README.md ingest scorer alerter devbroker redrive
regen docs/detection.md replay train eval
