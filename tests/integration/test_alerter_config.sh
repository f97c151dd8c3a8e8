#!/usr/bin/env bash
# The alerter's settings are checked at start-up, before it connects to anything: each bad value
# stops it at once (exit 1) with a config_invalid line naming the option. No PostgreSQL or broker
# runs here: the old code only noticed after connecting (or never: an unreadable tls-ca-file
# failed each delivery, retried for a day; retry-base-ms above retry-max-delay-ms and a connect
# timeout above the total timeout were accepted; retention-days below the topic's retention had no
# check; webhook-deny-networks did not exist).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_config
nobody=$(fs_free_port) # nothing listens there
export FS_DATABASE_URL="postgresql://postgres@127.0.0.1:$nobody/fraudshield" FS_BROKERS="127.0.0.1:$nobody"
export FS_ADMIN_PORT=-1 FS_STARTUP_TIMEOUT_MS=3000

# expect_invalid OPTION-IN-MESSAGE ENV=VALUE...: exits 1 within 2 s with config_invalid naming it
expect_invalid() {
    local want=$1 rc=0 start=$SECONDS
    shift
    env "$@" timeout 20 "$ALERTER" >"$FS_TEST_DIR/out.log" 2>&1 || rc=$?
    local line
    line=$(grep '"event":"config_invalid"' "$FS_TEST_DIR/out.log" | head -n 1 || true)
    echo "$* -> rc $rc: ${line:0:300}"
    [[ $rc == 1 ]] || fs_fail "$*: exit status $rc, expected 1"
    [[ -n "$line" ]] || fs_fail "$*: no config_invalid line (old code: it tried to connect)"
    grep -qF -- "$want" <<<"$line" || fs_fail "$*: the message does not name $want"
    ((SECONDS - start <= 2)) || fs_fail "$*: took $((SECONDS - start)) s: it did not stop before connecting"
}

expect_invalid tls-ca-file FS_TLS_CA_FILE=/nonexistent/ca.pem
expect_invalid smtp-url FS_SMTP_URL=http://mail.example.com FS_SMTP_TO=a@example.com
expect_invalid smtp-to FS_SMTP_URL=smtp://mail.example.com:587
# a login in the URL: logged with the configuration, and sent without STARTTLS
expect_invalid smtp-user FS_SMTP_URL=smtp://bob:hunter2@mail.example.com:587 FS_SMTP_TO=a@example.com
if grep -q hunter2 "$FS_TEST_DIR/out.log"; then fs_fail "the SMTP password was logged"; fi
expect_invalid smtp-user "FS_SMTP_URL=smtp://bob:hun#ter@2@mail.example.com:587" FS_SMTP_TO=a@example.com
if grep -q 'hun\|ter@2' "$FS_TEST_DIR/out.log"; then fs_fail "the SMTP password (with # and @) was logged"; fi
expect_invalid smtp-min-decision FS_SMTP_MIN_DECISION=allow
# a malformed URL: libpq's message quoted the password, and it was retried as an outage
expect_invalid database-url "FS_DATABASE_URL=postgresql://u:S3cr%ZZet@127.0.0.1:$nobody/x"
if grep -q S3cr "$FS_TEST_DIR/out.log"; then fs_fail "the database password was logged"; fi
expect_invalid retry-base-ms FS_RETRY_BASE_MS=9000000 FS_RETRY_MAX_DELAY_MS=1000
expect_invalid http-connect-timeout-ms FS_HTTP_CONNECT_TIMEOUT_MS=60000 FS_HTTP_TIMEOUT_MS=1000
expect_invalid retention-days FS_RETENTION_DAYS=7 # not above fraud_alerts' default retention
# a bad network is named (the old code had no such option: the variable was ignored)
expect_invalid 'webhook-deny-networks: \"10.0.0.0/33\": the prefix length' "FS_WEBHOOK_DENY_NETWORKS=169.254.0.0/16,10.0.0.0/33"
expect_invalid 'webhook-deny-networks: \"10.1.0.0/8\": host bits set' FS_WEBHOOK_DENY_NETWORKS=10.1.0.0/8
expect_invalid 'webhook-deny-networks: \"169.254.169.254\": no /prefix-length' FS_WEBHOOK_DENY_NETWORKS=169.254.169.254

# A valid configuration with the same options passes the checks (and then waits for PostgreSQL).
printf 'not a real CA, but readable\n' >"$FS_TEST_DIR/ca.pem"
rc=0
env FS_TLS_CA_FILE="$FS_TEST_DIR/ca.pem" FS_SMTP_URL=smtps://mail.example.com:465 FS_SMTP_TO=a@example.com \
    FS_RETRY_BASE_MS=1000 FS_RETRY_MAX_DELAY_MS=1000 FS_HTTP_CONNECT_TIMEOUT_MS=1000 FS_HTTP_TIMEOUT_MS=1000 \
    FS_RETENTION_DAYS=8 FS_WEBHOOK_DENY_NETWORKS="169.254.0.0/16, 127.0.0.0/8,::1/128,::ffff:10.0.0.0/104" \
    timeout 20 "$ALERTER" >"$FS_TEST_DIR/ok.log" 2>&1 || rc=$?
grep -q '"event":"config_invalid"' "$FS_TEST_DIR/ok.log" && fs_fail "a valid configuration was refused"
grep -q '"event":"db_unavailable"' "$FS_TEST_DIR/ok.log" || fs_fail "the valid configuration did not get to PostgreSQL"
fs_assert_eq 1 "$rc" "exit status without PostgreSQL"
echo PASS
