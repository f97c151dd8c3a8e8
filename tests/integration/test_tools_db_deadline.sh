#!/usr/bin/env bash
# The tools that read PostgreSQL (fraudshield-train, fraudshield-eval) do not wait for ever on a
# database that does not answer: their rows query has a deadline, db-timeout-ms (2 s here). They
# exit 1 with an error naming it (the old code: still waiting when `timeout` killed it, exit 124).
#   - a lock held for ever (a session keeps decisions locked, as a migration rewriting the table
#     does, and never commits): PostgreSQL cancels the query at the deadline (statement_timeout),
#     so the abandoned query does not linger on the server either
#   - a server that stops answering (a TCP proxy in front of it passes the rows query on and holds
#     back every reply after it: the connection stays open, nothing comes back): the client gives up 2 s after the deadline (db_query_rows)
#   - the alerter's operator commands (subscriptions list behind a lock on subscriptions): each
#     statement within the alerter's db-timeout-ms
# fraudshield-redrive and fraudshield-replay do not talk to PostgreSQL.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup tools_db_deadline
fs_pg_start
"$BUILD/bin/fraudshield-alerter" subscriptions list >/dev/null # the schema
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# run_tool NAME URL ERROR ARGS...: the tool with FS_DB_TIMEOUT_MS=2000 must exit 1 within 2..12 s
# with ERROR
run_tool() {
    local name=$1 url=$2 want=$3 rc=0 t0 ms out
    shift 3
    t0=$(now_ms)
    out=$(FS_DATABASE_URL=$url FS_DB_TIMEOUT_MS=2000 timeout 30 "$BUILD/bin/fraudshield-$name" "$@" 2>&1) || rc=$?
    ms=$(($(now_ms) - t0))
    echo "$out" | tail -2
    fs_assert_eq 1 "$rc" "fraudshield-$name exit status"
    ((ms >= 2000 && ms <= 12000)) || fs_fail "fraudshield-$name exited after $ms ms, expected 2000..12000"
    grep -qF "$want" <<<"$out" || fs_fail "fraudshield-$name: no error '$want'"
    echo "ok: fraudshield-$name failed after $ms ms"
}
train=(--period 2018-07-25:2018-07-31 --output "$FS_TEST_DIR/model.json")
ev=(--train 2018-07-25:2018-07-31 --test 2018-08-08:2018-08-14 --rules-file "$REPO/schemas/rules/default.json")

echo "--- a lock held for ever"
fs_bg locker psql -X -q -d "$FS_DATABASE_URL?application_name=locker" \
    -c "BEGIN; LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)"
fs_wait_for 10 "[[ \$(fs_psql \"SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'locker' AND l.mode = 'AccessExclusiveLock' AND l.granted\") == 1 ]]"
cancelled='the rows query ran longer than db-timeout-ms (2000 ms) and PostgreSQL cancelled it'
run_tool train "$FS_DATABASE_URL" "$cancelled" "${train[@]}"
run_tool eval "$FS_DATABASE_URL" "$cancelled" "${ev[@]}"
# nothing left running on the server (the old code's abandoned query would wait for the lock)
fs_wait_for 5 "[[ \$(fs_psql \"SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'fraudshield-%'\") == 0 ]]"
[[ ! -e "$FS_TEST_DIR/model.json" ]] || fs_fail "a failed training wrote a model"

echo "--- a server that stops answering"
# the proxy passes the rows query on and holds back every reply after it: the server's answer
# (the cancellation at 2 s) never gets through
pport=$(fs_free_port)
fs_bg proxy python3 "$REPO/tests/integration/tcp_proxy.py" "$pport" "$FS_PG_PORT" "JOIN decisions"
fs_wait_for 10 grep -q listening "$FS_TEST_DIR/proxy.log"
proxied=${FS_DATABASE_URL/:$FS_PG_PORT\//:$pport/}
[[ "$proxied" != "$FS_DATABASE_URL" ]] || fs_fail "could not point the database URL at the proxy"
run_tool train "$proxied" \
    'the rows query: PostgreSQL did not answer within 4000 ms: connection dropped (db-timeout-ms + 2000 ms)' \
    "${train[@]}"
grep -q "holding replies" "$FS_TEST_DIR/proxy.log" || fs_fail "the proxy never held the rows query's reply"
fs_psql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'" >/dev/null

echo "--- the alerter's operator commands"
"$BUILD/bin/fraudshield-alerter" subscriptions add --name hook1 --url https://hooks.example.com/h >/dev/null
fs_bg sublocker psql -X -q -d "$FS_DATABASE_URL?application_name=sublocker" \
    -c "BEGIN; LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)"
fs_wait_for 10 "[[ \$(fs_psql \"SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'sublocker' AND l.mode = 'AccessExclusiveLock' AND l.granted\") == 1 ]]"
t0=$(now_ms)
rc=0
out=$(FS_DB_TIMEOUT_MS=2000 timeout 30 "$BUILD/bin/fraudshield-alerter" subscriptions list 2>&1) || rc=$?
ms=$(($(now_ms) - t0))
echo "$out" | tail -2
fs_assert_eq 1 "$rc" "alerter subscriptions list exit status"
((ms >= 2000 && ms <= 12000)) || fs_fail "the alerter command exited after $ms ms"
grep -qF 'statement timeout' <<<"$out" || fs_fail "alerter command: $out"
# a write that gave up must not take effect once the lock goes: the server cancelled it
rc=0
out=$(FS_DB_TIMEOUT_MS=2000 timeout 30 "$BUILD/bin/fraudshield-alerter" subscriptions disable hook1 2>&1) || rc=$?
fs_assert_eq 1 "$rc" "alerter subscriptions disable behind the lock"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fraudshield-alerter cli'")" \
    "no command statement left waiting on the server"
fs_psql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sublocker'" >/dev/null
"$BUILD/bin/fraudshield-alerter" subscriptions list >/dev/null || fs_fail "subscriptions list after the lock"
sleep 1
fs_assert_eq t "$(fs_psql "SELECT active FROM subscriptions WHERE name = 'hook1'")" "the abandoned disable did not take effect"

echo "--- an answering database: the rows are read as before"
out=$("$BUILD/bin/fraudshield-train" "${train[@]}" 2>&1) && fs_fail "training on no rows must fail"
grep -qF 'no labelled rows to train on' <<<"$out" || fs_fail "train without rows: $out"
echo "tools db deadline ok"
