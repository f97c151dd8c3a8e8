#!/usr/bin/env bash
# Ingest's production API against the dev broker, PostgreSQL and a scorer: API keys (401 without,
# wrong or malformed, X-API-Key and Bearer, 403 without the scope), rate limits (429 + Retry-After),
# the batch endpoint (array and NDJSON, partial failure, limits, idempotency), outcomes on
# payment_outcomes, Shopify webhooks (good, bad and missing signature: nothing published), the read
# API (pending, decided, 404, 400, PostgreSQL down -> 503 and back; payments:read reads the key's own
# payments only, another's answer exactly like an unknown id; payments:read_all and auth=false read
# every one), idempotency (same key twice -> one row), /metrics, SIGHUP reloading keys, no raw
# personal data in the log, and every answer against its JSON Schema (schemas/json).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup ingest_api
fs_pg_start
fs_broker_start 6

INGEST="$BUILD/bin/fraudshield-ingest"
SHOP=example-store.myshopify.com
SHOP_SECRET=shpss_test_secret_0123456789
ORDER="$REPO/tests/data/shopify-order-create.json"
secret="$FS_TEST_DIR/pii.secret"
keys="$FS_TEST_DIR/api-keys"
fs_pii_secret "$secret"
printf '# shop  secret\n%s %s\n' "$SHOP" "$SHOP_SECRET" >"$FS_TEST_DIR/shops"
newkey() { "$INGEST" keys create --keys-file "$keys" "$@" 2>>"$FS_TEST_DIR/keys.log"; }
KEY=$(newkey --id full --scopes payments:write,payments:read,outcomes:write)
READER=$(newkey --id reader --scopes payments:read_all --rate 3)
PEER=$(newkey --id peer --scopes payments:read)           # reads its own payments only
BACKOFFICE=$(newkey --id backoffice --scopes payments:read_all)
WRITER=$(newkey --id writer --scopes payments:write)
TARGET=$(newkey --id target --scopes payments:write)
LEGACY=$(newkey --id legacy --scopes payments:write)
# a line as keys create wrote it before check tags: 4 fields
awk '$1 == "legacy" { print $1, $2, $3, $4; next } { print }' "$keys" >"$keys.new" && cat "$keys.new" >"$keys"
[[ "$KEY" =~ ^fsk\.full\.[A-Za-z0-9_-]{43}$ ]] || fs_fail "key format: $KEY"
if grep -qF "${KEY#fsk.full.}" "$keys"; then fs_fail "the keys file holds a key in clear"; fi
[[ $(stat -c %a "$keys") == 600 ]] || fs_fail "keys file mode $(stat -c %a "$keys")"
echo "ok: keys created, stored hashed (mode 600)"
# a rate that is not a number is refused (it became 0, unlimited; 4294967297 became 1)
for rate in abc 10x 4294967297 -1 " 5" ""; do
    rc=0
    newkey --id badrate --scopes payments:write --rate "$rate" >/dev/null || rc=$?
    fs_assert_eq 2 "$rc" "keys create --rate '$rate': exit status"
done
if grep -q '^badrate ' "$keys"; then fs_fail "a key with a bad rate was created"; fi
grep -q -- '--rate: abc is not a whole number' "$FS_TEST_DIR/keys.log" || fs_fail "no clear --rate error"

fs_bg scorer env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
port=$(fs_free_port)
BASE="http://127.0.0.1:$port"
fs_bg ingest "$INGEST" --listen-port="$port" --pii-secret-file="$secret" --keys-file="$keys" \
    --shopify-secrets-file="$FS_TEST_DIR/shops" --database-url="$FS_DATABASE_URL" --batch-max=5 \
    --batch-max-body-bytes=8192 --log-level=debug
fs_wait_for 30 curl -sf "$BASE/ready"

http() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -s -X "$method" -D "$FS_TEST_DIR/headers" -o "$FS_TEST_DIR/body" \
        -w '%{http_code}' "$@" "$BASE$path") || STATUS=000
    BODY=$(cat "$FS_TEST_DIR/body" 2>/dev/null || true)
    fs_record_answer "$method" "$path" "$STATUS" "$FS_TEST_DIR/body" "$FS_TEST_DIR/headers"
}
header() { tr -d '\r' <"$FS_TEST_DIR/headers" | sed -n "s/^$1: *//Ip" | head -n 1; }
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$BODY" | head -n 1; }
num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$BODY" | head -n 1; }
expect() {
    fs_assert_eq "$1" "$STATUS" "$3: status"
    [[ -z "$2" ]] || fs_assert_eq "$2" "$(field error)" "$3: error code"
    [[ -n "$(header X-Request-Id)" ]] || fs_fail "$3: no X-Request-Id"
}
JSON=(-H 'Content-Type: application/json')
post() { # post KEY PATH BODY [CURL_ARGS...]
    local key=$1 path=$2 body=$3
    shift 3
    http POST "$path" -H "X-API-Key: $key" "${JSON[@]}" --data-binary "$body" "$@"
}
# status_is WANT ID [CURL_ARGS...]: true once GET /api/v1/payments/ID answers "status" WANT (for
# fs_wait_for; each answer recorded like any other). BASE=... before it asks another instance.
status_is() {
    local want=$1 id=$2
    shift 2
    http GET "/api/v1/payments/$id" "$@"
    [[ "$(field status)" == "$want" ]]
}
pay() { printf '{"user_id":"%s","merchant_id":"m-1","amount":"%s","currency":"EUR","payment_method":"card","country":"DE"%s}' "$1" "$2" "${3:-}"; }
raw_count() { fs_topic_count raw_payments; }

# --- authentication and scopes -------------------------------------------------------------------
http POST /api/v1/payments "${JSON[@]}" --data-binary "$(pay u-1 10)"
expect 401 unauthorized "no key"
fs_assert_eq Bearer "$(header WWW-Authenticate)" "WWW-Authenticate"
post "${KEY%?}x" /api/v1/payments "$(pay u-1 10)"
expect 401 unauthorized "wrong key (right id)"
post "fsk.nobody.abc" /api/v1/payments "$(pay u-1 10)"
expect 401 unauthorized "unknown key id"
post "not-a-key" /api/v1/payments "$(pay u-1 10)"
expect 401 unauthorized "malformed key"
post "${KEY%?}x" /api/v1/payments "$(pay u-1 10)"
expect 401 unauthorized "wrong key again (cached as invalid)"
http POST /api/v1/payments -H "Authorization: Bearer $KEY" "${JSON[@]}" --data-binary "$(pay u-1 10)"
expect 202 "" "Authorization: Bearer"
post "$KEY" /api/v1/payments "$(pay u-1 11)"
expect 202 "" "X-API-Key"
http POST /api/v1/payments -H "X-API-Key: $READER" -H "Authorization: Bearer $KEY" "${JSON[@]}" --data-binary "$(pay u-1 12)"
expect 401 unauthorized "two different keys (X-API-Key and Bearer)"
http POST /api/v1/payments -H "X-API-Key: $KEY" -H "Authorization: Bearer $KEY" "${JSON[@]}" --data-binary "$(pay u-1 12)"
expect 202 "" "the same key in both headers"
# An empty X-API-Key (a client library's default header) is no second key (was: 401 "two different
# API keys" next to a right Bearer key); alone it is no key at all.
http POST /api/v1/payments -H 'X-API-Key;' -H "Authorization: Bearer $KEY" "${JSON[@]}" --data-binary "$(pay u-1 12)"
expect 202 "" "an empty X-API-Key and a Bearer key"
http POST /api/v1/payments -H 'X-API-Key;' "${JSON[@]}" --data-binary "$(pay u-1 12)"
expect 401 unauthorized "an empty X-API-Key alone"
# Guessing at a key id: each made-up secret would cost an Argon2 run on the workers that
# pseudonymizing shares. A key with a check tag (keys create writes one) refuses them without
# Argon2; one without (an older line) gets at most auth-verify-rate (2 a second per key id)
# checks, the rest 429. The key's owner gets through. (The old code ran Argon2 for all.)
# guess ID FILE: 30 concurrent guesses at key id ID, their statuses into FILE
guess() {
    local pids=() i
    for i in $(seq 1 30); do
        curl -s -o /dev/null -w '%{http_code}\n' -X POST "$BASE/api/v1/payments" "${JSON[@]}" \
            -H "X-API-Key: fsk.$1.guess$i$RANDOM" --data-binary "$(pay u-g 1)" >>"$2" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}" || true
}
verifications() { curl -s "$BASE/metrics" | sed -n 's/^fs_ingest_key_verifications_total \([0-9]*\)$/\1/p'; }
v0=$(verifications)
guess target "$FS_TEST_DIR/guesses.tagged"
fs_assert_eq 30 "$(grep -c '^401$' "$FS_TEST_DIR/guesses.tagged" || true)" "401 for every guess at a tagged key ($(sort "$FS_TEST_DIR/guesses.tagged" | uniq -c | tr '\n' ' '))"
fs_assert_eq "$v0" "$(verifications)" "Argon2 verifications for the guesses at a tagged key"
guess legacy "$FS_TEST_DIR/guesses"
guessed=$(grep -c '^401$' "$FS_TEST_DIR/guesses" || true)
limited=$(grep -c '^429$' "$FS_TEST_DIR/guesses" || true)
fs_assert_eq 30 "$((guessed + limited))" "401 or 429 for every guess at an untagged key ($(sort "$FS_TEST_DIR/guesses" | uniq -c | tr '\n' ' '))"
(( guessed <= 6 )) || fs_fail "$guessed guesses were checked with Argon2 (at most 2 a second expected)"
http GET /metrics
grep -q '^fs_ingest_auth_failures_total{reason="verify_limited"} [1-9]' <<<"$BODY" ||
    fs_fail "no verify_limited auth failures counted"
post "$TARGET" /api/v1/payments "$(pay u-t 1)"
expect 202 "" "the tagged key's owner during the guesses (no budget used up)"
sleep 1.2
post "$LEGACY" /api/v1/payments "$(pay u-t 1)"
expect 202 "" "the untagged key's owner once the bucket refilled"
echo "ok: 30 guesses at a tagged key id cost no Argon2; at an untagged one $guessed, the rest 429"
# Guesses spread over many untagged key ids pass each id's budget; auth-max-pending bounds them
# all: a second instance allowing 1 pending check answers the guesses beyond it 503 overloaded
# (with Retry-After) instead of queueing Argon2 runs ahead of the digests of new identifiers.
# Then the owner of one of the keys gets through. (The old code ran Argon2 for every one.)
multi_keys="$FS_TEST_DIR/api-keys.multi"
cp "$keys" "$multi_keys"
for i in 1 2 3 4 5 6 7 8; do
    "$INGEST" keys create --keys-file "$multi_keys" --id "old$i" --scopes payments:write \
        2>>"$FS_TEST_DIR/keys.log" >"$FS_TEST_DIR/old$i.key"
done
awk '$1 ~ /^old[0-9]$/ { print $1, $2, $3, $4; next } { print }' "$multi_keys" >"$multi_keys.new" &&
    cat "$multi_keys.new" >"$multi_keys"
port2=$(fs_free_port)
fs_bg ingest_pending "$INGEST" --listen-port="$port2" --pii-secret-file="$secret" \
    --keys-file="$multi_keys" --auth-max-pending=1 --worker-threads=1 --log-level=warn
fs_wait_for 30 curl -sf "http://127.0.0.1:$port2/ready"
pids=()
for i in $(seq 1 24); do
    curl -s -o /dev/null -w '%{http_code} %header{retry-after}\n' -X POST \
        "http://127.0.0.1:$port2/api/v1/payments" "${JSON[@]}" \
        -H "X-API-Key: fsk.old$(( (i - 1) % 8 + 1 )).guess$i$RANDOM" --data-binary "$(pay u-g 1)" \
        >>"$FS_TEST_DIR/guesses.pending" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}" || true
summary=$(cut -d' ' -f1 "$FS_TEST_DIR/guesses.pending" | sort | uniq -c | tr '\n' ' ')
fs_assert_eq 24 "$(grep -cE '^(401|429|503) ' "$FS_TEST_DIR/guesses.pending" || true)" \
    "401, 429 or 503 for every guess at 8 untagged ids ($summary)"
overloaded=$(grep -c '^503 ' "$FS_TEST_DIR/guesses.pending" || true)
(( overloaded >= 1 )) || fs_fail "no guess was refused 503 with one pending check allowed ($summary)"
grep -q '^503 [0-9]' "$FS_TEST_DIR/guesses.pending" || fs_fail "a 503 without Retry-After ($summary)"
curl -s "http://127.0.0.1:$port2/metrics" >"$FS_TEST_DIR/metrics.pending"
grep -q '^fs_ingest_auth_failures_total{reason="verify_overloaded"} [1-9]' "$FS_TEST_DIR/metrics.pending" ||
    fs_fail "no verify_overloaded auth failures counted"
sleep 1.2
BASE="http://127.0.0.1:$port2" post "$(cat "$FS_TEST_DIR/old3.key")" /api/v1/payments "$(pay u-t 1)"
expect 202 "" "an untagged key's owner after the guesses"
fs_kill ingest_pending
fs_wait_exit ingest_pending 30
echo "ok: 24 guesses over 8 untagged key ids with one pending check allowed: $overloaded refused 503 ($summary)"
post "$READER" /api/v1/payments "$(pay u-1 10)"
expect 403 forbidden "payments:read_all key posting"
[[ "$BODY" == *payments:write* ]] || fs_fail "403 does not name the scope: $BODY"
http GET /api/v1/payments/00000000-0000-4000-8000-000000000000 -H "X-API-Key: $WRITER"
expect 403 forbidden "payments:write key reading"
post "$WRITER" /api/v1/payments/00000000-0000-4000-8000-000000000000/outcome '{"outcome":"chargeback"}'
expect 403 forbidden "payments:write key posting an outcome"
for p in /health /ready /metrics; do
    http GET "$p"
    fs_assert_eq 200 "$STATUS" "$p needs no key"
done

# --- idempotency: same key twice -> one payment, one row ----------------------------------------
post "$KEY" /api/v1/payments "$(pay u-idem 42.00)" -H 'Idempotency-Key: order-9001'
expect 202 "" "first try"
pid_idem=$(field payment_id)
post "$KEY" /api/v1/payments "$(pay u-idem 42.00)" -H 'Idempotency-Key: order-9001'
expect 202 "" "retry"
fs_assert_eq "$pid_idem" "$(field payment_id)" "same key -> same payment_id"
post "$WRITER" /api/v1/payments "$(pay u-idem 42.00)" -H 'Idempotency-Key: order-9001'
[[ "$(field payment_id)" != "$pid_idem" ]] || fs_fail "another API key's Idempotency-Key gave the same payment"
echo "ok: Idempotency-Key is per API key"
fs_wait_for 30 "[[ \$(fs_psql \"SELECT count(*) FROM decisions WHERE payment_id = '$pid_idem'\") == 1 ]]"
sleep 1 # the duplicate message, had it been stored, would be there by now
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '$pid_idem'")" "one row for two posts"

# --- read API ----------------------------------------------------------------------------------
http GET "/api/v1/payments/$pid_idem" -H "X-API-Key: $KEY"
expect 200 "" "GET a stored payment"
fs_assert_eq decided "$(field status)" "status decided"
[[ "$(field decision)" =~ ^(allow|review|block)$ ]] || fs_fail "no decision in $BODY"
[[ "$BODY" == *'"score":'* && "$BODY" == *'"reasons":['* && "$BODY" == *'"rules_version":'* ]] ||
    fs_fail "decision details missing: $BODY"
http GET /api/v1/payments/6f1c0a9e-0000-4000-8000-00000000abcd -H "X-API-Key: $KEY"
expect 404 not_found "unknown payment"
UNKNOWN_BODY=$BODY
http GET /api/v1/payments/not-a-uuid -H "X-API-Key: $KEY"
expect 400 invalid_payment_id "malformed id"
# persisted: stored without a decision (the scorer writes both in one transaction; here by hand),
# {"payment_id","status","persisted_at"} and no more (payment-status.v1.json, checked at the end)
pid_persisted=6f1c0a9e-0000-4000-8000-00000000beef
fs_psql "INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
    payment_method, event_time, ingest_time, source_partition, source_offset, source)
    VALUES ('$pid_persisted', 'u-persisted', 'm-1', 100, 'EUR', 2, 'card', now(), now(), 0, 0, 'full')" >/dev/null
http GET "/api/v1/payments/$pid_persisted" -H "X-API-Key: $KEY"
expect 200 "" "GET a payment stored without a decision"
fs_assert_eq persisted "$(field status)" "status persisted"
# pending: accepted while no scorer runs (an amount that makes rules hit: reasons to read below)
fs_kill scorer TERM
fs_wait_exit scorer 30
post "$KEY" /api/v1/payments "$(pay u-pending 6000.00)"
pid_pending=$(field payment_id)
http GET "/api/v1/payments/$pid_pending" -H "X-API-Key: $KEY"
expect 200 "" "GET before a scorer stored it"
fs_assert_eq pending "$(field status)" "accepted, not yet stored -> pending"
# Tenant isolation (OWASP API1): payments:read reads the key's own payments (payments.source = its
# key id); another's answers exactly like an unknown id, pending or stored. payments:read_all reads
# them all. (The old code answered any payments:read key for any payment.)
# not_yours WHAT KEY ID: KEY gets the unknown id's 404, body and all
not_yours() {
    http GET "/api/v1/payments/$3" -H "X-API-Key: $2"
    expect 404 not_found "$1"
    fs_assert_eq "$UNKNOWN_BODY" "$BODY" "$1: the body of an unknown id"
}
not_yours "another key's pending payment (payments:read)" "$PEER" "$pid_pending"
http GET "/api/v1/payments/$pid_pending" -H "X-API-Key: $BACKOFFICE"
expect 200 "" "another key's pending payment (payments:read_all)"
fs_assert_eq pending "$(field status)" "payments:read_all: pending"
fs_bg scorer env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 status_is decided "$pid_pending" -H "X-API-Key: $KEY"
[[ "$BODY" == *'"code":"VERY_HIGH_VALUE"'* ]] || fs_fail "no reasons in the decided answer: $BODY"
echo "ok: pending -> decided once a scorer stored it"
fs_assert_eq full "$(fs_psql "SELECT source FROM payments WHERE payment_id = '$pid_pending'")" "payments.source"
not_yours "another key's stored payment (payments:read)" "$PEER" "$pid_pending"
http GET "/api/v1/payments/$pid_pending" -H "X-API-Key: $BACKOFFICE"
expect 200 "" "another key's stored payment (payments:read_all)"
fs_assert_eq decided "$(field status)" "payments:read_all: decided"
# a payment of unknown source (NULL: older rows, other producers): payments:read_all only. Its
# poster gets 404 too, not "pending": this instance still remembers the id as accepted from it, but
# a payment stored as another's is not pending for it.
fs_psql "UPDATE payments SET source = NULL WHERE payment_id = '$pid_pending'" >/dev/null
not_yours "a payment of unknown source (payments:read, its poster)" "$KEY" "$pid_pending"
http GET "/api/v1/payments/$pid_pending" -H "X-API-Key: $BACKOFFICE"
expect 200 "" "a payment of unknown source (payments:read_all)"
fs_assert_eq decided "$(field status)" "payments:read_all: unknown source, decided"
# auth=false (an explicit setting): every payment stays readable, as before
port_open=$(fs_free_port)
fs_bg ingest_open "$INGEST" --listen-port="$port_open" --pii-secret-file="$secret" --auth=false \
    --database-url="$FS_DATABASE_URL" --log-level=warn
fs_wait_for 30 curl -sf "http://127.0.0.1:$port_open/ready"
for p in "$pid_pending" "$pid_idem"; do
    BASE="http://127.0.0.1:$port_open" fs_wait_for 30 status_is decided "$p"
done
fs_kill ingest_open
fs_wait_exit ingest_open 30
echo "ok: payments:read reads its own payments only; payments:read_all and auth=false every one"

# --- rate limit: reader has 3 requests/s ---------------------------------------------------------
codes=""
for i in 1 2 3 4 5; do
    http GET "/api/v1/payments/$pid_idem" -H "X-API-Key: $READER"
    codes="$codes $STATUS"
    [[ $STATUS == 429 ]] && break
done
[[ "$codes" == *429 ]] || fs_fail "no 429 within 5 quick requests at 3/s: $codes"
expect 429 rate_limited "over the rate"
[[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]] || fs_fail "429 without Retry-After"
sleep 1.2
http GET "/api/v1/payments/$pid_idem" -H "X-API-Key: $READER"
expect 200 "" "after the bucket refilled"

# --- batch -------------------------------------------------------------------------------------
before=$(raw_count)
post "$KEY" /api/v1/payments/batch "[$(pay b-1 1.00),{\"user_id\":\"b-2\",\"amount\":\"-1\"},$(pay b-3 3.00 ',"email":"batch.secret@example.com"')]"
expect 200 "" "batch with one invalid item"
fs_assert_eq 2 "$(num accepted)" "accepted"
fs_assert_eq 1 "$(num rejected)" "rejected"
results=$(sed 's/"index"/\n"index"/g' <<<"$BODY" | grep '^"index"')
fs_assert_eq 3 "$(wc -l <<<"$results")" "one result per item"
[[ "$(sed -n 1p <<<"$results")" == '"index":0,"status":"accepted","payment_id":'* ]] || fs_fail "item 0: $results"
[[ "$(sed -n 2p <<<"$results")" == '"index":1,"status":"rejected","error":"validation_failed"'* ]] || fs_fail "item 1: $results"
[[ "$(sed -n 2p <<<"$results")" == *'"field":"merchant_id"'*'"field":"amount"'* ]] || fs_fail "item 1 fields: $results"
[[ "$(sed -n 3p <<<"$results")" == '"index":2,"status":"accepted"'* ]] || fs_fail "item 2: $results"
fs_wait_for 20 fs_topic_has raw_payments $((before + 2))
sleep 0.5
fs_assert_eq $((before + 2)) "$(raw_count)" "only the accepted items are on raw_payments"
ndjson=$(printf '%s\n{"broken\n\n%s\n' "$(pay n-1 1.00)" "$(pay n-2 2.00)")
http POST /api/v1/payments/batch -H "X-API-Key: $KEY" -H 'Content-Type: application/x-ndjson' --data-binary "$ndjson"
expect 200 "" "NDJSON with a malformed line"
fs_assert_eq 2 "$(num accepted)" "NDJSON accepted"
[[ "$BODY" == *'"index":1,"status":"rejected","error":"malformed_json"'* ]] || fs_fail "NDJSON line 2: $BODY"
# Errors name the body's line (blank lines count) and never quote the input (it may be personal).
ndjson=$(printf '%s\n\n\n{"email":"alice.sec\xff@example.com"}\n' "$(pay n-3 1.00)")
http POST /api/v1/payments/batch -H "X-API-Key: $KEY" -H 'Content-Type: application/x-ndjson' --data-binary "$ndjson"
expect 200 "" "NDJSON with invalid UTF-8 on line 4"
[[ "$BODY" == *'"index":1,"status":"rejected","error":"malformed_json","message":"line 4 '* ]] || fs_fail "NDJSON line number: $BODY"
[[ "$BODY" != *alice* ]] || fs_fail "the error quotes the input: $BODY"
post "$KEY" /api/v1/payments '{"user_id":"u","email":"bob.sec'$'\xff''@example.com"}'
expect 400 malformed_json "invalid UTF-8"
[[ "$BODY" != *bob* ]] || fs_fail "the error quotes the input: $BODY"
post "$KEY" /api/v1/payments/batch "[$(pay i-1 1.00),$(pay i-2 2.00)]" -H 'Idempotency-Key: batch-77'
first=$(grep -o '"payment_id":"[^"]*"' <<<"$BODY" | tr '\n' ' ')
post "$KEY" /api/v1/payments/batch "[$(pay i-1 1.00),$(pay i-2 2.00)]" -H 'Idempotency-Key: batch-77'
fs_assert_eq "$first" "$(grep -o '"payment_id":"[^"]*"' <<<"$BODY" | tr '\n' ' ')" "batch retry with the same key -> same ids"
# Ids follow the items, not their positions: resending only the second item (say it had failed),
# or the two in another order, or re-indented, gives each the id it had; never another item's id
# (the scorer would drop the resent payment as that one's duplicate).
id1=$(grep -o '"payment_id":"[^"]*"' <<<"$BODY" | sed -n 1p)
id2=$(grep -o '"payment_id":"[^"]*"' <<<"$BODY" | sed -n 2p)
post "$KEY" /api/v1/payments/batch "[$(pay i-2 2.00)]" -H 'Idempotency-Key: batch-77'
fs_assert_eq "$id2" "$(grep -o '"payment_id":"[^"]*"' <<<"$BODY")" "the second item resent alone keeps its id"
post "$KEY" /api/v1/payments/batch "[ $(pay i-2 2.00) ,
  $(pay i-1 1.00) ]" -H 'Idempotency-Key: batch-77'
fs_assert_eq "$id2 $id1 " "$(grep -o '"payment_id":"[^"]*"' <<<"$BODY" | tr '\n' ' ')" "reordered and re-indented: the same ids"
post "$KEY" /api/v1/payments/batch "[$(pay i-3 3.00)]" -H 'Idempotency-Key: batch-77'
new_id=$(grep -o '"payment_id":"[^"]*"' <<<"$BODY")
[[ -n "$new_id" && "$new_id" != "$id1" && "$new_id" != "$id2" ]] || fs_fail "another payment under the same key got an existing id: $new_id"
# The documented retry of a failed item: resent with its payment_id (and the same key): accepted.
pid2=$(sed 's/"payment_id":"\(.*\)"/\1/' <<<"$id2")
post "$KEY" /api/v1/payments/batch "[$(pay i-2 2.00 ",\"payment_id\":\"$pid2\"")]" -H 'Idempotency-Key: batch-77'
fs_assert_eq "$id2" "$(grep -o '"payment_id":"[^"]*"' <<<"$BODY")" "an item resent with its payment_id"
# Two identical items are two payments (the second gets its own id), the same on a retry.
post "$KEY" /api/v1/payments/batch "[$(pay twin 5.00),$(pay twin 5.00)]" -H 'Idempotency-Key: twins-1'
twins=$(grep -o '"payment_id":"[^"]*"' <<<"$BODY" | sort -u | wc -l)
fs_assert_eq 2 "$twins" "identical items in one batch get distinct ids"
echo "ok: batch ids follow the items' content"
six="[$(pay s 1),$(pay s 1),$(pay s 1),$(pay s 1),$(pay s 1),$(pay s 1)]"
post "$KEY" /api/v1/payments/batch "$six"
expect 413 too_many_items "6 items, batch-max 5"
post "$KEY" /api/v1/payments/batch "[$(pay big 1 ",\"metadata\":{\"pad\":\"$(head -c 9000 /dev/zero | tr '\0' x)\"}")]"
expect 413 payload_too_large "body over batch-max-body-bytes"
post "$KEY" /api/v1/payments/batch '[{"user_id":'
expect 400 malformed_json "malformed array"
post "$KEY" /api/v1/payments/batch '[]'
expect 400 empty_batch "empty array"
post "$KEY" /api/v1/payments/batch "$(pay o 1)"
expect 400 invalid_body "an object, not an array"
http POST /api/v1/payments/batch -H "X-API-Key: $KEY" -H 'Content-Type: text/csv' --data-binary 'a,b'
expect 415 unsupported_media_type "batch as CSV"

# --- outcomes ------------------------------------------------------------------------------------
post "$KEY" "/api/v1/payments/$pid_idem/outcome" '{"outcome":"confirmed_fraud","reason":"cardholder dispute","known_at":"2026-11-01T10:00:00Z"}' -H 'Idempotency-Key: case-1'
expect 202 "" "outcome"
oid=$(field outcome_id)
fs_assert_eq "$pid_idem" "$(field payment_id)" "outcome payment_id"
post "$KEY" "/api/v1/payments/$pid_idem/outcome" '{"outcome":"confirmed_fraud","reason":"cardholder dispute","known_at":"2026-11-01T10:00:00Z"}' -H 'Idempotency-Key: case-1'
fs_assert_eq "$oid" "$(field outcome_id)" "outcome retry -> same outcome_id"
# the same key for another payment's label: another label (never a duplicate of the first)
post "$KEY" "/api/v1/payments/0b0b0b0b-0000-4000-8000-000000000001/outcome" '{"outcome":"chargeback"}' -H 'Idempotency-Key: case-1'
expect 202 "" "outcome of another payment, same key"
[[ "$(field outcome_id)" != "$oid" ]] || fs_fail "one Idempotency-Key gave two payments' labels the same outcome_id"
post "$KEY" "/api/v1/payments/0B0B0B0B-0000-4000-8000-000000000002/outcome" '{"outcome":"legitimate"}'
expect 202 "" "outcome of a payment id in upper case"
fs_assert_eq 0b0b0b0b-0000-4000-8000-000000000002 "$(field payment_id)" "the outcome's payment_id, lower case"
fs_wait_for 20 fs_topic_has payment_outcomes 1
line=$(fs_topic_dump payment_outcomes | grep -F "$pid_idem" | head -n 1)
fs_assert_eq "$pid_idem" "$(cut -f3 <<<"$line")" "payment_outcomes key = payment_id"
[[ ",$(cut -f4 <<<"$line")," == *",schema_version=1,"*",outcome_id=$oid,"* ]] || fs_fail "outcome headers: $line"
for f in '"outcome":"confirmed_fraud"' '"known_at":"2026-11-01T10:00:00.000Z"' '"reason":"cardholder dispute"' '"source":"full"'; do
    [[ "$(cut -f5 <<<"$line")" == *"$f"* ]] || fs_fail "outcome message lacks $f: $line"
done
echo "ok: outcome message on payment_outcomes"
post "$KEY" "/api/v1/payments/$pid_idem/outcome" '{"outcome":"stolen","color":"red"}'
expect 422 validation_failed "bad outcome"
[[ "$BODY" == *'"field":"outcome"'* && "$BODY" == *'"field":"color"'* ]] || fs_fail "422 fields: $BODY"
post "$KEY" "/api/v1/payments/$pid_idem/outcome" '{"outcome":"legitimate","known_at":"yesterday"}'
expect 422 validation_failed "bad known_at"
# the reason goes to payment_outcomes and PostgreSQL as it is: no raw personal data in it
for r in 'customer Bob.Smith@example.com called' 'card 4111 1111 1111 1111 reported stolen'; do
    post "$KEY" "/api/v1/payments/$pid_idem/outcome" "{\"outcome\":\"confirmed_fraud\",\"reason\":\"$r\"}"
    expect 422 validation_failed "a reason with personal data"
    [[ "$BODY" == *'"field":"reason","code":"personal_data"'* ]] || fs_fail "reason with personal data: $BODY"
done
# Times the scorer could not read back (year 0, past 9999) or labels from the future: 422, not a
# 202 for a message bound for the dead-letter topic.
for t in 0000-01-01T00:00:00Z 9999-12-31T23:59:59-23:59 2999-01-01T00:00:00Z; do
    post "$KEY" "/api/v1/payments/$pid_idem/outcome" "{\"outcome\":\"legitimate\",\"known_at\":\"$t\"}"
    expect 422 validation_failed "known_at $t"
    [[ "$BODY" == *'"field":"known_at"'* ]] || fs_fail "known_at $t: $BODY"
done
post "$KEY" /api/v1/payments/12345/outcome '{"outcome":"legitimate"}'
expect 400 invalid_payment_id "outcome for a malformed id"
post "$KEY" /api/v1/payments/00000000-0000-0000-0000-000000000000/outcome '{"outcome":"legitimate"}'
expect 400 invalid_payment_id "outcome for the nil UUID (no payment has it)"

# --- Shopify -----------------------------------------------------------------------------------
sig=$(openssl dgst -sha256 -hmac "$SHOP_SECRET" -binary "$ORDER" | base64)
shopify() { http POST /webhooks/orders/create "${JSON[@]}" -H "X-Shopify-Shop-Domain: $SHOP" -H 'X-Shopify-Topic: orders/create' --data-binary @"$ORDER" "$@"; }
before=$(raw_count)
shopify -H "X-Shopify-Hmac-Sha256: AAAA${sig:4}"
expect 401 invalid_signature "wrong signature"
shopify
expect 401 invalid_signature "missing signature"
http POST /webhooks/orders/create "${JSON[@]}" -H "X-Shopify-Shop-Domain: other.myshopify.com" -H "X-Shopify-Hmac-Sha256: $sig" --data-binary @"$ORDER"
expect 401 invalid_signature "unknown shop"
sleep 0.5
fs_assert_eq "$before" "$(raw_count)" "nothing published for a bad signature"
shopify -H "X-Shopify-Hmac-Sha256: $sig"
expect 202 "" "signed order"
shop_pid=$(field payment_id)
http GET "/api/v1/payments/$shop_pid" -H "X-API-Key: $BACKOFFICE"
expect 200 "" "a Shopify payment, pending (payments:read_all)"
shopify -H "X-Shopify-Hmac-Sha256: $sig"
fs_assert_eq "$shop_pid" "$(field payment_id)" "a redelivered order is the same payment"
# the domain is case-insensitive for the secret, so it is for the payment too: a signed order
# replayed under EXAMPLE-Store... is the same payment, not a new one with another merchant_id
http POST /webhooks/orders/create "${JSON[@]}" -H "X-Shopify-Shop-Domain: ${SHOP^^}" -H 'X-Shopify-Topic: orders/create' \
    -H "X-Shopify-Hmac-Sha256: $sig" --data-binary @"$ORDER"
expect 202 "" "the order under the shop domain in upper case"
fs_assert_eq "$shop_pid" "$(field payment_id)" "the order under the shop domain in upper case: the same payment"
fs_wait_for 20 fs_topic_has raw_payments $((before + 1))
order_msg=$(fs_topic_dump raw_payments | grep -F "$shop_pid" | head -n 1)
for f in '"merchant_id":"example-store.myshopify.com"' '"amount":"164.80"' '"user_id":"shopify:7390192844854"' '"email_digest":"'; do
    [[ "$order_msg" == *"$f"* ]] || fs_fail "Shopify payment lacks $f"
done
if grep -qF 'lena.schmidt@example.de' <<<"$order_msg"; then fs_fail "raw email on the topic"; fi
echo "ok: Shopify order mapped and pseudonymized"
fs_wait_for 60 status_is decided "$shop_pid" -H "X-API-Key: $BACKOFFICE"
not_yours "a Shopify payment (payments:read)" "$KEY" "$shop_pid"
echo "ok: a Shopify payment reads with payments:read_all only"
# A free order (total 0): 200 "ignored", nothing published (a 422 would be retried by Shopify for
# hours and count against the webhook subscription).
sed -e 's/"total_price": "164.80"/"total_price": "0.00"/' -e 's/"id": 5704781545782/"id": 5704781545799/' \
    "$ORDER" >"$FS_TEST_DIR/free-order.json"
grep -q '"total_price": "0.00"' "$FS_TEST_DIR/free-order.json" || fs_fail "the free order fixture was not made"
free_sig=$(openssl dgst -sha256 -hmac "$SHOP_SECRET" -binary "$FS_TEST_DIR/free-order.json" | base64)
before=$(raw_count)
http POST /webhooks/orders/create "${JSON[@]}" -H "X-Shopify-Shop-Domain: $SHOP" -H 'X-Shopify-Topic: orders/create' \
    -H "X-Shopify-Hmac-Sha256: $free_sig" --data-binary @"$FS_TEST_DIR/free-order.json"
expect 200 "" "free order"
fs_assert_eq ignored "$(field status)" "free order status"
sleep 0.5
fs_assert_eq "$before" "$(raw_count)" "nothing published for a free order"

# --- SIGHUP: new keys take effect, removed ones stop working --------------------------------------
LATE=$(newkey --id late --scopes payments:write)
post "$LATE" /api/v1/payments "$(pay u-late 1)"
expect 401 unauthorized "a key created after start, before SIGHUP"
fs_kill ingest HUP
fs_wait_for 10 "grep -q '\"event\":\"reloaded\"' '$FS_TEST_DIR/ingest.log'"
post "$LATE" /api/v1/payments "$(pay u-late 1)"
expect 202 "" "the new key after SIGHUP"
grep -v '^writer ' "$keys" >"$keys.new" && mv "$keys.new" "$keys"
fs_kill ingest HUP
fs_wait_for 10 "(( \$(grep -c '\"event\":\"reloaded\"' '$FS_TEST_DIR/ingest.log') >= 2 ))"
post "$WRITER" /api/v1/payments "$(pay u-w 1)"
expect 401 unauthorized "a removed key after SIGHUP"

# --- PostgreSQL down -> 503, and back -------------------------------------------------------------
fs_pg_stop fast
http GET "/api/v1/payments/$pid_idem" -H "X-API-Key: $KEY"
expect 503 database_unavailable "PostgreSQL down"
[[ -n "$(header Retry-After)" ]] || fs_fail "503 without Retry-After"
fs_pg_restart
fs_wait_for 30 status_is decided "$pid_idem" -H "X-API-Key: $KEY"
echo "ok: the read pool reconnects"

# --- metrics, logs --------------------------------------------------------------------------------
http GET /metrics
for m in 'fs_ingest_requests_total{route="payments",status="202"}' 'fs_ingest_requests_total{route="payments_batch",status="200"}' \
    'fs_ingest_auth_failures_total{reason="invalid"}' 'fs_ingest_auth_failures_total{reason="missing"}' \
    'fs_ingest_auth_failures_total{reason="scope"}' 'fs_ingest_auth_failures_total{reason="shopify_signature"}' \
    'fs_ingest_rate_limited_total' 'fs_ingest_request_duration_seconds_bucket{route="payments",le="0.005"}' \
    'fs_ingest_requests_in_flight' 'fs_ingest_producer_queue_depth' 'fs_ingest_key_cache_hit_ratio' \
    'fs_ingest_digest_cache_hit_ratio' 'fs_ingest_digest_cache_misses_total' 'fs_ingest_payments_total{result="accepted"}' \
    'fs_ingest_ready 1' 'fs_ingest_delivery_failures_total 0' \
    'fs_ingest_requests_total{route="payments",status="500"} 0' \
    'fs_ingest_requests_total{route="shopify_orders_create",status="500"} 0' \
    'fs_ingest_delivery_duration_seconds_bucket{le="0.005"}'; do
    grep -qF "$m" <<<"$BODY" || fs_fail "/metrics lacks $m"
done
# Every delivery is timed: as many observations as messages the broker took (payments, outcomes).
delivered=$(sed -n 's/^fs_ingest_delivery_duration_seconds_count \([0-9]*\)$/\1/p' <<<"$BODY")
[[ ${delivered:-0} -gt 0 ]] || fs_fail "fs_ingest_delivery_duration_seconds observed no delivery"
echo "ok: /metrics"
grep -q '"event":"http_request".*"request_id":"[^"]*".*"key_id":"full"' "$FS_TEST_DIR/ingest.log" ||
    grep -q '"event":"http_request".*"key_id":"full"' "$FS_TEST_DIR/ingest.log" || fs_fail "no per-request log line"
for raw in batch.secret@example.com lena.schmidt@example.de 203.0.113.77 "${KEY#fsk.full.}"; do
    if grep -qF "$raw" "$FS_TEST_DIR/ingest.log"; then fs_fail "$raw reached the log"; fi
done
echo "ok: no personal data or API key in the log"
# A read refused because the payment is another's is logged as any 404: at debug level, with the
# caller's key id; nothing above debug names those payments (or, so, their owners).
peer_404=$(grep -c '"event":"http_request".*"status":404.*"key_id":"peer"' "$FS_TEST_DIR/ingest.log" || true)
(( peer_404 >= 2 )) || fs_fail "no debug line for the peer's 404s ($peer_404)"
for p in "$pid_pending" "$shop_pid"; do
    if grep -F "$p" "$FS_TEST_DIR/ingest.log" | grep -qv '"level":"debug"'; then
        fs_fail "a line above debug names $p: $(grep -F "$p" "$FS_TEST_DIR/ingest.log" | grep -v '"level":"debug"' | head -n 1)"
    fi
done
echo "ok: reads of another's payment logged at debug only, naming the caller"
fs_alive ingest || fs_fail "ingest died"
# Every answer above against its schema (schemas/json): a change to an answer's shape fails here.
fs_check_answers error.v1.json payment-accepted.v1.json batch-result.v1.json outcome-accepted.v1.json \
    payment-status.v1.json
echo "PASS test_ingest_api"
