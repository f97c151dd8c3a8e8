#!/usr/bin/env bash
# fraudshield-replay against a stand-in of ingest's API (replay_receiver.py): every row becomes
# one payment with its deterministic id and no label; each label is posted as an outcome with
# known_at = event time + delay, only once the replay's event clock has passed known_at (and
# before it runs far past it); a 503 is retried; open-loop pacing holds the rate; the summary's
# last line counts everything; a gzip file reads like a plain one.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup replay_http
key=test-key-123
fs_bg receiver python3 "$REPO/tests/integration/replay_receiver.py" "$FS_TEST_DIR/port" \
    "$FS_TEST_DIR/requests.log" "$key"
fs_wait_for 10 test -s "$FS_TEST_DIR/port"
url="http://127.0.0.1:$(cat "$FS_TEST_DIR/port")"
echo "$key" >"$FS_TEST_DIR/api.key"

# 200 transactions, one every 30 min from 2018-04-01 00:00:00 (4 days 4 h), every 10th a fraud,
# a zero amount at row 5; plus a header.
csv="$FS_TEST_DIR/tx.csv"
awk 'BEGIN {
    print "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO"
    for (i = 0; i < 200; i++) {
        s = i * 1800; d = int(s / 86400); r = s % 86400
        printf "%d,2018-04-%02d %02d:%02d:00,%d,%d,%s,%d,%d,%d,%d\n", i, 1 + d, int(r / 3600),
               int(r % 3600 / 60), i % 37, i % 11, (i == 5 ? "0.00" : (10 + i) ".5"), s, d,
               (i % 10 == 0), (i % 10 == 0)
    }
}' >"$csv"
gzip -k "$csv"

replay="$BUILD/bin/fraudshield-replay"
out=$("$replay" --input "$csv.gz" --url "$url" --api-key-file "$FS_TEST_DIR/api.key" \
      --batch-size 10 --connections 1 --delay-days 1 --progress off --log-level warn)
echo "$out"
last=$(tail -1 <<<"$out")
[[ $last == "replay sent=200 accepted=200 rejected=0 failed=0 labels=200 labels_failed=0 "* ]] ||
    fs_fail "summary: $last"
grep -q "amounts 0.00 sent as 0.01: 1" <<<"$out" || fs_fail "the zero amount was not counted"
log="$FS_TEST_DIR/requests.log"
fs_assert_eq 0 "$(grep -c '^LEAK' "$log" || true)" "label fields in payments"
fs_assert_eq 200 "$(grep '^P ' "$log" | awk '{print $2}' | sort -u | wc -l)" "distinct payments"
fs_assert_eq 200 "$(grep -c '^O ' "$log")" "outcomes"
fs_assert_eq 20 "$(grep -c '^O .* confirmed_fraud$' "$log")" "confirmed_fraud outcomes"
# transaction 0 (2018-04-01 00:00:00): its id (UUIDv5, computed independently) and its label
grep -q '^P ba2571a1-1915-5ad9-94c7-324d701ed01c 2018-04-01T00:00:00.000Z$' "$log" ||
    fs_fail "payment id of transaction 0"
grep -q '^O ba2571a1-1915-5ad9-94c7-324d701ed01c 2018-04-02T00:00:00.000Z confirmed_fraud$' "$log" ||
    fs_fail "outcome of transaction 0"

# Order: when an outcome (known at K) is posted, every payment before K has been sent, and none
# later than K + one batch (10 rows = 5 h) has. The last day's labels come after the last payment.
awk '
function epoch(t) { gsub(/[-T:Z]/, " ", t); split(t, a, " "); return mktime(a[1] " " a[2] " " a[3] " " a[4] " " a[5] " " int(a[6])) }
$1 == "P" { t = epoch($3); sent[++n] = t }
$1 == "O" {
    k = epoch($3)
    for (i = 1; i <= n; i++) if (sent[i] > k + 5 * 3600) { print "outcome " $2 " after a payment " (sent[i] - k) " s past known_at"; bad = 1 }
    before = 0; for (i = 1; i <= n; i++) before += sent[i] < k
    should = 0; for (s = 0; s < 200; s++) should += epoch("2018-04-01T00:00:00Z") + s * 1800 < k
    if (before != should) { print "outcome " $2 ": " before " payments before known_at sent, " should " expected"; bad = 1 }
}
END { exit bad }' "$log" || fs_fail "outcomes out of order"

# Per customer, payments arrive in event order even when requests overtake each other: a second
# receiver delays batches by 0-90 ms; 8 connections, batches of 5, a customer every 37 rows.
fs_bg receiver2 env RECEIVER_JITTER=1 python3 "$REPO/tests/integration/replay_receiver.py" \
    "$FS_TEST_DIR/port2" "$FS_TEST_DIR/jitter.log" "$key"
fs_wait_for 10 test -s "$FS_TEST_DIR/port2"
customer_order() { # LOG: "ok", or the first customer whose payments arrived out of order
    TZ=UTC awk '
    function epoch(t) { gsub(/[-T:Z]/, " ", t); split(t, a, " "); return mktime(a[1] " " a[2] " " a[3] " " a[4] " " a[5] " " int(a[6])) }
    BEGIN { t0 = epoch("2018-04-01T00:00:00Z") }
    $1 == "P" { i = (epoch($3) - t0) / 1800; c = i % 37   # row i: customer i % 37 (above)
                if ((c in last) && i < last[c]) { print "customer " c ": row " i " after row " last[c]; bad = 1; exit }
                last[c] = i }
    END { if (!bad) print "ok" }' "$1"
}
"$replay" --input "$csv" --url "http://127.0.0.1:$(cat "$FS_TEST_DIR/port2")" --api-key "$key" \
    --batch-size 5 --connections 8 --outcomes none --progress off --log-level warn >/dev/null
fs_assert_eq 200 "$(grep -c '^P ' "$FS_TEST_DIR/jitter.log")" "payments (jitter)"
fs_assert_eq ok "$(customer_order "$FS_TEST_DIR/jitter.log")" "each customer's payments in event order"

# open loop at 100 payments/s: 100 payments in about 1 s (not as fast as possible, not slower)
: >"$log"
start=$(date +%s.%N)
"$replay" --input "$csv" --url "$url" --api-key "$key" --batch-size 1 --rate 100 --limit 100 \
    --outcomes none --progress off --log-level warn >/dev/null
secs=$(echo "$(date +%s.%N) - $start" | bc)
fs_assert_eq 100 "$(grep -c '^P ' "$log")" "single-endpoint payments"
awk -v s="$secs" 'BEGIN { exit !(s >= 0.9 && s < 3) }' || fs_fail "100 payments at 100/s took $secs s"

# a wrong key is an error the summary shows (exit 1); a missing file fails at start
"$replay" --input "$csv" --url "$url" --api-key wrong --limit 5 --progress off --log-level error \
    >"$FS_TEST_DIR/wrong.out" && fs_fail "a wrong key must fail"
grep -q "rejected=5" "$FS_TEST_DIR/wrong.out" || fs_fail "wrong key: $(tail -1 "$FS_TEST_DIR/wrong.out")"
"$replay" --input "$FS_TEST_DIR/none.csv" --url "$url" 2>/dev/null && fs_fail "missing input"
echo "ok"
