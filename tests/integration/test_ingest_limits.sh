#!/usr/bin/env bash
# Ingest's transport and its limits: the TLS listener (self-signed certificate, reloaded on SIGHUP; a TLS
# client leaving while its request waits is noticed),
# the connection limit, a slow client that never completes its request, oversized headers,
# malformed HTTP, SIGTERM with a batch in flight (every accepted item durable, exit 0), the admin
# listener (admin-port), and a broker outage answered 503 by the batch and outcome endpoints; the
# answers with a body against their JSON Schemas (schemas/json).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup ingest_limits
fs_broker_start 6

INGEST="$BUILD/bin/fraudshield-ingest"
secret="$FS_TEST_DIR/pii.secret"
keys="$FS_TEST_DIR/api-keys"
fs_pii_secret "$secret"
KEY=$("$INGEST" keys create --keys-file "$keys" --id full --scopes payments:write,payments:read,outcomes:write 2>/dev/null)
H=(-H "X-API-Key: $KEY" -H 'Content-Type: application/json')
pay='{"user_id":"u-1","merchant_id":"m-1","amount":"12.50","currency":"EUR","payment_method":"card","country":"DE"}'
# rec METHOD PATH: records $out, an answer as curl -w '\n%{http_code}' prints it (the body, then the
# status on a line of its own), for fs_check_answers.
rec() {
    head -n -1 <<<"$out" >"$FS_TEST_DIR/rec.body"
    fs_record_answer "$1" "$2" "$(tail -n 1 <<<"$out")" "$FS_TEST_DIR/rec.body"
}

# A self-signed certificate for localhost / 127.0.0.1.
selfsigned() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$3" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$2" -out "$1" >/dev/null 2>&1 || fs_fail "openssl req failed"
}
selfsigned "$FS_TEST_DIR/cert.pem" "$FS_TEST_DIR/key.pem" fraudshield-test-1

port=$(fs_free_port)
tls_port=$(fs_free_port)
fs_bg ingest "$INGEST" --listen-port="$port" --tls-port="$tls_port" --tls-cert-file="$FS_TEST_DIR/cert.pem" \
    --tls-key-file="$FS_TEST_DIR/key.pem" --pii-secret-file="$secret" --keys-file="$keys" \
    --max-connections=4 --request-timeout-ms=1500 --max-header-bytes=4096 --log-level=debug
BASE="http://127.0.0.1:$port"
fs_wait_for 30 curl -sf "$BASE/ready"

# --- TLS ---------------------------------------------------------------------------------------
TLS="https://localhost:$tls_port"
fs_assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$FS_TEST_DIR/cert.pem" "$TLS/health")" "GET /health over TLS"
out=$(curl -s -w '\n%{http_code}' --cacert "$FS_TEST_DIR/cert.pem" "${H[@]}" --data-binary "$pay" "$TLS/api/v1/payments")
rec POST /api/v1/payments
[[ "$out" == *'"status":"accepted"'* ]] || fs_fail "POST over TLS: $out"
echo "ok: POST over TLS"
if curl -s -o /dev/null --max-time 3 --cacert "$FS_TEST_DIR/cert.pem" "https://localhost:$port/health"; then
    fs_fail "the plain port speaks TLS"
fi
rc=0
curl -s -o /dev/null --max-time 3 "$TLS/health" || rc=$?
[[ $rc != 0 ]] || fs_fail "an untrusted certificate was accepted"
echo "ok: plain port is plain; the certificate is verified"
subject() { openssl s_client -connect "127.0.0.1:$tls_port" </dev/null 2>/dev/null | openssl x509 -noout -subject; }
[[ "$(subject)" == *fraudshield-test-1* ]] || fs_fail "certificate subject: $(subject)"
selfsigned "$FS_TEST_DIR/cert.pem" "$FS_TEST_DIR/key.pem" fraudshield-test-2
fs_kill ingest HUP
fs_wait_for 10 "[[ \"\$(openssl s_client -connect 127.0.0.1:$tls_port </dev/null 2>/dev/null | openssl x509 -noout -subject)\" == *fraudshield-test-2* ]]"
echo "ok: SIGHUP reloads the certificate"

# A TLS client leaving while its request waits (linger.ms holds the message): the connections
# sweep polls the socket under the TLS layer, so the client's FIN is seen as on the plain port
# (test_ingest_http); the TLS session's own close_notify, unread, must not hide it.
leave_port=$(fs_free_port)
leave_tls=$(fs_free_port)
fs_bg ingest_leave "$INGEST" --listen-port="$leave_port" --tls-port="$leave_tls" \
    --tls-cert-file="$FS_TEST_DIR/cert.pem" --tls-key-file="$FS_TEST_DIR/key.pem" \
    --pii-secret-file="$secret" --keys-file="$keys" -X linger.ms=6000 -X message.timeout.ms=20000
fs_wait_for 30 curl -sf "http://127.0.0.1:$leave_port/ready"
curl -s -o /dev/null --max-time 0.5 --cacert "$FS_TEST_DIR/cert.pem" "${H[@]}" -H 'X-Request-Id: tls-leaver' \
    --data-binary "${pay/u-1/u-tls-leaver}" "https://localhost:$leave_tls/api/v1/payments" || true
fs_wait_for 3 grep -q '"event":"client_gone".*tls-leaver' "$FS_TEST_DIR/ingest_leave.log"
fs_assert_eq 1 "$(curl -fsS "http://127.0.0.1:$leave_port/metrics" | awk '$1 == "fs_ingest_connections" { print $2 }')" \
    "open connections once the TLS client left (the scrape's own)"
fs_topic_dump raw_payments | grep -qF u-tls-leaver && fs_fail "inconclusive: the payment was delivered before the client left"
echo "ok: a TLS client leaving while its request waits is noticed within the sweep"
fs_wait_for 20 "fs_topic_dump raw_payments | grep -qF u-tls-leaver"
echo "ok: its payment is still produced"
fs_kill ingest_leave TERM
fs_wait_exit ingest_leave 15
fs_assert_eq 0 "$FS_EXIT_STATUS" "ingest_leave exit status"

# --- malformed HTTP, oversized headers ---------------------------------------------------------
raw_request() { # raw_request BYTES -> prints the status line of the answer ("" when closed)
    local reply
    exec 7<>"/dev/tcp/127.0.0.1/$port"
    printf '%b' "$1" >&7
    reply=$(timeout 5 head -n 1 <&7 | tr -d '\r') || true
    exec 7>&-
    printf '%s' "$reply"
}
for junk in 'GARBAGE\r\n\r\n' 'GET /health HTTP/9.9\r\n\r\n' 'POST /api/v1/payments HTTP/1.1\r\nContent-Length: -5\r\n\r\n' \
    'GET /health HTTP/1.1\r\nNo-Colon-Header\r\n\r\n'; do
    status=$(raw_request "$junk")
    [[ -z "$status" || "$status" =~ ^HTTP/1\.[01]\ (400|404|405|413) ]] || fs_fail "malformed request '$junk' answered: $status"
done
fs_assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")" "alive after malformed requests"
# Request smuggling: a request whose framing two parsers could read differently (two
# Content-Lengths, an unknown Transfer-Encoding, a space before the colon, no Host) is a 400 and
# its connection is closed, so the request hidden in its body is never served. libevent alone took
# the first Content-Length and answered the hidden payment with a 202.
raw_exchange() { # raw_exchange BYTES -> every status line answered until the server closes
    (
        trap '' PIPE # the server may close before the hidden request is written
        exec 7<>"/dev/tcp/127.0.0.1/$port"
        printf '%b' "$1" >&7 2>/dev/null || true
        timeout 5 cat <&7 | tr -d '\r' | grep -a '^HTTP/' || true
    )
}
hidden="POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\nContent-Type: application/json\r\nContent-Length: ${#pay}\r\n\r\n$pay"
hidden_len=$(printf '%b' "$hidden" | wc -c)
chunk=$(printf '%x' "$hidden_len")
published=$(fs_topic_count raw_payments)
for smuggle in \
    "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\nContent-Type: application/json\r\nContent-Length: 0\r\nContent-Length: $hidden_len\r\n\r\n$hidden" \
    "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\nContent-Type: application/json\r\nTransfer-Encoding: xchunked\r\n\r\n$hidden" \
    "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\nContent-Type: application/json\r\nTransfer-Encoding : chunked\r\n\r\n$chunk\r\n$hidden\r\n0\r\n\r\n" \
    "POST /api/v1/payments HTTP/1.1\r\nX-API-Key: $KEY\r\nContent-Type: application/json\r\nContent-Length: +${#pay}\r\n\r\n$pay$hidden" \
    "GET /health HTTP/1.1\r\n\r\n$hidden" \
    "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\nContent-Type: application/json\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\nContent-Length: ${#pay}\r\n\r\n$pay$hidden"; do
    statuses=$(raw_exchange "$smuggle")
    fs_assert_eq "HTTP/1.1 400 Bad Request" "$statuses" "answers to a request with ambiguous framing (one 400, then closed)"
done
fs_assert_eq "$published" "$(fs_topic_count raw_payments)" "payments published by the smuggling attempts"
# HEAD: the GET answer's headers, its length announced, no body (the body used to follow unannounced)
head_reply=$(raw_exchange 'HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
fs_assert_eq "HTTP/1.1 200 OK" "$head_reply" "HEAD /health"
exec 7<>"/dev/tcp/127.0.0.1/$port"
printf 'HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&7
head_all=$(timeout 5 cat <&7 | tr -d '\r') || true
exec 7>&-
[[ "$head_all" == *$'Content-Length: 15\n'* ]] || fs_fail "HEAD /health: no Content-Length of the GET body: $head_all"
[[ "$head_all" != *'"status"'* ]] || fs_fail "HEAD /health: a body came with it: $head_all"
echo "ok: smuggling attempts refused and closed; HEAD answers without a body"
big=$(head -c 6000 /dev/zero | tr '\0' a)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Big: $big" "$BASE/health") || code=000
[[ "$code" != 200 ]] || fs_fail "a 6000-byte header passed max-header-bytes=4096"
echo "ok: oversized headers refused ($code)"

# --- a slow client cannot hold a connection ------------------------------------------------------
exec 5<>"/dev/tcp/127.0.0.1/$port"
printf 'POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nX-Slow: ' >&5
( for _ in $(seq 1 40); do printf 'z' || exit 0; sleep 0.2; done ) >&5 2>/dev/null &
trickler=$!
start=$(date +%s%N)
timeout 10 cat <&5 >/dev/null || true
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
kill "$trickler" 2>/dev/null || true
wait "$trickler" 2>/dev/null || true
exec 5<&-
((elapsed_ms >= 1000 && elapsed_ms < 4000)) || fs_fail "a trickling client was closed after ${elapsed_ms} ms (request-timeout-ms=1500)"
echo "ok: a trickling client was closed after ${elapsed_ms} ms"

# --- the connection limit ------------------------------------------------------------------------
for fd in 11 12 13 14; do eval "exec $fd<>/dev/tcp/127.0.0.1/$port"; done
sleep 0.3
code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$BASE/health") || code=000
fs_assert_eq 000 "$code" "a fifth connection waits while 4 are open (max-connections=4)"
for fd in 11 12 13 14; do eval "exec $fd>&-"; done
fs_wait_for 5 curl -sf --max-time 1 "$BASE/health"
echo "ok: accepting resumes once connections close"
# idle connections are also closed by the deadline, which frees their slots
for fd in 11 12 13 14; do eval "exec $fd<>/dev/tcp/127.0.0.1/$port"; done
sleep 2.5
fs_assert_eq 200 "$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$BASE/health")" "idle connections expire (request-timeout-ms)"
for fd in 11 12 13 14; do eval "exec $fd>&-"; done

# --- admin-port: /health, /ready, /metrics on their own listener, not on the API port -----------
port4=$(fs_free_port)
admin4=$(fs_free_port)
fs_bg ingest4 "$INGEST" --listen-port="$port4" --admin-port="$admin4" --pii-secret-file="$secret" \
    --keys-file="$keys" --max-connections=2 --request-timeout-ms=3000
ADMIN="http://127.0.0.1:$admin4"
fs_wait_for 30 curl -sf "$ADMIN/ready"
code() { curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$@" || true; } # 000: no answer
for path in /health /ready /metrics; do
    fs_assert_eq 404 "$(code "http://127.0.0.1:$port4$path")" "GET $path on the API port with admin-port set"
    fs_assert_eq 200 "$(code "$ADMIN$path")" "GET $path on the admin port"
done
fs_assert_eq 404 "$(code "${H[@]}" --data-binary "$pay" "$ADMIN/api/v1/payments")" "POST a payment to the admin port"
fs_assert_eq 202 "$(code "${H[@]}" --data-binary "$pay" "http://127.0.0.1:$port4/api/v1/payments")" "POST a payment to the API port"
curl -s "$ADMIN/metrics" | grep -q 'fs_ingest_requests_total{route="payments",status="202"} 1' ||
    fs_fail "the admin port's metrics do not count the payment"
# The API port full (max-connections=2, both held idle): a scrape still gets through.
for fd in 11 12; do eval "exec $fd<>/dev/tcp/127.0.0.1/$port4"; done
sleep 0.3
fs_assert_eq 000 "$(code "${H[@]}" --data-binary "$pay" "http://127.0.0.1:$port4/api/v1/payments")" "the API port waits while full"
fs_assert_eq 200 "$(code "$ADMIN/metrics")" "GET /metrics on the admin port while the API port is full"
for fd in 11 12; do eval "exec $fd>&-"; done
echo "ok: admin-port"

# --- broker down: batch and outcome answer 503 ---------------------------------------------------
port3=$(fs_free_port)
fs_bg ingest3 "$INGEST" --listen-port="$port3" --pii-secret-file="$secret" --keys-file="$keys" -X message.timeout.ms=1500
fs_wait_for 30 curl -sf "http://127.0.0.1:$port3/ready"
fs_broker_down
out=$(curl -s -w '\n%{http_code}' "${H[@]}" --data-binary "[$pay,$pay]" "http://127.0.0.1:$port3/api/v1/payments/batch")
rec POST /api/v1/payments/batch
fs_assert_eq 503 "$(tail -n 1 <<<"$out")" "batch with the broker down"
[[ "$out" == *'"failed":2'* && "$out" == *'"status":"failed","payment_id":"'* ]] || fs_fail "batch 503 body: $out"
# nothing stored next to a rejected item is still a 503 with Retry-After (never a 200 to move on from)
out=$(curl -s -D "$FS_TEST_DIR/h503" -w '\n%{http_code}' "${H[@]}" --data-binary "[$pay,{\"user_id\":\"x\"}]" \
    "http://127.0.0.1:$port3/api/v1/payments/batch")
rec POST /api/v1/payments/batch
fs_assert_eq 503 "$(tail -n 1 <<<"$out")" "batch of a failed and a rejected item with the broker down"
[[ "$out" == *'"accepted":0,"rejected":1,"failed":1'* ]] || fs_fail "batch 503 body: $out"
grep -qi '^Retry-After: [1-9]' "$FS_TEST_DIR/h503" || fs_fail "batch 503 without Retry-After"
out=$(curl -s -w '\n%{http_code}' "${H[@]}" --data-binary '{"outcome":"chargeback"}' \
    "http://127.0.0.1:$port3/api/v1/payments/00000000-0000-4000-8000-000000000001/outcome")
rec POST /api/v1/payments/00000000-0000-4000-8000-000000000001/outcome
fs_assert_eq 503 "$(tail -n 1 <<<"$out")" "outcome with the broker down"
[[ "$out" == *broker_unavailable* ]] || fs_fail "outcome 503 body: $out"
fs_broker_up
fs_wait_for 30 curl -sf "http://127.0.0.1:$port3/ready"
out=$(curl -s -w '\n%{http_code}' "${H[@]}" --data-binary "[$pay]" "http://127.0.0.1:$port3/api/v1/payments/batch")
rec POST /api/v1/payments/batch
fs_assert_eq 200 "$(tail -n 1 <<<"$out")" "batch once the broker is back"

# --- the producer's queue refuses items of a batch: 200 around them, and the metrics count them ---
port5=$(fs_free_port)
fs_bg ingest5 "$INGEST" --listen-port="$port5" --pii-secret-file="$secret" --keys-file="$keys" \
    -X queue.buffering.max.messages=1 -X linger.ms=300
fs_wait_for 30 curl -sf "http://127.0.0.1:$port5/ready"
out=$(curl -s -w '\n%{http_code}' "${H[@]}" --data-binary "[$pay,$pay,$pay,$pay,$pay]" "http://127.0.0.1:$port5/api/v1/payments/batch")
rec POST /api/v1/payments/batch
fs_assert_eq 200 "$(tail -n 1 <<<"$out")" "batch with a full producer queue"
[[ "$out" == *'"accepted":1,"rejected":0,"failed":4'* ]] || fs_fail "full queue, batch body: $out"
metrics=$(curl -s "http://127.0.0.1:$port5/metrics")
for m in 'fs_ingest_payments_total{result="failed"} 4' 'fs_ingest_delivery_failures_total 4' \
    'fs_ingest_payments_total{result="accepted"} 1'; do
    grep -qF "$m" <<<"$metrics" || fs_fail "full queue: no '$m' in /metrics: $(grep -E 'payments_total|delivery_failures' <<<"$metrics")"
done
fs_kill ingest5 TERM
echo "ok: items the queue refused are counted"

# --- SIGTERM with a batch in flight: answered, durable, exit 0 ------------------------------------
port2=$(fs_free_port)
fs_bg ingest2 "$INGEST" --listen-port="$port2" --pii-secret-file="$secret" --keys-file="$keys" -X linger.ms=1500
fs_wait_for 30 curl -sf "http://127.0.0.1:$port2/ready"
before=$(fs_topic_count raw_payments)
curl -s -o "$FS_TEST_DIR/inflight.body" -w '%{http_code}' "${H[@]}" --data-binary "[$pay,$pay,$pay]" \
    "http://127.0.0.1:$port2/api/v1/payments/batch" >"$FS_TEST_DIR/inflight.status" &
client=$!
sleep 0.5
fs_kill ingest2 TERM
wait "$client" || true
fs_assert_eq 200 "$(cat "$FS_TEST_DIR/inflight.status")" "in-flight batch answered during shutdown"
fs_record_answer POST /api/v1/payments/batch 200 "$FS_TEST_DIR/inflight.body"
grep -q '"accepted":3' "$FS_TEST_DIR/inflight.body" || fs_fail "in-flight batch: $(cat "$FS_TEST_DIR/inflight.body")"
fs_wait_exit ingest2 15
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status after SIGTERM"
fs_wait_for 20 fs_topic_has raw_payments $((before + 3))
echo "ok: the 3 accepted items are on raw_payments"

fs_alive ingest || fs_fail "ingest died"
fs_check_answers payment-accepted.v1.json batch-result.v1.json error.v1.json
echo "PASS test_ingest_limits"
