#!/usr/bin/env bash
# Ingest's HTTP contract against the dev broker: 202 only after the broker has the payment (key =
# country, the headers, no raw personal data anywhere in the topic or the log), the pseudonymization
# key id (pii_key_id header, fs_ingest_pii_key_info, pii_key_loaded; a new secret on SIGHUP changes
# it, pii_key_changed), every error status as JSON (400, 413, 415, 404, 405, 422 naming each bad
# field), idempotency keys, /health and /ready, broker down -> 503 + Retry-After and back, a client
# leaving early, SIGTERM with a request in flight, start-up failures, and every answer against its
# JSON Schema (schemas/json). Ingest runs with auth=false here (API keys, scopes, rate limits and
# the other issue-3 routes are in test_ingest_api.sh).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup ingest_http
fs_broker_start 6

INGEST="$BUILD/bin/fraudshield-ingest"
secret="$FS_TEST_DIR/pii.secret"
fs_pii_secret "$secret"
port=$(fs_free_port)
BASE="http://127.0.0.1:$port"
# message.timeout.ms=2000: a dead broker must turn into a 503 quickly.
fs_bg ingest "$INGEST" --listen-port="$port" --pii-secret-file="$secret" --log-level=debug --auth=false \
    -X message.timeout.ms=2000
fs_wait_for 30 curl -sf "$BASE/ready"

# http METHOD PATH [CURL_ARGS...]: sets STATUS and BODY; header NAME prints a response header.
http() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -s -X "$method" -D "$FS_TEST_DIR/headers" -o "$FS_TEST_DIR/body" \
        -w '%{http_code}' "$@" "$BASE$path") || STATUS=000
    BODY=$(cat "$FS_TEST_DIR/body" 2>/dev/null || true)
    fs_record_answer "$method" "$path" "$STATUS" "$FS_TEST_DIR/body" "$FS_TEST_DIR/headers"
}
header() { tr -d '\r' <"$FS_TEST_DIR/headers" | sed -n "s/^$1: *//Ip" | head -n 1; }
post() { http POST /api/v1/payments -H 'Content-Type: application/json' --data-binary "$@"; }
# The string value of a top-level field of BODY (our JSON is compact).
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$BODY" | head -n 1; }

# expect STATUS [ERROR_CODE] MSG: the status, a JSON body with that error code, and X-Request-Id.
expect() {
    local status=$1 code=$2 msg=$3
    fs_assert_eq "$status" "$STATUS" "$msg: status"
    [[ "$(header Content-Type)" == application/json* ]] || fs_fail "$msg: Content-Type $(header Content-Type)"
    [[ -n "$(header X-Request-Id)" ]] || fs_fail "$msg: no X-Request-Id"
    [[ -z "$code" ]] || fs_assert_eq "$code" "$(field error)" "$msg: error code"
}

valid='{"user_id":"u-1","merchant_id":"m-1","amount":"12.50","currency":"EUR","payment_method":"card"}'
with_pii='{"user_id":"u-pii","merchant_id":"m-1","amount":"99.99","currency":"EUR","payment_method":"card","country":"de","email":"Alice.Secret@Example.com","ip_address":"198.51.100.77","card_fingerprint":"fp-raw-SECRET-4242","device_info":{"device_id":"dev-raw-SECRET-77","os":"linux"}}'

# --- health, readiness, request ids ---------------------------------------------------------------
http GET /health
expect 200 "" "/health"
fs_assert_eq '{"status":"ok"}' "$BODY" "/health body"
http GET /ready
expect 200 "" "/ready"
http GET /health -H 'X-Request-Id: trace.ABC_123-x'
fs_assert_eq trace.ABC_123-x "$(header X-Request-Id)" "a sane client request id is kept"
http GET /health -H 'X-Request-Id: bad id;drop'
[[ "$(header X-Request-Id)" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] ||
    fs_fail "an odd client request id must be replaced by a UUID v4, got $(header X-Request-Id)"
echo "ok: odd request id replaced"

# --- 202: key, headers, pseudonymized --------------------------------------------------------------
post "$with_pii" -H 'X-Request-Id: req-pii-1'
expect 202 "" "payment with personal data"
fs_assert_eq accepted "$(field status)" "202 status field"
fs_assert_eq "Payment accepted for processing" "$(field message)" "202 message"
fs_assert_eq req-pii-1 "$(header X-Request-Id)" "202 carries the request id"
pid_pii=$(field payment_id)
[[ "$pid_pii" =~ ^[0-9a-f-]{36}$ ]] || fs_fail "no payment_id in $BODY"

http POST /api/v1/payments/ -H 'Content-Type: application/json; charset=utf-8' --data-binary "$valid"
expect 202 "" "trailing slash, charset parameter"
pid_unk=$(field payment_id)

fs_wait_for 20 fs_topic_has raw_payments 2
fs_topic_dump raw_payments >"$FS_TEST_DIR/dump"
line=$(grep -F "$pid_pii" "$FS_TEST_DIR/dump" | head -n 1)
[[ -n "$line" ]] || fs_fail "payment $pid_pii is not on raw_payments"
fs_assert_eq DE "$(cut -f3 <<<"$line")" "key = country, upper case"
hdrs=$(cut -f4 <<<"$line")
for h in schema_version=1 "payment_id=$pid_pii" content-type=application/json; do
    [[ ",$hdrs," == *",$h,"* ]] || fs_fail "header $h missing in: $hdrs"
done
[[ "$hdrs" =~ (^|,)ingest_ts=[0-9]{13}(,|$) ]] || fs_fail "ingest_ts header missing in: $hdrs"
echo "ok: headers schema_version, payment_id, ingest_ts, content-type"
[[ "$(cut -f5 <<<"$line")" =~ \"email_digest\":\"[0-9a-f]{64}\" ]] || fs_fail "no email digest: $line"
fs_assert_eq UNK "$(grep -F "$pid_unk" "$FS_TEST_DIR/dump" | cut -f3)" "key without country"
for raw in Alice.Secret@Example.com 198.51.100.77 fp-raw-SECRET-4242 dev-raw-SECRET-77; do
    if grep -qiF "$raw" "$FS_TEST_DIR/dump"; then fs_fail "raw value $raw reached the topic"; fi
    if grep -qiF "$raw" "$FS_TEST_DIR/ingest.log"; then fs_fail "raw value $raw reached the log"; fi
done
echo "ok: no raw email/IP/card fingerprint/device id in the topic bytes or the log"

# --- the pseudonymization key id: header, metric, log; a new secret on SIGHUP ------------------------
# jfield EVENT FIELD: the string FIELD of the last EVENT line of the log.
jfield() { grep "\"event\":\"$1\"" "$FS_TEST_DIR/ingest.log" | sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" | tail -n 1; }
# key_series: the fs_ingest_pii_key_info series of a scrape, one per line.
key_series() { curl -fsS "$BASE/metrics" | grep '^fs_ingest_pii_key_info{' || true; }
# digest_of PAYMENT_ID: pii_key_id header and email digest of that payment on raw_payments.
digest_of() {
    fs_topic_dump raw_payments | grep -F "$1" | head -n 1 |
        sed -n 's/.*pii_key_id=\([0-9a-f]*\).*"email_digest":"\([0-9a-f]*\)".*/\1 \2/p'
}
kid=$(jfield pii_key_loaded pii_key_id)
[[ "$kid" =~ ^[0-9a-f]{16}$ ]] || fs_fail "no pii_key_loaded line with a 16-hex-digit key id: '$kid'"
grep -qF "$kid" "$secret" && fs_fail "the key id $kid is a piece of the secret"
[[ ",$hdrs," == *",pii_key_id=$kid,"* ]] || fs_fail "header pii_key_id=$kid missing in: $hdrs"
fs_assert_eq "fs_ingest_pii_key_info{key_id=\"$kid\"} 1" "$(key_series)" "the key id series"
read -r kid_msg digest1 <<<"$(digest_of "$pid_pii")"
fs_assert_eq "$kid" "$kid_msg" "pii_key_id of the first payment"
# The same secret again: nothing changes (the cache stays warm).
fs_kill ingest HUP
# The key id's Argon2 runs on a worker (the loop must not stall): its verdict comes when done.
fs_wait_for 10 grep -q '"event":"pii_key_reloaded"' "$FS_TEST_DIR/ingest.log"
grep -q '"event":"pii_key_changed"' "$FS_TEST_DIR/ingest.log" && fs_fail "SIGHUP with the same secret changed the key"
fs_assert_eq "fs_ingest_pii_key_info{key_id=\"$kid\"} 1" "$(key_series)" "the key id series after a SIGHUP with the same secret"
# A rotation: a new secret in the file, SIGHUP.
old_secret=$(cat "$secret")
fs_pii_secret "$secret.new"
chmod 600 "$secret.new"
mv "$secret.new" "$secret"
fs_kill ingest HUP
fs_wait_for 10 grep -q '"event":"pii_key_changed"' "$FS_TEST_DIR/ingest.log"
kid2=$(jfield pii_key_changed new_pii_key_id)
fs_assert_eq "$kid" "$(jfield pii_key_changed old_pii_key_id)" "pii_key_changed: old key id"
[[ "$kid2" =~ ^[0-9a-f]{16}$ && "$kid2" != "$kid" ]] || fs_fail "pii_key_changed: new key id '$kid2'"
grep '"event":"pii_key_changed"' "$FS_TEST_DIR/ingest.log" | grep -q '"level":"warn"' || fs_fail "pii_key_changed is not a warning"
fs_assert_eq "fs_ingest_pii_key_info{key_id=\"$kid2\"} 1" "$(key_series)" "the key id series after the rotation (the old one removed)"
new_secret=$(cat "$secret")
post "$with_pii" -H 'X-Request-Id: req-pii-2'
expect 202 "" "payment with personal data after the rotation"
pid_pii2=$(field payment_id)
fs_wait_for 20 '[[ -n "$(digest_of "$pid_pii2")" ]]'
read -r kid_msg digest2 <<<"$(digest_of "$pid_pii2")"
fs_assert_eq "$kid2" "$kid_msg" "pii_key_id of a payment after the rotation"
[[ "$digest2" =~ ^[0-9a-f]{64}$ && "$digest2" != "$digest1" ]] ||
    fs_fail "the same email must get another digest under the new key ($digest1 / $digest2)"
echo "ok: after the rotation the same email has another digest"
# A secret that does not load: the current key stays.
echo short >"$secret"
fs_kill ingest HUP
fs_wait_for 10 grep -q '"event":"reload_failed".*PII secret not reloaded' "$FS_TEST_DIR/ingest.log"
fs_assert_eq "fs_ingest_pii_key_info{key_id=\"$kid2\"} 1" "$(key_series)" "the key id series after a failed reload"
fs_assert_eq 1 "$(grep -c '"event":"pii_key_changed"' "$FS_TEST_DIR/ingest.log")" "pii_key_changed lines"
for s in "$old_secret" "$new_secret"; do
    grep -qF "$s" "$FS_TEST_DIR/ingest.log" && fs_fail "a secret reached the log"
done
fs_pii_secret "$secret" # for the instances started below
echo "ok: pii key id in the header, the metric and the log; rotated on SIGHUP"

# A rotation while a worker computes a digest: that payment is produced with the old key's digests
# and the old key id (never a mix), and its digest does not enter the new key's cache.
# pii-t-cost=64, 16 MiB: one Argon2 takes about a second. The payment carries four identifiers,
# digested one after the other by one task (~4 s); the SIGHUP's own Argon2 (the new key id, ~1 s)
# runs on the second worker thread, so the new key comes into force while that task still runs.
port3=$(fs_free_port)
fs_bg ingest3 "$INGEST" --listen-port="$port3" --pii-secret-file="$secret" --auth=false \
    --log-level=debug --pii-t-cost=64 --pii-m-cost-kib=16384 --worker-threads=2
fs_wait_for 60 curl -sf "http://127.0.0.1:$port3/ready"
slow='{"user_id":"u-slow","merchant_id":"m-1","amount":"5.00","currency":"EUR","payment_method":"card","email":"slow@example.com","ip_address":"198.51.100.23","card_fingerprint":"fp-slow-1","device_info":{"device_id":"dev-slow-1"}}'
# post3: posts $slow to ingest3 and prints the payment_id of its answer (recorded; from a subshell
# too, hence a body file of its own).
post3() {
    local body status
    body=$(mktemp "$FS_TEST_DIR/post3.XXXXXX")
    status=$(curl -s -o "$body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$slow" \
        "http://127.0.0.1:$port3/api/v1/payments") || status=000
    fs_record_answer POST /api/v1/payments "$status" "$body"
    sed -n 's/.*"payment_id":"\([^"]*\)".*/\1/p' "$body"
}
# true once a digest task is queued or running (submitted with the key in force then)
digesting3() {
    curl -fsS "http://127.0.0.1:$port3/metrics" |
        awk '$1 == "fs_ingest_argon2_tasks_pending" { found = 1; busy = $2 >= 1 } END { exit !(found && busy) }'
}
post3 >"$FS_TEST_DIR/slow.pid" &
client=$!
fs_wait_for 10 digesting3
fs_pii_secret "$secret"
fs_kill ingest3 HUP
# The loop serves others while the new key id is computed: /health is answered (logged) before the
# rotation is (a synchronous Argon2 on the loop would answer it only after pii_key_changed).
curl -fsS -o /dev/null -H 'X-Request-Id: health-during-rekey' "http://127.0.0.1:$port3/health"
wait "$client"
pid_slow=$(cat "$FS_TEST_DIR/slow.pid")
[[ -n "$pid_slow" ]] || fs_fail "the payment posted during the rotation was not accepted"
log3="$FS_TEST_DIR/ingest3.log"
changed_at=$(grep -n '"event":"pii_key_changed"' "$log3" | cut -d: -f1)
answered_at=$(grep -n "\"event\":\"http_request\".*\"payment_id\":\"$pid_slow\"" "$log3" | cut -d: -f1)
if [[ -z "$changed_at" || -z "$answered_at" ]] || ((changed_at > answered_at)); then
    fs_fail "the rotation did not happen while the payment was being digested (lines '$changed_at' '$answered_at'): inconclusive"
fi
health_at=$(grep -n '"event":"http_request".*"request_id":"health-during-rekey"' "$log3" | cut -d: -f1)
[[ -n "$health_at" ]] && ((health_at < changed_at)) ||
    fs_fail "/health was answered only after the rekey (lines '$health_at' '$changed_at'): SIGHUP stalled the loop"
k_old=$(grep '"event":"pii_key_changed"' "$log3" | sed -n 's/.*"old_pii_key_id":"\([0-9a-f]*\)".*/\1/p')
k_new=$(grep '"event":"pii_key_changed"' "$log3" | sed -n 's/.*"new_pii_key_id":"\([0-9a-f]*\)".*/\1/p')
fs_wait_for 20 '[[ -n "$(digest_of "$pid_slow")" ]]'
read -r kid_msg d_old <<<"$(digest_of "$pid_slow")"
fs_assert_eq "$k_old" "$kid_msg" "a payment digested during the rotation carries the old key id"
pid_slow2=$(post3)
fs_wait_for 20 '[[ -n "$(digest_of "$pid_slow2")" ]]'
read -r kid_msg d_new <<<"$(digest_of "$pid_slow2")"
fs_assert_eq "$k_new" "$kid_msg" "the same payment after the rotation carries the new key id"
[[ "$d_new" != "$d_old" ]] || fs_fail "the old key's digest was served from the new key's cache"
echo "ok: a digest in flight during a rotation stays with its key"
# SIGTERM while a rotation's Argon2 (~1 s) still runs: shutdown waits for it and discards the new
# key, freeing it and wiping its secret (under SANITIZE=1 a leak makes the exit status non-zero).
fs_pii_secret "$secret"
n_hup=$(grep -c '"event":"pii_key_reloaded\|"event":"pii_key_changed"' "$log3")
fs_kill ingest3 HUP
sleep 0.3
fs_kill ingest3 TERM
fs_wait_exit ingest3 15
fs_assert_eq 0 "$FS_EXIT_STATUS" "ingest3 exit status (SIGTERM during a rotation)"
fs_assert_eq "$n_hup" "$(grep -c '"event":"pii_key_reloaded\|"event":"pii_key_changed"' "$log3")" \
    "a rotation that finished after SIGTERM must not come into force"
echo "ok: SIGTERM during a rotation exits 0"

# --- client errors -------------------------------------------------------------------------------
post '{"user_id":'
expect 400 malformed_json "truncated JSON"
[[ "$(field message)" == "line 1 column "* ]] || fs_fail "malformed_json message: $BODY"
post '{"user_id":"a","user_id":"b"}'
expect 400 malformed_json "duplicate key"
post '[1,2]'
expect 400 invalid_body "array body"
post '{"user_id":"u","merchant_id":"m","amount":"-5","currency":"EURO","payment_method":"card"}'
expect 422 validation_failed "two bad fields"
for f in amount currency; do
    [[ "$BODY" == *"\"field\":\"$f\""* ]] || fs_fail "422 does not name $f: $BODY"
done
echo "ok: 422 names amount and currency"
post '{"user_id":"u","merchant_id":"m","amount":"1","currency":"EUR","payment_method":"card","nickname":"x"}'
expect 422 validation_failed "unknown field"
[[ "$BODY" == *'"field":"nickname"'* && "$BODY" == *unknown_field* ]] || fs_fail "unknown field: $BODY"
head -c 70000 /dev/zero | tr '\0' ' ' >"$FS_TEST_DIR/big"
post @"$FS_TEST_DIR/big"
expect 413 payload_too_large "body over max-body-bytes"
http POST /api/v1/payments -H 'Content-Type: text/plain' --data-binary "$valid"
expect 415 unsupported_media_type "text/plain"
http POST /api/v1/payments --data-binary "$valid" # curl's default form content type
expect 415 unsupported_media_type "form content type"
http GET /nope
expect 404 not_found "unknown path"
http GET /api/v1/payments
expect 405 method_not_allowed "GET payments"
fs_assert_eq POST "$(header Allow)" "Allow on payments"
http DELETE /health
expect 405 method_not_allowed "DELETE /health"
fs_assert_eq "GET, HEAD" "$(header Allow)" "Allow on /health"
# A literal path is never read as a payment id (was: 400 invalid_payment_id for "batch").
http GET /api/v1/payments/batch
expect 405 method_not_allowed "GET /api/v1/payments/batch"
fs_assert_eq POST "$(header Allow)" "Allow on the batch path"
fs_assert_eq 405 "$(curl -s -I -o /dev/null -w '%{http_code}' "$BASE/api/v1/payments/batch/")" "HEAD /api/v1/payments/batch/"
# The nil UUID in the path is no payment's, for a read as for an outcome (docs/ingest.md): 400
# (was: a read of it, here 503 for want of a database).
http GET /api/v1/payments/00000000-0000-0000-0000-000000000000
expect 400 invalid_payment_id "GET of the nil UUID"
# JSON that is a scalar is JSON: 400 invalid_body (not an object / array), not malformed_json;
# an NDJSON line "1" is refused like an array's element 1 (was: malformed_json for all of these).
for b in null '"text"' ' 42 ' true; do
    post "$b"
    expect 400 invalid_body "the body $b"
    http POST /api/v1/payments/batch -H 'Content-Type: application/json' --data-binary "$b"
    expect 400 invalid_body "the batch $b"
done
http POST /api/v1/payments/00000000-0000-4000-8000-0000000000aa/outcome -H 'Content-Type: application/json' --data-binary null
expect 400 invalid_body "the outcome null"
http POST /api/v1/payments/batch -H 'Content-Type: application/x-ndjson' --data-binary "$valid
1
null"
expect 200 "" "NDJSON with scalar lines"
[[ "$BODY" == *'"index":1,"status":"rejected","error":"validation_failed"'*'"field":"","code":"invalid_type"'*'"index":2,"status":"rejected","error":"validation_failed"'* ]] ||
    fs_fail "NDJSON scalar lines: $BODY"
echo "ok: scalar JSON is not an object (invalid_body, or invalid_type per batch item)"
# A Content-Encoding ingest does not decode: 415 with Accept-Encoding (RFC 9110), nothing produced
# (was: gzip a 400 malformed_json, and a body labelled br read as plain JSON and accepted).
printf '%s' "$valid" | gzip >"$FS_TEST_DIR/valid.gz"
post @"$FS_TEST_DIR/valid.gz" -H 'Content-Encoding: gzip'
expect 415 unsupported_media_type "a gzip body"
fs_assert_eq identity "$(header Accept-Encoding)" "Accept-Encoding of the 415"
post "$valid" -H 'Content-Encoding: br'
expect 415 unsupported_media_type "a body labelled br"
http POST /api/v1/payments/batch -H 'Content-Type: application/x-ndjson' -H 'Content-Encoding: identity' \
    -H 'Content-Encoding: gzip' --data-binary "$valid"
expect 415 unsupported_media_type "a batch with a second Content-Encoding"
post "$valid" -H 'Content-Encoding: identity'
expect 202 "" "Content-Encoding: identity"
# An outcome's fields have the codes error.v1.json gives them (was: invalid for all three).
# outcome_codes BODY FIELD:CODE...: a 422 naming each FIELD with its CODE
outcome_codes() {
    local f
    http POST /api/v1/payments/00000000-0000-4000-8000-0000000000aa/outcome \
        -H 'Content-Type: application/json' --data-binary "$1"
    expect 422 validation_failed "an outcome with bad fields"
    for f in "${@:2}"; do
        [[ "$BODY" == *"\"field\":\"${f%%:*}\",\"code\":\"${f#*:}\""* ]] || fs_fail "outcome: no $f in $BODY"
    done
}
outcome_codes "{\"outcome\":1,\"reason\":\"$(printf 'r%.0s' {1..501})\",\"known_at\":7}" \
    outcome:invalid_type reason:too_long known_at:invalid_type
outcome_codes '{"outcome":"stolen","reason":["x"],"known_at":"yesterday"}' \
    outcome:invalid reason:invalid_type known_at:invalid
echo "ok: outcome field codes"

# --- idempotency --------------------------------------------------------------------------------
post "$valid" -H 'Idempotency-Key: order-42/attempt'
expect 202 "" "first try with a key"
pid1=$(field payment_id)
post "$valid" -H 'Idempotency-Key: order-42/attempt'
expect 202 "" "retry with the same key"
fs_assert_eq "$pid1" "$(field payment_id)" "same key -> same payment_id"
post "$valid" -H 'Idempotency-Key: order-43'
[[ "$(field payment_id)" != "$pid1" ]] || fs_fail "another key gave the same payment_id"
echo "ok: another key -> another payment_id"
post "${valid%\}},\"payment_id\":\"00000000-0000-4000-8000-000000000001\"}" -H 'Idempotency-Key: order-42/attempt'
expect 422 validation_failed "body payment_id disagrees with the key"
[[ "$BODY" == *'"field":"payment_id"'* ]] || fs_fail "conflict does not name payment_id: $BODY"
# A client's own payment_id in upper case: the 202 names it in lower case, as it is stored (the
# schema's pattern, payment-accepted.v1.json, checked with every answer at the end).
post "${valid%\}},\"payment_id\":\"6F1C2B1E-8A4D-4C3B-9F5E-1A2B3C4D5E6F\"}"
expect 202 "" "a payment_id in upper case"
fs_assert_eq 6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f "$(field payment_id)" "the 202's payment_id"
post "$valid" -H "Idempotency-Key: $(printf 'k%.0s' {1..300})"
expect 400 invalid_idempotency_key "key too long"

# --- numbers too large for jansson: valid JSON (RFC 8259 sets no limit), a 422 naming the field -----
big_body() { printf '{"user_id":"u-big","merchant_id":"m-1","amount":%s,"currency":"EUR","payment_method":"card"%s}' "$1" "${2:-}"; }
for amt in 123456789012345678901234567890 1e400 1E+999; do
    post "$(big_body "$amt")"
    expect 422 validation_failed "amount $amt"
    [[ "$BODY" == *'"field":"amount","code":"out_of_range"'* ]] || fs_fail "amount $amt: $BODY"
done
post "$(big_body -1e400)"
expect 422 validation_failed "amount -1e400"
[[ "$BODY" == *'"field":"amount","code":"not_positive"'* ]] || fs_fail "amount -1e400: $BODY"
post "$(big_body '"1.00"' ',"metadata":{"order":{"n":99999999999999999999999}}')"
expect 422 validation_failed "a huge number in metadata"
[[ "$BODY" == *'"field":"metadata.order.n","code":"out_of_range"'* ]] || fs_fail "metadata: $BODY"
# a long non-ASCII key: the field named is cut to 64 bytes between characters (was: 500)
long_key="a$(printf '\xc3\xa9%.0s' {1..40})"
post "$(big_body '"1.00"' ",\"metadata\":{\"$long_key\":1e400}")"
expect 422 validation_failed "a huge number under a long non-ASCII key"
[[ "$BODY" == *'"field":"metadata.a'*'","code":"out_of_range"'* ]] || fs_fail "long key: $BODY"
python3 -c 'import json,sys; f=json.loads(sys.argv[1])["fields"][0]["field"]; assert len(f.encode()) <= 63, f' "$BODY" ||
    fs_fail "long key: field not cut: $BODY"
post "$(big_body 1e400 ',"user_id":"dup"')"
expect 400 malformed_json "a huge number does not hide a duplicate key"
http POST /api/v1/payments/batch -H 'Content-Type: application/json' \
    --data-binary "[$valid,$(big_body 1e400)]"
expect 200 "" "batch (array) with a huge amount in one item"
[[ "$BODY" == *'"accepted":1,"rejected":1'*'"index":1,"status":"rejected"'*'"field":"amount","code":"out_of_range"'* ]] ||
    fs_fail "batch array: $BODY"
http POST /api/v1/payments/batch -H 'Content-Type: application/x-ndjson' \
    --data-binary "$(big_body 123456789012345678901234567890)
$valid"
expect 200 "" "batch (NDJSON) with a huge amount on one line"
[[ "$BODY" == *'"accepted":1,"rejected":1'*'"index":0,"status":"rejected"'*'"field":"amount","code":"out_of_range"'* ]] ||
    fs_fail "batch NDJSON: $BODY"
echo "ok: huge numbers are field errors (422), per item in batches"

# Batch ids under an Idempotency-Key, pinned: these are the ids the code before batch_fingerprints()
# (O(n^2) repeat counting, a digest context per item) gave (caller "anonymous": auth=false). A
# client retrying an old batch must get the same ids, whatever the implementation.
batch_ids() { grep -o '"payment_id":"[^"]*"' <<<"$BODY" | sed 's/.*:"\(.*\)"/\1/' | tr '\n' ' '; }
pA='{"user_id":"u-pin","merchant_id":"m-1","amount":"10.00","currency":"EUR","payment_method":"card"}'
pB='{"user_id":"u-pin2","merchant_id":"m-1","amount":"20.00","currency":"EUR","payment_method":"card","country":"DE"}'
pA2='{ "user_id" : "u-pin", "merchant_id":"m-1",
 "amount":"10.00","currency":"EUR","payment_method":"card" }'
pR='{"user_id":"u-pin3","merchant_id":"m-1","amount":5.5,"currency":"EUR","payment_method":"card"}'
http POST /api/v1/payments/batch -H 'Content-Type: application/json' -H 'Idempotency-Key: pin-1' \
    --data-binary "[$pA,$pB,$pA,$pA2]"
fs_assert_eq "31d43c99-d3a3-5f8f-a22f-bf5407f81a27 6eeba2bb-d5b7-54b0-98c6-cec7d8270292 665546bf-d88a-5e81-8fb0-1e067c978b96 b1c6dd56-c481-5cbd-bac2-43ae3a3e64c7 " \
    "$(batch_ids)" "pinned batch ids (array read as text, repeats)"
http POST /api/v1/payments/batch -H 'Content-Type: application/json' -H 'Idempotency-Key: pin-1' \
    --data-binary "[$pA,$pR,$pB,$pA]"
fs_assert_eq "31d43c99-d3a3-5f8f-a22f-bf5407f81a27 c7135071-c368-587f-87f7-9c425180c827 6eeba2bb-d5b7-54b0-98c6-cec7d8270292 665546bf-d88a-5e81-8fb0-1e067c978b96 " \
    "$(batch_ids)" "pinned batch ids (array parsed whole)"
http POST /api/v1/payments/batch -H 'Content-Type: application/x-ndjson' -H 'Idempotency-Key: pin-2' \
    --data-binary "$pB
$pA

$pB"
fs_assert_eq "9ebcdfe2-3986-5371-9444-76ee2f31e41b 977965f0-ca26-5ea1-8872-9308b6dbb9c1 4e123c14-5035-567e-b94a-2c4010a4cafb " \
    "$(batch_ids)" "pinned batch ids (NDJSON)"

# --- a batch's 503 names what failed its items ---------------------------------------------------
# ingestq: one worker thread, one task allowed to wait, ~1 s per Argon2 (as ingest3). A payment with
# four new identifiers digests for ~4 s; a second one waits behind it: the queue is full. A batch of
# new identifiers is then refused whole, and its 503 says overloaded, as its items do (was
# broker_unavailable: "the pipeline is down", where "back off on this instance" is meant).
portq=$(fs_free_port)
BASEQ="http://127.0.0.1:$portq"
fs_bg ingestq "$INGEST" --listen-port="$portq" --pii-secret-file="$secret" --auth=false \
    --pii-t-cost=64 --pii-m-cost-kib=16384 --worker-threads=1 --worker-queue=1 -X message.timeout.ms=2000
fs_wait_for 60 curl -sf "$BASEQ/ready"
# pending_q N: true once N digest tasks are queued or running on ingestq
pending_q() {
    curl -fsS "$BASEQ/metrics" |
        awk -v n="$1" '$1 == "fs_ingest_argon2_tasks_pending" { found = 1; ok = $2 >= n } END { exit !(found && ok) }'
}
# postq PATH BODY NAME: posts BODY (JSON) to ingestq; the answer in $FS_TEST_DIR/NAME.{status,body,
# headers}, recorded (from a subshell too: files of its own).
postq() {
    local status
    status=$(curl -s -D "$FS_TEST_DIR/$3.headers" -o "$FS_TEST_DIR/$3.body" -w '%{http_code}' \
        -H 'Content-Type: application/json' --data-binary "$2" "$BASEQ$1") || status=000
    echo "$status" >"$FS_TEST_DIR/$3.status"
    fs_record_answer POST "$1" "$status" "$FS_TEST_DIR/$3.body" "$FS_TEST_DIR/$3.headers"
}
# newpii N: a valid payment with one identifier (an email) that ingestq has not digested yet
newpii() {
    printf '{"user_id":"u-q%s","merchant_id":"m-1","amount":"1.00","currency":"EUR","payment_method":"card","email":"q%s@example.com"}' "$1" "$1"
}
# batchq_is JQ_FILTER MSG: the last batch answer of ingestq (batchq) is a 503 with Retry-After for
# which JQ_FILTER holds
batchq_is() {
    fs_assert_eq 503 "$(cat "$FS_TEST_DIR/batchq.status")" "$2: status"
    tr -d '\r' <"$FS_TEST_DIR/batchq.headers" | grep -qix 'retry-after: 1' || fs_fail "$2: no Retry-After"
    jq -e "$1" "$FS_TEST_DIR/batchq.body" >/dev/null || fs_fail "$2: $(cat "$FS_TEST_DIR/batchq.body")"
}
slowq='{"user_id":"u-slowq","merchant_id":"m-1","amount":"5.00","currency":"EUR","payment_method":"card","email":"slowq@example.com","ip_address":"198.51.100.24","card_fingerprint":"fp-slowq-1","device_info":{"device_id":"dev-slowq-1"}}'
postq /api/v1/payments "$slowq" slowq &
clients=($!)
fs_wait_for 10 pending_q 1
postq /api/v1/payments "$(newpii 0)" waitq &
clients+=($!)
fs_wait_for 10 pending_q 2
postq /api/v1/payments/batch "[$(newpii 1),$(newpii 2)]" batchq
batchq_is '.accepted == 0 and .failed == 2 and .error == "overloaded" and (.message | length > 0)
    and ([.results[].error] == ["overloaded", "overloaded"])' "a batch refused by a full Argon2 queue"
wait "${clients[@]}"
fs_assert_eq "202 202" "$(cat "$FS_TEST_DIR/slowq.status") $(cat "$FS_TEST_DIR/waitq.status")" \
    "the payments that filled the queue"
echo "ok: a batch whose items all failed overloaded answers 503 overloaded"

# --- broker down -> 503 + Retry-After, then back --------------------------------------------------
fs_broker_down
start=$SECONDS
post "$valid" -H 'Idempotency-Key: during-outage'
expect 503 broker_unavailable "broker down"
((SECONDS - start <= 5)) || fs_fail "503 took $((SECONDS - start))s (message.timeout.ms=2000)"
fs_assert_eq 1 "$(header Retry-After)" "Retry-After"
# A batch none of whose items could be stored: 503 + Retry-After, the per-item results with the
# error and a message, as every error body (was: no message). Recorded as a batch answer
# (batch-result.v1.json), not an error body: it is its own shape (docs/ingest.md, Batches).
http POST /api/v1/payments/batch -H 'Content-Type: application/json' --data-binary "[$valid]"
fs_assert_eq 503 "$STATUS" "a batch while the brokers are down"
fs_assert_eq 1 "$(header Retry-After)" "Retry-After of the batch"
jq -e '.accepted == 0 and .failed == 1 and .results[0].status == "failed" and .error == "broker_unavailable"
    and (.message | length > 0)' <<<"$BODY" >/dev/null || fs_fail "the batch's 503 body: $BODY"
# Items failed for different reasons: the most telling code (docs/ingest.md, Batches). On ingestq, an
# item without identifiers goes to the producer (its delivery fails), and of three with new ones the
# single thread and the single waiting place take two at most: one at least is refused overloaded.
# The brokers are down for every instance: broker_unavailable, not overloaded.
postq /api/v1/payments/batch "[$valid,$(newpii 3),$(newpii 4),$(newpii 5)]" batchq
batchq_is '.accepted == 0 and .failed == 4 and .error == "broker_unavailable"
    and .results[0].error == "broker_unavailable" and any(.results[]; .error == "overloaded")' \
    "a batch failed by the outage and by a full Argon2 queue"
fs_kill ingestq TERM
fs_wait_exit ingestq 15
fs_assert_eq 0 "$FS_EXIT_STATUS" "ingestq exit status"
echo "ok: a batch failed broker_unavailable and overloaded answers 503 broker_unavailable"
fs_wait_for 10 '[[ $(curl -s -o /dev/null -w "%{http_code}" "$BASE/ready") == 503 ]]'
echo "ok: /ready is 503 while the brokers are down"
curl -fsS "$BASE/metrics" | grep -qx 'fs_ingest_ready 0' || fs_fail "fs_ingest_ready is not 0 while /ready is 503"
http GET /health
expect 200 "" "/health while the brokers are down"
# A client that gives up before its delivery report must not disturb ingest.
curl -s -o /dev/null --max-time 0.5 -H 'Content-Type: application/json' --data-binary "$valid" \
    "$BASE/api/v1/payments" || true
fs_broker_up
fs_wait_for 20 curl -sf "$BASE/ready"
echo "ok: /ready is 200 again"
curl -fsS "$BASE/metrics" | grep -qx 'fs_ingest_ready 1' || fs_fail "fs_ingest_ready is not 1 while /ready is 200"
post "$valid" -H 'Idempotency-Key: during-outage'
expect 202 "" "broker up again"
fs_alive ingest || fs_fail "ingest died"

# --- SIGTERM with a request in flight -----------------------------------------------------------
# linger.ms=1500 holds the message in librdkafka, so the request is surely in flight at SIGTERM.
port2=$(fs_free_port)
fs_bg ingest2 "$INGEST" --listen-port="$port2" --pii-secret-file="$secret" --auth=false -X linger.ms=1500
fs_wait_for 30 curl -sf "http://127.0.0.1:$port2/ready"
curl -s -o "$FS_TEST_DIR/inflight.body" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "$valid" "http://127.0.0.1:$port2/api/v1/payments" >"$FS_TEST_DIR/inflight.status" &
client=$!
# in flight: received, not answered (the metric counts the scrape itself too)
fs_wait_for 10 "curl -s http://127.0.0.1:$port2/metrics | awk '\$1 == \"fs_ingest_requests_in_flight\" && \$2 >= 2 { ok = 1 } END { exit !ok }'"
fs_kill ingest2 TERM
sleep 0.2
if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port2/health"; then
    fs_fail "ingest still accepts connections while draining"
fi
echo "ok: no new connections while draining"
wait "$client" || true
fs_assert_eq 202 "$(cat "$FS_TEST_DIR/inflight.status")" "in-flight request answered during shutdown"
fs_record_answer POST /api/v1/payments 202 "$FS_TEST_DIR/inflight.body"
inflight_id=$(jq -r .payment_id "$FS_TEST_DIR/inflight.body")
fs_wait_for 20 "fs_topic_dump raw_payments | grep -qF '$inflight_id'" # the 202 meant durable
echo "ok: the payment answered 202 during shutdown is on raw_payments"
fs_wait_exit ingest2 15
fs_assert_eq 0 "$FS_EXIT_STATUS" "ingest exit status after SIGTERM"
grep -q '"event":"stopped"' "$FS_TEST_DIR/ingest2.log" || fs_fail "no stopped line with counts"

# --- a client leaving while its request waits ---------------------------------------------------
# linger.ms=6000 holds the message in librdkafka; the client gives up after 0.5 s. evhttp does not
# read a connection while its request is processed, so ingest used to notice only when the delivery
# report came (the socket in CLOSE-WAIT until then); the connections sweep (every second) notices
# the FIN: client_gone is logged and the connection closed while the payment still waits. The
# payment is produced all the same (it was never acknowledged; a retry with an Idempotency-Key
# would be absorbed).
port4=$(fs_free_port)
fs_bg ingest4 "$INGEST" --listen-port="$port4" --pii-secret-file="$secret" --auth=false -X linger.ms=6000 -X message.timeout.ms=20000
fs_wait_for 30 curl -sf "http://127.0.0.1:$port4/ready"
leaver='{"user_id":"u-leaver-4","merchant_id":"m-1","amount":"5.00","currency":"EUR","payment_method":"card"}'
# leave_early REQUEST_ID BODY: posts BODY to ingest4, gives up after 0.5 s, and waits (3 s) until
# ingest4 has noticed (the sweep runs every second).
leave_early() {
    curl -s -o /dev/null --max-time 0.5 -H 'Content-Type: application/json' -H "X-Request-Id: $1" \
        --data-binary "$2" "http://127.0.0.1:$port4/api/v1/payments" || true
    fs_wait_for 3 grep -q "\"event\":\"client_gone\".*$1" "$FS_TEST_DIR/ingest4.log"
}
leave_early leaver-4 "$leaver"
scrape4=$(curl -fsS "http://127.0.0.1:$port4/metrics")
fs_assert_eq 1 "$(awk '$1 == "fs_ingest_connections" { print $2 }' <<<"$scrape4")" \
    "open connections once the client left (the scrape's own)"
fs_assert_eq 1 "$(awk '$1 == "fs_ingest_clients_gone_total{route=\"payments\"}" { print $2 }' <<<"$scrape4")" \
    "fs_ingest_clients_gone_total of the payments route"
fs_topic_dump raw_payments | grep -qF u-leaver-4 && fs_fail "inconclusive: the payment was delivered before the client left"
echo "ok: a client leaving while its request waits is noticed within the sweep"
fs_wait_for 20 "fs_topic_dump raw_payments | grep -qF u-leaver-4"
echo "ok: its payment is still produced"
# The same during a SIGTERM drain: the drain waits for the delivery of a request whose client left
# (it ended as soon as no request waited for its answer, and the producer's queue was purged).
leave_early leaver-4b "${leaver/u-leaver-4/u-leaver-4b}"
fs_kill ingest4 TERM
fs_wait_exit ingest4 15
fs_assert_eq 0 "$FS_EXIT_STATUS" "ingest4 exit status"
fs_wait_for 10 "fs_topic_dump raw_payments | grep -qF u-leaver-4b"
echo "ok: a left client's payment is still produced when SIGTERM comes before its delivery"
# client-close-check=false: a client that half-closes after its request (shutdown(SHUT_WR), as
# nc -N or socat do) and reads on gets its answer; with the check it would be taken as gone.
port5=$(fs_free_port)
fs_bg ingest5 "$INGEST" --listen-port="$port5" --pii-secret-file="$secret" --auth=false \
    --client-close-check=false -X linger.ms=2500 -X message.timeout.ms=20000
fs_wait_for 30 curl -sf "http://127.0.0.1:$port5/ready"
# half_close PORT BODY: posts BODY to PORT, half-closes, prints the answer's status line (its body
# into $FS_TEST_DIR/half.body).
half_close() {
    python3 - "$1" "$2" "$FS_TEST_DIR/half.body" <<'PY'
import socket, sys
body = sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=15)
s.sendall(b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
s.shutdown(socket.SHUT_WR)
answer = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
head, _, body = answer.partition(b"\r\n\r\n")
with open(sys.argv[3], "wb") as f:
    f.write(body)
print(head.split(b"\r\n", 1)[0].decode(errors="replace"))
PY
}
fs_assert_eq "HTTP/1.1 202 Accepted" "$(half_close "$port5" "${leaver/u-leaver-4/u-half-5}")" \
    "a half-closing client's answer with client-close-check=false"
fs_record_answer POST /api/v1/payments 202 "$FS_TEST_DIR/half.body"
fs_kill ingest5 TERM
fs_wait_exit ingest5 15
fs_assert_eq 0 "$FS_EXIT_STATUS" "ingest5 exit status"

# --- start-up failures ---------------------------------------------------------------------------
rc=0
"$INGEST" --listen-port="$(fs_free_port)" --brokers=127.0.0.1:1 --pii-secret-file="$secret" --auth=false \
    --startup-timeout-ms=1000 >"$FS_TEST_DIR/badbroker.log" 2>&1 || rc=$?
fs_assert_eq 1 "$rc" "unreachable brokers: exit status"
grep -q startup_failed "$FS_TEST_DIR/badbroker.log" || fs_fail "no startup_failed line"
# a malformed database-url: refused at once, without libpq's message (it quoted the password)
rc=0
timeout 20 "$INGEST" --listen-port="$(fs_free_port)" --pii-secret-file="$secret" --auth=false \
    --database-url='postgresql://u:S3cr%ZZet@127.0.0.1:1/x' >"$FS_TEST_DIR/badurl.log" 2>&1 || rc=$?
fs_assert_eq 1 "$rc" "malformed database-url: exit status"
grep -q 'startup_failed.*database-url is not a valid' "$FS_TEST_DIR/badurl.log" || fs_fail "malformed database-url: no clear error"
if grep -q S3cr "$FS_TEST_DIR/badurl.log"; then fs_fail "the database password was logged"; fi
# a SIGHUP while ingest still waits for the brokers does not kill it (its default action did)
rc=0
"$INGEST" --listen-port="$(fs_free_port)" --brokers=127.0.0.1:1 --pii-secret-file="$secret" --auth=false \
    --startup-timeout-ms=3000 >"$FS_TEST_DIR/hup.log" 2>&1 &
hup_pid=$!
# librdkafka's first connection error: ingest_new() runs, after the start-up handlers are in
fs_wait_for 20 grep -q 'Connect to' "$FS_TEST_DIR/hup.log"
kill -HUP "$hup_pid"
wait "$hup_pid" || rc=$?
fs_assert_eq 1 "$rc" "SIGHUP during start-up: exit status (129: killed by it)"
grep -q startup_failed "$FS_TEST_DIR/hup.log" || fs_fail "SIGHUP during start-up: no startup_failed line"
# a SIGTERM there stops it at once, exit 0 (it waited startup-timeout-ms out, then exit 1)
rc=0
"$INGEST" --listen-port="$(fs_free_port)" --brokers=127.0.0.1:1 --pii-secret-file="$secret" --auth=false \
    --startup-timeout-ms=60000 >"$FS_TEST_DIR/term.log" 2>&1 &
term_pid=$!
fs_wait_for 20 grep -q 'Connect to' "$FS_TEST_DIR/term.log"
t0=$SECONDS
kill -TERM "$term_pid"
wait "$term_pid" || rc=$?
fs_assert_eq 0 "$rc" "SIGTERM during start-up: exit status"
((SECONDS - t0 <= 5)) || fs_fail "SIGTERM during start-up: took $((SECONDS - t0)) s"
grep -q '"event":"stopped_during_startup"' "$FS_TEST_DIR/term.log" || fs_fail "SIGTERM during start-up: no stopped_during_startup line"
# a delivery timeout of 0 (librdkafka: none) would hold requests for ever with the brokers down
for prop in message.timeout.ms=0 delivery.timeout.ms=0 message.timeout.ms=3600000; do
    rc=0
    timeout 20 "$INGEST" --listen-port="$(fs_free_port)" --pii-secret-file="$secret" --auth=false \
        -X "$prop" >"$FS_TEST_DIR/timeout0.log" 2>&1 || rc=$?
    fs_assert_eq 1 "$rc" "-X $prop: exit status"
    grep -q 'startup_failed.*message.timeout.ms' "$FS_TEST_DIR/timeout0.log" || fs_fail "-X $prop: no clear error"
done
# no statistics: readiness would never come back after an outage; no success reports: no 202 ever
for prop in statistics.interval.ms=0 delivery.report.only.error=true transactional.id=x; do
    rc=0
    timeout 20 "$INGEST" --listen-port="$(fs_free_port)" --pii-secret-file="$secret" --auth=false \
        -X "$prop" >"$FS_TEST_DIR/prop.log" 2>&1 || rc=$?
    fs_assert_eq 1 "$rc" "-X $prop: exit status"
    grep -q "startup_failed.*${prop%%=*}" "$FS_TEST_DIR/prop.log" || fs_fail "-X $prop: no clear error: $(tail -2 "$FS_TEST_DIR/prop.log")"
done
rc=0
env -u FS_PII_SECRET -u FS_PII_SECRET_FILE "$INGEST" --listen-port="$(fs_free_port)" --auth=false \
    >"$FS_TEST_DIR/nosecret.log" 2>&1 || rc=$?
fs_assert_eq 1 "$rc" "no PII secret: exit status"
grep -q 'no PII secret' "$FS_TEST_DIR/nosecret.log" || fs_fail "no clear error without a PII secret"

# Every answer above against its schema (schemas/json): a change to an answer's shape fails here.
fs_check_answers error.v1.json payment-accepted.v1.json batch-result.v1.json
echo "PASS test_ingest_http"
