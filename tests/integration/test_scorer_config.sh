#!/usr/bin/env bash
# The scorer's settings that are wrong even within their range are refused at start-up, before it
# connects to anything: exit 1 at once with a config_invalid line naming the option and why. No
# PostgreSQL or broker runs here.
#   payment-retention-days 1..29 (scorer/expire.h): labels arrive weeks later, and a backlog older
#   than the retention would be dead-lettered (expired) instead of scored; 0 and 30 pass.
# The code without the check starts with payment-retention-days=29 (then waits for PostgreSQL).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_config
SCORER="$BUILD/bin/fraudshield-scorer"
nobody=$(fs_free_port) # nothing listens there
export FS_DATABASE_URL="postgresql://postgres@127.0.0.1:$nobody/fraudshield" FS_BROKERS="127.0.0.1:$nobody"
export FS_ADMIN_PORT=-1 FS_STARTUP_TIMEOUT_MS=2000

# expect_invalid OPTION-IN-MESSAGE WHY-IN-MESSAGE [ENV=VALUE | --option=value]...: exits 1 within
# 2 s with a config_invalid line saying both
expect_invalid() {
    local want=$1 why=$2 rc=0 start=$SECONDS line a
    local -a envs=() args=()
    shift 2
    for a in "$@"; do
        if [[ $a == --* ]]; then args+=("$a"); else envs+=("$a"); fi
    done
    env "${envs[@]}" timeout 20 "$SCORER" "${args[@]}" >"$FS_TEST_DIR/out.log" 2>&1 || rc=$?
    line=$(grep '"event":"config_invalid"' "$FS_TEST_DIR/out.log" | head -n 1 || true)
    echo "$* -> rc $rc: ${line:0:400}"
    [[ $rc == 1 ]] || fs_fail "$*: exit status $rc, expected 1"
    [[ -n "$line" ]] || fs_fail "$*: no config_invalid line"
    grep -qF -- "$want" <<<"$line" || fs_fail "$*: the message does not name $want"
    grep -qF -- "$why" <<<"$line" || fs_fail "$*: the message does not say $why"
    ! grep -q '"event":"db_unavailable"' "$FS_TEST_DIR/out.log" || fs_fail "$*: it tried PostgreSQL first"
    ((SECONDS - start <= 2)) || fs_fail "$*: took $((SECONDS - start)) s: it did not stop before connecting"
}

for days in 1 7 29; do
    expect_invalid payment-retention-days "at least 30" FS_PAYMENT_RETENTION_DAYS=$days
done
expect_invalid payment-retention-days "at least 30" --payment-retention-days=15 # the command line too
# one group for both consumers: their protocols differ and the broker would refuse one of them
expect_invalid outcomes-group-id "must differ" FS_OUTCOMES_GROUP_ID=fraudshield-scorer
# properties that would break what the processes rest on
expect_invalid delivery.report.only.error "not allowed" KAFKA_DELIVERY_REPORT_ONLY_ERROR=true
expect_invalid transactional.id "not allowed" KAFKA_TRANSACTIONAL_ID=fs-1
# a malformed database-url: libpq's message quoted the password, and it was retried as an outage
expect_invalid database-url "not a valid" "FS_DATABASE_URL=postgresql://u:S3cr%ZZet@127.0.0.1:$nobody/x"
if grep -q S3cr "$FS_TEST_DIR/out.log"; then fs_fail "the database password was logged"; fi

# 0 (the default) and 30 pass the check, and the scorer goes on to PostgreSQL.
for days in 0 30; do
    rc=0
    FS_PAYMENT_RETENTION_DAYS=$days timeout 20 "$SCORER" >"$FS_TEST_DIR/ok.log" 2>&1 || rc=$?
    ! grep -q '"event":"config_invalid"' "$FS_TEST_DIR/ok.log" || fs_fail "payment-retention-days=$days was refused"
    grep -q '"event":"db_unavailable"' "$FS_TEST_DIR/ok.log" || fs_fail "payment-retention-days=$days did not get to PostgreSQL"
    fs_assert_eq 1 "$rc" "payment-retention-days=$days: exit status without PostgreSQL"
done
echo PASS
