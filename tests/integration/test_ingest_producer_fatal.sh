#!/usr/bin/env bash
# A fatal producer error while payments flow (here: the dev broker answers every produce request
# OUT_OF_ORDER_SEQUENCE_NUMBER, which the idempotent producer cannot repair) stops ingest the way
# SIGTERM does, then it exits 1 so that Kubernetes restarts it: the old ingest stayed up for ever
# with /ready 503 and /health 200 (nothing restarted it). Checked: exit status 1 with kafka_fatal
# and fatal_exit logged; every request was answered 202 or 503 (or refused once the listener
# closed), never left hanging; every payment answered 202 is on raw_payments (202 means durable);
# a restarted ingest (a new producer) takes payments again; every answer against its JSON Schema
# (schemas/json).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup ingest_producer_fatal
FS_HUP_FAULT=fatal fs_broker_start 3

INGEST="$BUILD/bin/fraudshield-ingest"
secret="$FS_TEST_DIR/pii.secret"
fs_pii_secret "$secret"
port=$(fs_free_port)
BASE="http://127.0.0.1:$port"
# linger.ms=100: the messages of the requests of 100 ms go out together, so that more than one
# request waits for the produce request that meets the fault.
start_ingest() {
    fs_bg "$1" "$INGEST" --listen-port="$port" --pii-secret-file="$secret" --auth=false -X linger.ms=100
    fs_wait_for 60 curl -sf "$BASE/ready"
}
start_ingest ingest

# pay USER: a payment (the user picks its partition)
pay() { printf '{"user_id":"u-%s","merchant_id":"m-1","amount":"1.00","currency":"EUR","payment_method":"card"}' "$1"; }
# client N: posts payments one after another until ingest refuses the connection (000), one line
# "STATUS PAYMENT_ID ERROR" per request in client.N, "STATUS BODY" in raw.N (for record_lines:
# fs_record_answer from four clients at once could interleave the lines it appends).
client() {
    local n=$1 i body status
    for ((i = 0; i < 5000; i++)); do
        body=$(curl -s --max-time 30 -H 'Content-Type: application/json' -w '\n%{http_code}' \
            --data-binary "$(pay "$n-$i")" "$BASE/api/v1/payments") || true
        status=${body##*$'\n'}
        [[ "$status" == 000 ]] && break
        printf '%s %s\n' "$status" "${body%$'\n'*}" >>"$FS_TEST_DIR/raw.$n"
        printf '%s %s %s\n' "$status" "$(grep -o '"payment_id":"[^"]*"' <<<"$body" | cut -d'"' -f4)" \
            "$(grep -o '"error":"[^"]*"' <<<"$body" | cut -d'"' -f4)" >>"$FS_TEST_DIR/client.$n"
    done
}
# batch_client: the same with batches of 20 (items of several partitions, one request waiting for
# several produce requests); "STATUS BODY" per request.
batch_client() {
    local i body batch
    batch="[$(pay b-0)$(for ((i = 1; i < 20; i++)); do printf ',%s' "$(pay "b-$i")"; done)]"
    for ((i = 0; i < 5000; i++)); do
        body=$(curl -s --max-time 30 -H 'Content-Type: application/json' -w '\n%{http_code}' \
            --data-binary "$batch" "$BASE/api/v1/payments/batch") || true
        [[ "${body##*$'\n'}" == 000 ]] && break
        printf '%s %s\n' "${body##*$'\n'}" "$(head -n 1 <<<"$body")" >>"$FS_TEST_DIR/batches"
    done
}
pids=()
for n in 1 2 3; do
    client "$n" &
    pids+=($!)
done
batch_client &
pids+=($!)
accepted() { cat "$FS_TEST_DIR"/client.* 2>/dev/null | grep -c '^202 ' || true; }
fs_wait_for 60 '(( $(accepted) >= 20 ))'
fs_commit_fault # every produce request fails from now on: the producer's next one is fatal

fs_wait_exit ingest 60 # the old code: still running (unready) after 60 s
fs_assert_eq 1 "$FS_EXIT_STATUS" "exit status after the fatal producer error"
for p in "${pids[@]}"; do wait "$p"; done
# record_lines FILE PATH: each "STATUS BODY" line of FILE recorded as an answer to POST PATH
record_lines() {
    local status body
    while read -r status body; do
        printf '%s' "$body" >"$FS_TEST_DIR/line.body"
        fs_record_answer POST "$2" "$status" "$FS_TEST_DIR/line.body"
    done <"$1"
}
for n in 1 2 3; do record_lines "$FS_TEST_DIR/raw.$n" /api/v1/payments; done
[[ ! -e "$FS_TEST_DIR/batches" ]] || record_lines "$FS_TEST_DIR/batches" /api/v1/payments/batch
# Every answer against its schema (schemas/json); 503s and batches are checked when there were some.
fs_check_answers payment-accepted.v1.json
grep '"event":"kafka_fatal"' "$FS_TEST_DIR/ingest.log" | grep -q 'sequence desynchronization' ||
    fs_fail "no kafka_fatal naming the broker's error logged"
grep -q '"event":"fatal_exit"' "$FS_TEST_DIR/ingest.log" || fs_fail "no fatal_exit logged"
grep -q '"event":"draining"' "$FS_TEST_DIR/ingest.log" || fs_fail "the fatal error did not drain"

cat "$FS_TEST_DIR"/client.* >"$FS_TEST_DIR/replies"
odd=$(grep -Ev '^(202 [0-9a-f-]{36} |503 [0-9a-f-]* (broker_unavailable|shutting_down))$' "$FS_TEST_DIR/replies" || true)
[[ -z "$odd" ]] || fs_fail "answers other than 202 or 503 (broker_unavailable, shutting_down): $odd"
n202=$(grep -c '^202 ' "$FS_TEST_DIR/replies")
n503=$(grep -c '^503 ' "$FS_TEST_DIR/replies" || true)
echo "ok: $n202 answered 202, $n503 answered 503, then connections refused"

# Batches: 200 with per-item results, or 503 when nothing was stored; an item is accepted (202's
# promise) or failed with one of the two codes.
odd=$(grep -Ev '^(200|503) \{' "$FS_TEST_DIR/batches" || true)
[[ -z "$odd" ]] || fs_fail "batch answers other than 200 or 503: $odd"
odd=$(cut -d' ' -f2- "$FS_TEST_DIR/batches" | jq -r '.results[] | select(.status != "accepted") | .error' |
    grep -Ev '^(broker_unavailable|shutting_down)$' || true)
[[ -z "$odd" ]] || fs_fail "batch items failed otherwise: $odd"
items=$(cut -d' ' -f2- "$FS_TEST_DIR/batches" | jq -r '.results[] | select(.status == "accepted") | .payment_id')
failed=$(cut -d' ' -f2- "$FS_TEST_DIR/batches" | jq -r '.results[] | select(.status == "failed") | .error')
echo "ok: $(wc -l <"$FS_TEST_DIR/batches") batches, $(grep -c . <<<"$items") items accepted, failed:" \
    "$(grep . <<<"$failed" | sort | uniq -c | tr -s ' \n' ' ')"
# The message whose produce request met the fault failed: its request was answered, not dropped.
((n503 + $(grep -c . <<<"$failed") >= 1)) || fs_fail "no request met the fatal error"

fs_topic_dump raw_payments | grep -o 'payment_id=[0-9a-f-]*' | cut -d= -f2 | sort -u >"$FS_TEST_DIR/stored"
{ grep '^202 ' "$FS_TEST_DIR/replies" | cut -d' ' -f2; echo "$items"; } | grep . | sort -u >"$FS_TEST_DIR/acknowledged"
fs_assert_eq "$((n202 + $(grep -c . <<<"$items")))" "$(wc -l <"$FS_TEST_DIR/acknowledged")" \
    "distinct payments acknowledged (202, accepted batch items)"
fs_assert_eq "" "$(comm -23 "$FS_TEST_DIR/acknowledged" "$FS_TEST_DIR/stored" | head -n 3)" \
    "payments answered 202 missing from raw_payments"

# The restart Kubernetes would do: a new producer, which delivers once the broker behaves again.
fs_commit_fault # the fault cleared
start_ingest ingest2
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "$(pay after)" "$BASE/api/v1/payments")
fs_assert_eq 202 "$status" "a payment to the restarted ingest"
fs_kill ingest2 TERM
fs_wait_exit ingest2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "the restarted ingest's exit status after SIGTERM"
echo "PASS test_ingest_producer_fatal"
