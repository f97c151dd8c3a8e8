#!/usr/bin/env bash
# The alerter in the pipeline, and the analyst workflow:
#   raw_payments -> scorer -> fraud_alerts -> alerter -> webhook (alert.created) + email (SMTP)
# then analysts acknowledge and resolve alerts - with the CLI, with the SQL function, and with a
# plain UPDATE in psql - and every resolution is published to payment_outcomes (through the outbox)
# and sent to the subscriber as alert.resolved.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_workflow
fs_pg_start
fs_broker_start 3
run=$((RANDOM + 1000))
n=15
export FS_RULES_FILE="$REPO/schemas/rules/default.json"

al_receiver soc ok
smtp=$(fs_free_port)
fs_bg smtp python3 "$REPO/tests/integration/alerter_smtp_sink.py" --port "$smtp" --out "$FS_TEST_DIR/mail.jsonl"
fs_wait_for 20 test -s "$FS_TEST_DIR/mail.jsonl.ready"
al_cli subscriptions add --name soc --url "http://127.0.0.1:${AL_PORT[soc]}/fraud" --secret "$AL_SECRET" \
    --events alert.created,alert.resolved >/dev/null

fs_bg scorer env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
al_start alerter FS_SMTP_URL="smtp://127.0.0.1:$smtp" FS_SMTP_TO=soc@example.com,oncall@example.com \
    FS_SMTP_FROM=fraudshield@example.com FS_SMTP_MIN_DECISION=review
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"
al_wait_assigned alerter
al_cli subscriptions list

# Amounts: 6000.00 EUR (block), 1500.00 (review), small (allow), in turn.
bash "$REPO/tests/integration/gen_raw_payments.sh" "$run" "$n" 1000 |
    awk '{ if (NR % 3 == 1) sub(/"amount_minor":[0-9]+/, "\"amount_minor\":600000")
           else if (NR % 3 == 2) sub(/"amount_minor":[0-9]+/, "\"amount_minor\":150000"); print }' |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 "(( \$(al_sql_int 'SELECT count(*) FROM decisions') == $n ))"
flagged=$(al_sql_int 'SELECT count(*) FROM alerts')
((flagged >= 3)) || fs_fail "only $flagged alerts: the workflow needs 3"
echo "$flagged of $n payments flagged"

# Webhook and email for every alert.
fs_wait_for 30 "(( \$(al_requests soc 'r[\"event\"] == \"alert.created\"') == $flagged ))"
fs_assert_eq "$flagged" "$(al_requests soc 'r["event"] == "alert.created" and r["sig_ok"] and r["status"] == 200')" "signed alert.created deliveries"
ids_topic=$(python3 -c "
import json
print('\n'.join(sorted(json.loads(l)['alert'] for l in open('$FS_TEST_DIR/soc.jsonl'))))")
[[ "$ids_topic" == "$(fs_psql 'SELECT alert_id FROM alerts ORDER BY 1')" ]] ||
    fs_fail "the delivered alert ids differ from the alerts table"
fs_wait_for 30 "(( \$(wc -l < '$FS_TEST_DIR/mail.jsonl') == $flagged ))"
python3 - "$FS_TEST_DIR/mail.jsonl" <<'EOF' || fs_fail "emails malformed"
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    assert m["from"] == "<fraudshield@example.com>", m["from"]
    assert m["to"] == ["<soc@example.com>", "<oncall@example.com>"], m["to"]
    assert "\r\nSubject: [FraudShield] " in "\r\n" + m["data"], m["data"][:300]
    assert "X-FraudShield-Alert: " in m["data"]
    assert "FraudShield flagged a payment." in m["data"]
EOF
echo "ok: $flagged emails, well-formed"
fs_assert_eq "$flagged" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'email' AND d.state = 'delivered'")" "email deliveries in the log"

# The analysts.
mapfile -t ids < <(fs_psql "SELECT alert_id FROM alerts ORDER BY alert_id LIMIT 3")
a1=${ids[0]} a2=${ids[1]} a3=${ids[2]}
fs_assert_eq "$a1: acknowledged" "$(al_cli alerts ack "$a1" --by alice)" "CLI ack"
fs_assert_eq "$a1: resolved confirmed_fraud" "$(al_cli alerts resolve "$a1" --by alice --resolution confirmed_fraud --reason 'card reported stolen')" "CLI resolve"
fs_psql "SELECT alert_resolve('$a2', 'bob', 'false_positive', 'customer confirmed')" >/dev/null
fs_psql "UPDATE alerts SET status = 'resolved', resolution = 'confirmed_fraud', status_by = 'carol' WHERE alert_id = '$a3'"
# refused or idempotent
if al_cli alerts ack "$a1" --by alice 2>"$FS_TEST_DIR/ack.err"; then fs_fail "ack of a resolved alert succeeded"; fi
grep -q "already resolved" "$FS_TEST_DIR/ack.err" || fs_fail "ack of a resolved alert: $(cat "$FS_TEST_DIR/ack.err")"
al_cli alerts resolve "$a1" --by alice --resolution confirmed_fraud >/dev/null
if al_cli alerts resolve "$a1" --by alice --resolution stolen 2>/dev/null; then fs_fail "an unknown resolution was accepted"; fi
if fs_psql "UPDATE alerts SET status = 'resolved' WHERE alert_id = '${ids[2]}' AND false" >/dev/null &&
    fs_psql "UPDATE alerts SET status = 'acknowledged', resolution = 'false_positive' WHERE alert_id = '$a2'" 2>/dev/null; then
    fs_fail "a resolution without the resolved status was accepted"
fi

# Outcomes on payment_outcomes: one per resolution, keyed by payment_id.
fs_wait_for 30 fs_topic_has payment_outcomes 3
sleep 1
fs_assert_eq 3 "$(fs_topic_count payment_outcomes)" "outcome messages"
fs_topic_dump payment_outcomes >"$FS_TEST_DIR/outcomes.tsv"
for spec in "$a1:confirmed_fraud:card reported stolen" "$a2:false_positive:customer confirmed" "$a3:confirmed_fraud:"; do
    IFS=: read -r aid outcome reason <<<"$spec"
    pid=$(fs_psql "SELECT payment_id FROM alerts WHERE alert_id = '$aid'")
    python3 - "$FS_TEST_DIR/outcomes.tsv" "$pid" "$aid" "$outcome" "$reason" <<'EOF' || fs_fail "outcome of $aid"
import json, re, sys
path, pid, aid, outcome, reason = sys.argv[1:]
rows = [l.rstrip("\n").split("\t", 4) for l in open(path)]
mine = [r for r in rows if r[2] == pid]
assert len(mine) == 1, mine
v = json.loads(mine[0][4])
keys = ["schema_version", "outcome_id", "payment_id", "outcome", "known_at", "received_at", "source"]
assert list(v) == keys + (["reason"] if reason else []) + ["alert_id"], list(v)
assert re.fullmatch(r"[0-9a-f-]{36}", v["outcome_id"]), v
assert v["schema_version"] == 1 and v["payment_id"] == pid and v["alert_id"] == aid, v
assert v["outcome"] == outcome and v["source"] == "analyst", v
assert v.get("reason") == (reason or None), v
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", v["known_at"]), v
assert "payment_id=" + pid in mine[0][3] and "schema_version=1" in mine[0][3], mine[0][3]
assert "outcome_id=" + v["outcome_id"] in mine[0][3], mine[0][3]
assert ": " not in mine[0][4], "not compact JSON"
EOF
    echo "ok: outcome of $aid: $outcome"
done
# their schema, and each on its key's murmur2 partition (3 partitions), where ingest puts the
# labels of the same payment
fs_validate_topics "payment-outcome.v1.json:$FS_TEST_DIR/outcomes.tsv:payment_id:3" ||
    fs_fail "an analyst's outcome does not match its schema or partition"

# alert.resolved to the subscriber, with the alert's id.
fs_wait_for 30 "(( \$(al_requests soc 'r[\"event\"] == \"alert.resolved\"') == 3 ))"
for aid in "$a1" "$a2" "$a3"; do
    fs_assert_eq 1 "$(al_requests soc "r['event'] == 'alert.resolved' and r['alert'] == '$aid' and r['body_alert'] == '$aid' and r['sig_ok']")" "alert.resolved for $aid"
done
# every body the subscriber got is what its schema says (schemas/json), keys in order
fs_validate_topics --webhooks "$FS_TEST_DIR/soc.jsonl" ||
    fs_fail "a webhook body does not match its schema"
for ev in alert.created alert.resolved; do
    (($(al_requests soc "r['event'] == '$ev'") >= 3)) || fs_fail "fewer than 3 $ev bodies were checked"
done
fs_assert_eq 2 "$(al_sql_int "SELECT count(*) FROM alert_history WHERE alert_id = '$a1'")" "history of $a1 (ack, resolve)"
fs_assert_eq "alice|resolved|confirmed_fraud|card reported stolen" \
    "$(fs_psql "SELECT status_by, status, resolution, resolution_note FROM alerts WHERE alert_id = '$a1'")" "$a1 in the table"
al_cli alerts list --status resolved | grep -c resolved | grep -qx 3 || fs_fail "alerts list --status resolved"
# a filter value that can match nothing is refused, not answered with an empty table
rc=0; al_cli alerts list --status bogus >"$FS_TEST_DIR/bogus.out" 2>&1 || rc=$?
fs_assert_eq 2 "$rc" "alerts list --status bogus: exit status"
grep -q "must be one of: new acknowledged resolved" "$FS_TEST_DIR/bogus.out" || fs_fail "alerts list --status bogus: $(cat "$FS_TEST_DIR/bogus.out")"
rc=0; al_cli deliveries list --state done >/dev/null 2>&1 || rc=$?
fs_assert_eq 2 "$rc" "deliveries list --state done: exit status"
al_cli deliveries list --alert "$a1" | grep -q 'alert.resolved' || fs_fail "deliveries list --alert"

fs_kill alerter TERM
fs_wait_exit alerter 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "alerter exit status"
echo "alerter workflow ok"
