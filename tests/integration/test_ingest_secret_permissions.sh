#!/usr/bin/env bash
# pii_secret_permissions: ingest warns when the PII secret file is open to more than its process:
# other users' bits, group write, or group read by a group that is not one of the process's. A
# group read by the process's own group is fine: Kubernetes mounts the secret root:<fsGroup> 0440
# (deploy/k8s/ingest.yaml), fsGroup being the pod's group, and the old ingest warned about it at
# every start and SIGHUP. The secret is read before the brokers are waited for: each start here
# ends at startup-timeout-ms (no broker listens), with or without the warning.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup ingest_secret_permissions

secret="$FS_TEST_DIR/pii.secret"
fs_pii_secret "$secret"
chgrp "$(id -g)" "$secret"
broker="127.0.0.1:$(fs_free_port)" # nothing listens there
run=0
# warned MODE [GROUP]: prints the pii_secret_permissions line of a start with the file so (or nothing)
warned() {
    chmod "$1" "$secret"
    [[ -z "${2:-}" ]] || chgrp "$2" "$secret"
    run=$((run + 1))
    "$BUILD/bin/fraudshield-ingest" --pii-secret-file="$secret" --auth=false --brokers="$broker" \
        --startup-timeout-ms=200 --listen-port=0 >"$FS_TEST_DIR/ingest.$run.log" 2>&1 || true
    grep -q '"event":"startup_failed"' "$FS_TEST_DIR/ingest.$run.log" || fs_fail "start $run did not fail on the brokers"
    grep '"event":"pii_secret_permissions"' "$FS_TEST_DIR/ingest.$run.log" || true
}

fs_assert_eq "" "$(warned 600)" "0600: no warning"
fs_assert_eq "" "$(warned 400)" "0400: no warning"
fs_assert_eq "" "$(warned 640)" "0640, the process's group: no warning"
fs_assert_eq "" "$(warned 440)" "0440, the process's group (the Kubernetes mount): no warning"
out=$(warned 660)
grep -q 'writable by its group' <<<"$out" || fs_fail "0660: $out"
grep -q '"mode":"0660"' <<<"$out" || fs_fail "0660: no mode field: $out"
out=$(warned 604)
grep -q 'open to other users' <<<"$out" || fs_fail "0604: $out"
out=$(warned 644)
grep -q 'open to other users' <<<"$out" || fs_fail "0644: $out"
echo "ok: group write and other users' bits warned"

# A group the process is not in (chgrp to it needs root, or membership).
other=$(getent group nogroup | cut -d: -f3 || true)
if [[ -n "$other" ]] && ! id -G | tr ' ' '\n' | grep -qx "$other" && chgrp "$other" "$secret" 2>/dev/null; then
    out=$(warned 640 "$other")
    grep -q "readable by its group, which is not one of this process's" <<<"$out" || fs_fail "0640, group $other: $out"
    echo "ok: group read by another group warned"
else
    echo "skip: cannot give the file a group this process is not in"
fi
echo "PASS test_ingest_secret_permissions"
