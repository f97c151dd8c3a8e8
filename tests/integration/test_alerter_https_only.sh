#!/usr/bin/env bash
# Subscriber URLs must be https:// unless allow-insecure-http is set (README and docs/alerter.md
# promise signed HTTPS webhooks):
#   - the CLI refuses an http:// URL, naming the option; accepts it with the option
#   - an http:// subscription made in SQL gets nothing while the option is off (its delivery waits,
#     a subscription_insecure error line says why), and is delivered once an alerter runs with it
#     on, which logs insecure_http_allowed at start
#   - an smtp:// server that offers no STARTTLS gets no email while the option is off
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_https_only
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
al_receiver plain ok
url="http://127.0.0.1:${AL_PORT[plain]}/hook"

# 1. The CLI.
if FS_ALLOW_INSECURE_HTTP=false al_cli subscriptions add --name plain --url "$url" --secret "$AL_SECRET" \
    >/dev/null 2>"$FS_TEST_DIR/add.err"; then
    fs_fail "an http:// subscription was accepted without allow-insecure-http" # the old code
fi
cat "$FS_TEST_DIR/add.err"
grep -q 'allow-insecure-http' "$FS_TEST_DIR/add.err" || fs_fail "the refusal does not name allow-insecure-http"
FS_ALLOW_INSECURE_HTTP=false al_cli subscriptions add --name secure --url "https://127.0.0.1:1/x" \
    --secret "$AL_SECRET" >/dev/null || fs_fail "an https:// subscription was refused"
FS_ALLOW_INSECURE_HTTP=false al_cli subscriptions disable secure >/dev/null
# weak secrets are refused: a run of one character, spaces, too few different characters
for weak in aaaaaaaaaaaaaaaa "                " abababababababab "short-secret"; do
    if al_cli subscriptions add --name weak --url "https://127.0.0.1:1/x" --secret "$weak" \
        >/dev/null 2>"$FS_TEST_DIR/weak.err"; then
        fs_fail "the secret '$weak' was accepted"
    fi
    grep -q -- '--secret: at least' "$FS_TEST_DIR/weak.err" || fs_fail "weak secret: $(cat "$FS_TEST_DIR/weak.err")"
done
# a password with an unencoded '/' ends the authority early (curl would call "user" on port "pa")
if al_cli subscriptions add --name slash --url "https://user:pa/ss@127.0.0.1:1/x" --secret "$AL_SECRET" \
    >/dev/null 2>"$FS_TEST_DIR/slash.err"; then
    fs_fail "a url whose authority is not host[:port] was accepted"
fi
grep -q -- '--url: .*percent-encode' "$FS_TEST_DIR/slash.err" || fs_fail "malformed url: $(cat "$FS_TEST_DIR/slash.err")"
FS_ALLOW_INSECURE_HTTP=false al_cli subscriptions add --name cli-plain --url "$url" --secret "$AL_SECRET" \
    --allow-insecure-http >/dev/null ||
    fs_fail "an http:// subscription was refused with --allow-insecure-http"
al_cli subscriptions disable cli-plain >/dev/null

# 2. Made in SQL (bypassing the CLI), with the alerter's default: not delivered to.
fs_psql "INSERT INTO subscriptions (name, url, secret) VALUES ('plain', '$url', '$AL_SECRET')"
al_start alerter FS_ALLOW_INSECURE_HTTP=false
al_wait_assigned alerter
al_gen_alerts "$run" 1 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 20 "(( \$(al_sql_int 'SELECT count(*) FROM deliveries') >= 1 ))"
fs_wait_for 20 grep -q '"event":"subscription_insecure"' "$FS_TEST_DIR/alerter.log"
sleep 2
fs_assert_eq 0 "$(al_requests plain True)" "requests to the http:// subscriber"
fs_assert_eq pending "$(fs_psql 'SELECT state FROM deliveries')" "its delivery waits"
grep -q '"event":"insecure_http_allowed"' "$FS_TEST_DIR/alerter.log" && fs_fail "insecure_http_allowed logged while off"
fs_kill alerter TERM
fs_wait_exit alerter 30

# 3. With the option on: a loud warning, and the waiting delivery goes out.
al_start alerter2 FS_ALLOW_INSECURE_HTTP=true
fs_wait_for 30 "(( \$(al_requests plain True) >= 1 ))"
grep '"event":"insecure_http_allowed"' "$FS_TEST_DIR/alerter2.log" | grep -q '"level":"warn"' ||
    fs_fail "allow-insecure-http is not logged as a warning"
fs_kill alerter2 TERM
fs_wait_exit alerter2 30

# 4. Email the same way: an smtp:// server without STARTTLS gets nothing while the option is off
# (the old code sent the alert in clear text when no login was configured).
smtp=$(fs_free_port)
fs_bg smtp python3 "$REPO/tests/integration/alerter_smtp_sink.py" --port "$smtp" --out "$FS_TEST_DIR/mail.jsonl"
fs_wait_for 20 test -s "$FS_TEST_DIR/mail.jsonl.ready"
al_start alerter3 FS_ALLOW_INSECURE_HTTP=false FS_SMTP_URL="smtp://127.0.0.1:$smtp" \
    FS_SMTP_TO=soc@example.com FS_SMTP_FROM=fraudshield@example.com FS_SMTP_MIN_DECISION=review
al_wait_assigned alerter3
al_gen_alerts "$((run + 1))" 1 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
email_attempts="SELECT count(*) FROM delivery_attempts a JOIN deliveries d USING (delivery_id)
                JOIN subscriptions s USING (subscription_id) WHERE s.name = 'email'"
fs_wait_for 30 "(( \$(al_sql_int \"$email_attempts\") >= 1 ))"
fs_assert_eq 0 "$(wc -l <"$FS_TEST_DIR/mail.jsonl" 2>/dev/null || echo 0)" "emails sent in clear text"
fs_psql "SELECT d.state, d.last_error FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'email'"
fs_kill alerter3 TERM
fs_wait_exit alerter3 30
echo PASS
