#!/usr/bin/env bash
# SIGTERM when the drain timeout (shutdown-timeout-ms) runs out with requests still waiting: every
# one of them is answered 503 shutting_down with Retry-After before ingest exits 0, none is closed
# without an answer, and nothing is acknowledged that is not durable. Waiting at the timeout:
#  - two payments whose email digests wait for the one (slow) Argon2 worker: one running, one queued;
#  - a payment whose message sits in the producer (linger.ms above the timeout): purged, 503;
#  - a GET /api/v1/payments/{id} whose query PostgreSQL never answers (a fake server that logs in
#    and then stays silent);
#  - a batch of one payment of each of the first and third kinds (503: nothing stored).
# Afterwards raw_payments holds nothing: what was answered 503 was never produced. Every answer is
# checked against its JSON Schema (schemas/json).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup ingest_shutdown
fs_broker_start 3

INGEST="$BUILD/bin/fraudshield-ingest"
secret="$FS_TEST_DIR/pii.secret"
fs_pii_secret "$secret"

# A PostgreSQL that accepts the login, then never answers a query.
pgport=$(fs_free_port)
cat >"$FS_TEST_DIR/silent_pg.py" <<'EOF'
import socket, struct, sys, threading, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
def serve(c):
    while True:
        head = c.recv(8, socket.MSG_WAITALL)
        if len(head) < 8:
            return
        n, code = struct.unpack("!ii", head)
        c.recv(n - 8, socket.MSG_WAITALL) if n > 8 else b""
        if code in (80877103, 80877104):  # SSLRequest / GSSENCRequest: no
            c.sendall(b"N")
            continue
        break
    c.sendall(b"R" + struct.pack("!ii", 8, 0))              # AuthenticationOk
    c.sendall(b"Z" + struct.pack("!i", 5) + b"I")           # ReadyForQuery
    while c.recv(65536):                                    # queries: never answered
        pass
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
EOF
fs_bg silent_pg python3 "$FS_TEST_DIR/silent_pg.py" "$pgport"

port=$(fs_free_port)
BASE="http://127.0.0.1:$port"
# Argon2 at t=48, 64 MiB: seconds per digest on one worker. linger.ms=20000 keeps a produced message
# in librdkafka past the timeout (message.timeout.ms must exceed it).
fs_bg ingest "$INGEST" --listen-port="$port" --pii-secret-file="$secret" --auth=false \
    --pii-t-cost=48 --pii-m-cost-kib=65536 --worker-threads=1 --shutdown-timeout-ms=1500 \
    --database-url="postgresql://fs@127.0.0.1:$pgport/fs?sslmode=disable&gssencmode=disable" \
    --read-timeout-ms=60000 -X linger.ms=20000 -X message.timeout.ms=60000
fs_wait_for 60 curl -sf "$BASE/ready"
fs_wait_for 20 'curl -s "$BASE/metrics" | grep -qx "fs_ingest_read_connections_up [1-9]"'

pay() { printf '{"user_id":"u-%s","merchant_id":"m-1","amount":"1.00","currency":"EUR","payment_method":"card"%s}' "$1" "${2:-}"; }
# request NAME CURL_ARGS...: in the background; status, headers and body in $FS_TEST_DIR/NAME.*
pids=()
request() {
    local name=$1
    shift
    curl -s -D "$FS_TEST_DIR/$name.headers" -o "$FS_TEST_DIR/$name.body" -w '%{http_code}' "$@" \
        >"$FS_TEST_DIR/$name.status" &
    pids+=($!)
}
request digesting -H 'Content-Type: application/json' -H 'Idempotency-Key: drain-1' \
    --data-binary "$(pay 1 ',"email":"first.secret@example.com"')" "$BASE/api/v1/payments"
sleep 0.2
request queued -H 'Content-Type: application/json' \
    --data-binary "$(pay 2 ',"email":"second.secret@example.com"')" "$BASE/api/v1/payments"
request lingering -H 'Content-Type: application/json' -H 'Idempotency-Key: drain-3' \
    --data-binary "$(pay 3)" "$BASE/api/v1/payments"
request reading "$BASE/api/v1/payments/0b0b0b0b-0000-4000-8000-000000000001"
request batch -H 'Content-Type: application/json' -H 'Idempotency-Key: drain-batch' \
    --data-binary "[$(pay 4 ',"email":"fourth.secret@example.com"'),$(pay 5)]" "$BASE/api/v1/payments/batch"
sleep 0.5
fs_kill ingest TERM
start=$SECONDS
for p in "${pids[@]}"; do wait "$p" || true; done
((SECONDS - start <= 6)) || fs_fail "the answers took $((SECONDS - start))s (shutdown-timeout-ms=1500)"

for name in digesting queued lingering reading batch; do
    fs_assert_eq 503 "$(cat "$FS_TEST_DIR/$name.status")" "$name: answered at the drain timeout"
    retry=$(tr -d '\r' <"$FS_TEST_DIR/$name.headers" | sed -n 's/^Retry-After: *//Ip')
    [[ "$retry" =~ ^[0-9]+$ ]] || fs_fail "$name: no Retry-After"
    grep -q '"error":"shutting_down"' "$FS_TEST_DIR/$name.body" || fs_fail "$name: body $(cat "$FS_TEST_DIR/$name.body")"
done
# The id the client retries with (its Idempotency-Key gives the same one again).
grep -q '"payment_id":"' "$FS_TEST_DIR/digesting.body" || fs_fail "no payment_id in the 503"
grep -q '"payment_id":"0b0b0b0b-0000-4000-8000-000000000001"' "$FS_TEST_DIR/reading.body" ||
    fs_fail "the read's 503 does not name its payment"
fs_assert_eq 2 "$(grep -o '"status":"failed","payment_id":"[^"]*","error":"shutting_down"' "$FS_TEST_DIR/batch.body" | wc -l)" \
    "batch: both items failed with shutting_down, with their ids"
echo "ok: every waiting request got 503 shutting_down with Retry-After"
for name in digesting queued lingering; do
    fs_record_answer POST /api/v1/payments "$(cat "$FS_TEST_DIR/$name.status")" "$FS_TEST_DIR/$name.body" \
        "$FS_TEST_DIR/$name.headers"
done
fs_record_answer GET /api/v1/payments/0b0b0b0b-0000-4000-8000-000000000001 "$(cat "$FS_TEST_DIR/reading.status")" \
    "$FS_TEST_DIR/reading.body" "$FS_TEST_DIR/reading.headers"
fs_record_answer POST /api/v1/payments/batch "$(cat "$FS_TEST_DIR/batch.status")" "$FS_TEST_DIR/batch.body" \
    "$FS_TEST_DIR/batch.headers"
# Every answer against its schema (schemas/json): the batch's 503 is its batch answer.
fs_check_answers error.v1.json batch-result.v1.json

fs_wait_exit ingest 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status after SIGTERM"
grep -q '"event":"drain_timeout"' "$FS_TEST_DIR/ingest.log" || fs_fail "no drain_timeout line"
if grep -q 'secret@example' "$FS_TEST_DIR/ingest.log"; then fs_fail "raw email in the log"; fi
fs_assert_eq 0 "$(fs_topic_count raw_payments)" "nothing answered 503 was produced"

echo "PASS test_ingest_shutdown"
