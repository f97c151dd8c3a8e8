#!/usr/bin/env bash
# Alerter TLS: an HTTPS receiver with a self-signed certificate (made here with openssl req -x509).
#   - subscription "withca" names the certificate as its CA file: delivered, signed
#   - subscription "noca" does not: the certificate is rejected, the receiver never sees a request,
#     the delivery waits for a retry with the verification error in the delivery log
#   - restarted with the certificate as the global tls-ca-file, the pending "noca" deliveries go out
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_tls
fs_pg_start
fs_broker_start 3
run=$((RANDOM + 1000))
n=3

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=fraudshield-test-receiver" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$FS_TEST_DIR/key.pem" -out "$FS_TEST_DIR/cert.pem" 2>/dev/null
al_receiver tls ok --tls-cert "$FS_TEST_DIR/cert.pem" --tls-key "$FS_TEST_DIR/key.pem"
url="https://127.0.0.1:${AL_PORT[tls]}"
al_cli subscriptions add --name withca --url "$url/withca" --secret "$AL_SECRET" --ca-file "$FS_TEST_DIR/cert.pem" >/dev/null
al_cli subscriptions add --name noca --url "$url/noca" --secret "$AL_SECRET" >/dev/null
# a path that cannot be read is refused up front
if al_cli subscriptions add --name badca --url "$url/x" --ca-file /nonexistent.pem 2>/dev/null; then
    fs_fail "a subscription with an unreadable CA file was accepted"
fi

# Retries 10x compressed (3 s, 6 s, ...): noca stays pending for the whole first phase.
al_start alerter1 FS_TIME_COMPRESSION=10
al_wait_assigned alerter1
al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:

fs_wait_for 30 "(( \$(al_requests tls 'r[\"path\"] == \"/withca\"') >= $n ))"
fs_wait_for 30 "(( \$(al_sql_int \"SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'noca' AND d.attempts >= 1 AND d.state = 'pending'\") == $n ))"
fs_assert_eq "$n" "$(al_requests tls 'r["path"] == "/withca" and r["sig_ok"] and r["status"] == 200')" "signed deliveries over verified TLS"
fs_assert_eq 0 "$(al_requests tls 'r["path"] == "/noca"')" "requests that got past the rejected certificate"
err=$(fs_psql "SELECT DISTINCT d.last_error FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'noca'")
echo "noca last_error: $err"
grep -qi 'certificate' <<<"$err" || fs_fail "the delivery log does not name the certificate problem"
# Neither delivered nor given up: a retry (every ~3 s here) may hold one in_flight at this moment.
fs_assert_eq 0 "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'noca' AND d.state NOT IN ('pending', 'in_flight')")" "noca deliveries delivered or failed"

# The operator trusts the certificate globally: the retries go through.
fs_kill alerter1 TERM
fs_wait_exit alerter1 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "alerter1 exit status"
al_start alerter2 FS_TIME_COMPRESSION=10 FS_TLS_CA_FILE="$FS_TEST_DIR/cert.pem"
fs_wait_for 60 "(( \$(al_requests tls 'r[\"path\"] == \"/noca\"') >= $n ))"
fs_wait_for 10 "(( \$(al_sql_int \"SELECT count(*) FROM deliveries WHERE state = 'delivered'\") == $((2 * n)) ))"
fs_assert_eq "$n" "$(al_requests tls 'r["path"] == "/noca" and r["sig_ok"] and r["status"] == 200')" "noca deliveries after the CA was configured"
fs_kill alerter2 TERM
fs_wait_exit alerter2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "alerter2 exit status"
echo "alerter tls ok"
