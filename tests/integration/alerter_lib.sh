# shellcheck shell=bash
# tests/integration/alerter_lib.sh: helpers for the alerter's integration tests (sourced after
# tests/lib.sh and fs_setup).
#
#   al_receiver NAME MODE [--tls-cert C --tls-key K]   starts alerter_receiver.py (see its header) on a
#                            free port; sets AL_PORT[NAME]; its requests go to $FS_TEST_DIR/NAME.jsonl
#   al_gen_alerts RUN N [FIRST]  prints N fraud_alerts messages as "payment_id:json" (kcat -K:),
#                            numbers FIRST.. (default 0); decision block for even numbers, review for
#                            odd; country DE for multiples of 3, FR otherwise
#   al_alert_id RUN I        the alert_id of message I of RUN
#   al_start NAME [ENV=V...] starts the alerter as fs_bg NAME with the test's defaults + ENV
#   al_cli ARGS...           the alerter's operator commands against the test database
#   (al_start and al_cli set allow-insecure-http: the test receivers speak plain HTTP; pass
#   FS_ALLOW_INSECURE_HTTP=false to test the default)
#   al_requests NAME [JQ-ish python filter]   count of requests NAME received matching a condition
#   al_metric NAME SERIES    value of a /metrics series of alerter NAME (its admin port: AL_ADMIN[NAME])
#   al_sql_int SQL           an integer from PostgreSQL (0 when empty)
ALERTER="$BUILD/bin/fraudshield-alerter"
AL_SECRET=${AL_SECRET:-test-secret-0123456789abcdef}
declare -gA AL_PORT=() AL_ADMIN=()

al_receiver() {
    local name=$1 mode=$2 port
    shift 2
    port=$(fs_free_port)
    fs_bg "recv-$name" python3 "$REPO/tests/integration/alerter_receiver.py" --port "$port" \
        --secret "$AL_SECRET" --log "$FS_TEST_DIR/$name.jsonl" --mode "$mode" "$@"
    fs_wait_for 20 test -s "$FS_TEST_DIR/$name.jsonl.ready"
    AL_PORT[$name]=$port
}

al_alert_id() { printf '%08x-0000-5000-a000-%012x' "$1" "$2"; }

al_gen_alerts() {
    local run=$1 n=$2 first=${3:-0}
    awk -v run="$run" -v n="$n" -v first="$first" 'BEGIN {
        for (i = first; i < first + n; i++) {
            pid = sprintf("%08x-0000-4000-8000-%012x", run, i)
            aid = sprintf("%08x-0000-5000-a000-%012x", run, i)
            d = i % 2 == 0 ? "block" : "review"
            c = i % 3 == 0 ? "DE" : "FR"
            printf "%s:{\"schema_version\":1,\"payment_id\":\"%s\",\"decision\":\"%s\",\"score\":%d,", pid, pid, d, d == "block" ? 80 : 55
            printf "\"reasons\":[{\"code\":\"HIGH_VALUE\",\"severity\":\"medium\",\"weight\":30,\"message\":\"Amount at or above 1000\"}],"
            printf "\"rules_version\":\"test\",\"model_version\":null,\"user_id\":\"user-%d\",\"merchant_id\":\"m-1\",", i
            printf "\"amount\":\"1500.00\",\"amount_minor\":150000,\"currency\":\"EUR\",\"currency_exp\":2,\"country\":\"%s\",", c
            printf "\"event_time\":\"2026-11-21T10:00:00.000Z\",\"alert_id\":\"%s\",\"created_at\":\"2026-11-21T10:00:00.030Z\"}\n", aid
        }
    }'
}

# Test defaults: fast polling, short timeouts; the caller adds the schedule it tests.
al_start() {
    local name=$1 admin
    shift
    admin=$(fs_free_port)
    AL_ADMIN[$name]=$admin
    fs_bg "$name" env FS_ALERTER_ID="$name" FS_ADMIN_ADDR=127.0.0.1 FS_ADMIN_PORT="$admin" \
        FS_POLL_INTERVAL_MS="${FS_POLL_INTERVAL_MS:-50}" FS_SUBSCRIPTIONS_REFRESH_MS=500 \
        FS_OUTBOX_INTERVAL_MS=100 FS_HTTP_TIMEOUT_MS="${FS_HTTP_TIMEOUT_MS:-2000}" \
        FS_HTTP_CONNECT_TIMEOUT_MS=1000 FS_SHUTDOWN_TIMEOUT_MS=1000 \
        FS_ALLOW_INSECURE_HTTP="${FS_ALLOW_INSECURE_HTTP:-true}" "$@" "$ALERTER"
}

al_wait_assigned() {
    fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/$1.log"
    fs_wait_for 30 "curl -fsS http://127.0.0.1:${AL_ADMIN[$1]}/ready"
}

al_cli() { FS_ALLOW_INSECURE_HTTP="${FS_ALLOW_INSECURE_HTTP:-true}" "$ALERTER" "$@"; }

# al_requests NAME 'python expression over r' -> count of logged requests where it is true
al_requests() {
    local name=$1 cond=${2:-True}
    python3 - "$FS_TEST_DIR/$name.jsonl" "$cond" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(sum(1 for r in rows if eval(sys.argv[2], {}, {"r": r})))
EOF
}

al_metric() {
    curl -fsS "http://127.0.0.1:${AL_ADMIN[$1]}/metrics" | awk -v s="$2" 'index($0, s " ") == 1 { print $2; found = 1 } END { if (!found) print 0 }'
}

al_sql_int() {
    local v
    v=$(fs_psql "$1")
    echo "${v:-0}"
}
