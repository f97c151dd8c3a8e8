#!/bin/sh
# Regenerates the configuration tables in README.md (between the CONFIG-TABLES markers) from the
# binaries' own tables: `sh scripts/config-doc.sh build/release`. tests/integration/test_docs_config.sh
# fails when an option is missing from the README.
set -eu
build=${1:-build/release}
tables=$(mktemp)
for bin in ingest scorer alerter devbroker redrive; do
    printf '### fraudshield-%s\n\n' "$bin"
    "$build/bin/fraudshield-$bin" --help-markdown
    printf '\n'
done >"$tables"
awk -v tables="$tables" '
    /<!-- CONFIG-TABLES:BEGIN -->/ { print; while ((getline line < tables) > 0) print line; skip = 1; next }
    /<!-- CONFIG-TABLES:END -->/ { skip = 0 }
    !skip { print }
' README.md >README.md.new
mv README.md.new README.md
rm -f "$tables"
