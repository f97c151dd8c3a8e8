#!/usr/bin/env bash
# Webhooks never connect to an address in webhook-deny-networks (server-side request forgery: a
# subscription whose host is, or resolves to, the cloud metadata service or another internal-only
# address). Checks:
#   1. the CLI refuses a URL whose host is a literal address in the list, however it is spelled
#      (the default list's 169.254.169.254; 127.0.0.1 with 127.0.0.0/8), naming the option; a name
#      is not resolved there; a bad list is refused naming its entry
#   2. an alerter with webhook-deny-networks=127.0.0.0/8,::1/128 delivers nothing to three
#      subscriptions of a 127.0.0.1 receiver made under the default list: by address, IPv4-mapped
#      ([::ffff:127.0.0.1], which a dual-stack socket connects to 127.0.0.1) and by name
#      (localhost: the check is made after DNS). Every attempt is address_denied (last_error,
#      delivery_attempts.error, the delivery_retry line's denied_address,
#      fs_alerter_address_denied_total), retried like an outage: nothing is dead-lettered
#   3. an alerter with the default list delivers those same deliveries.
#   4. through a proxy (http_proxy, at 127.0.0.2), with webhook-deny-networks=127.0.0.1/32: the
#      connect-time check sees only the proxy's address, so a URL whose host is a literal denied
#      address (direct, mapped) is refused before libcurl starts: the proxy gets no request for
#      them, and each attempt is address_denied; a name (byname) goes to the proxy, which resolves
#      it (the documented limit), which shows the proxy was in use.
# The old code delivered in 2 (and accepted every URL in 1); before the pre-check, 4's proxy got
# the direct and mapped requests.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_deny_networks
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
n=2
strict=127.0.0.0/8,::1/128
al_receiver recv ok
port=${AL_PORT[recv]}

# 1. The CLI.
# add_refused WANT URL [ENV=V...]: `subscriptions add` exits 1 with a message containing WANT
add_refused() {
    local want=$1 url=$2
    shift 2
    if env "$@" "$ALERTER" subscriptions add --allow-insecure-http --name refused --url "$url" \
        --secret "$AL_SECRET" >/dev/null 2>"$FS_TEST_DIR/add.err"; then
        fs_fail "$url was accepted ($*)"
    fi
    echo "$url ($*): $(cat "$FS_TEST_DIR/add.err")"
    grep -qF -- "$want" "$FS_TEST_DIR/add.err" || fs_fail "$url: the refusal does not say $want"
}
for url in "http://169.254.169.254/latest/meta-data/" "https://[::ffff:169.254.169.254]/" \
    "https://2852039166/" "https://0xa9.0xfe.0xa9.0xfe/" "https://[fd00:ec2::254]/"; do
    add_refused "is in webhook-deny-networks" "$url"
done
add_refused "--url: 127.0.0.1 is in webhook-deny-networks" "http://127.0.0.1:$port/direct" \
    FS_WEBHOOK_DENY_NETWORKS=$strict
add_refused "--url: ::ffff:127.0.0.1 is in webhook-deny-networks" "http://[::ffff:127.0.0.1]:$port/mapped" \
    FS_WEBHOOK_DENY_NETWORKS=$strict
add_refused 'webhook-deny-networks: "127.0.0.1/8": host bits set' "https://soc.example.com/hook" \
    FS_WEBHOOK_DENY_NETWORKS=127.0.0.1/8
fs_assert_eq 0 "$(al_sql_int 'SELECT count(*) FROM subscriptions')" "subscriptions after the refusals"
# Allowed by the default list; a name is resolved only when the alerter connects.
al_cli subscriptions add --name direct --url "http://127.0.0.1:$port/direct" --secret "$AL_SECRET" >/dev/null
al_cli subscriptions add --name mapped --url "http://[::ffff:127.0.0.1]:$port/mapped" --secret "$AL_SECRET" >/dev/null
FS_WEBHOOK_DENY_NETWORKS=$strict al_cli subscriptions add --name byname --url "http://localhost:$port/byname" \
    --secret "$AL_SECRET" >/dev/null
subs="direct mapped byname"

# 2. Denied at connect time. Compressed clock: retries after 300 ms, at most 1 s apart.
al_start alerter FS_WEBHOOK_DENY_NETWORKS=$strict FS_TIME_COMPRESSION=100 FS_RETRY_MAX_DELAY_MS=100000
al_wait_assigned alerter
al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 30 "(( \$(al_sql_int 'SELECT count(*) FROM deliveries WHERE attempts >= 2') == 3 * $n ))"
fs_psql "SELECT s.name, d.state, d.attempts, d.last_error FROM deliveries d JOIN subscriptions s USING (subscription_id) ORDER BY 1"
fs_assert_eq 0 "$(al_requests recv True)" "requests that reached the receiver"
fs_assert_eq 0 "$(al_sql_int "SELECT count(*) FROM deliveries WHERE state IN ('failed', 'delivered')")" \
    "deliveries finished (denied ones are retried)"
fs_assert_eq 0 "$(al_sql_int 'SELECT count(*) FROM outbox')" "dead letters"
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'direct' AND d.last_error LIKE 'address\_denied: 127.0.0.1 (host 127.0.0.1) is in webhook-deny-networks%'")" \
    "direct: address_denied"
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'mapped' AND d.last_error LIKE 'address\_denied: 127.0.0.1 (host ::ffff:127.0.0.1)%'")" \
    "mapped: address_denied, checked as IPv4"
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'byname' AND d.last_error ~ '^address_denied: (127\.0\.0\.1|::1) \(host localhost'")" \
    "byname: address_denied after DNS"
fs_assert_eq 0 "$(al_sql_int "SELECT count(*) FROM delivery_attempts WHERE error NOT LIKE 'address\_denied: %' OR status IS NOT NULL")" \
    "attempts that were not address_denied"
for s in $subs; do
    denied=$(al_metric alerter "fs_alerter_address_denied_total{subscription=\"$s\"}")
    ((denied >= 2)) || fs_fail "fs_alerter_address_denied_total for $s: $denied"
    grep '"event":"delivery_retry"' "$FS_TEST_DIR/alerter.log" | grep "\"subscription\":\"$s\"" |
        grep -q '"denied_address":"' || fs_fail "no delivery_retry line with denied_address for $s"
done
echo "ok: every attempt was address_denied, counted and logged; nothing reached the receiver"
fs_kill alerter TERM
fs_wait_exit alerter 30

# 3. The default list: the same deliveries go out.
al_start alerter2 FS_TIME_COMPRESSION=100 FS_RETRY_MAX_DELAY_MS=100000
fs_wait_for 30 "(( \$(al_sql_int \"SELECT count(*) FROM deliveries WHERE state = 'delivered'\") == 3 * $n ))"
for s in $subs; do
    fs_assert_eq "$n" "$(al_requests recv "r['path'] == '/$s' and r['sig_ok'] and r['status'] == 200")" "deliveries at /$s"
done
fs_assert_eq 0 "$(al_metric alerter2 'fs_alerter_address_denied_total{subscription="direct"}')" \
    "address_denied with the default list"
fs_kill alerter2 TERM
fs_wait_exit alerter2 30

# 4. Through a proxy. It records each request line and answers 502 (a retry, nothing delivered).
pport=$(fs_free_port)
fs_bg proxy python3 -c '
import socket, sys
port, log = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.2", port))
srv.listen(16)
open(log + ".ready", "w").close()
while True:
    c, _ = srv.accept()
    line = c.recv(65536).split(b"\r\n", 1)[0]
    with open(log, "ab") as f:
        f.write(line + b"\n")
    c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    c.close()
' "$pport" "$FS_TEST_DIR/proxy.log"
fs_wait_for 20 test -e "$FS_TEST_DIR/proxy.log.ready"
al_start alerter3 env -u no_proxy -u NO_PROXY http_proxy="http://127.0.0.2:$pport" \
    FS_WEBHOOK_DENY_NETWORKS=127.0.0.1/32 FS_TIME_COMPRESSION=100 FS_RETRY_MAX_DELAY_MS=100000
al_wait_assigned alerter3
al_gen_alerts "$run" "$n" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
pending="SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE d.state <> 'delivered'"
fs_wait_for 30 "(( \$(al_sql_int \"$pending AND d.attempts >= 2\") == 3 * $n ))"
cat "$FS_TEST_DIR/proxy.log"
fs_assert_eq 0 "$(grep -c -e '/direct ' -e '/mapped ' "$FS_TEST_DIR/proxy.log" || true)" \
    "requests for literal denied addresses at the proxy"
grep -q "^POST http://localhost:$port/byname " "$FS_TEST_DIR/proxy.log" || fs_fail "byname did not go through the proxy"
fs_assert_eq $((2 * n)) "$(al_sql_int "$pending AND s.name IN ('direct', 'mapped') AND d.last_error LIKE 'address\_denied: 127.0.0.1 (host %'")" \
    "direct and mapped through the proxy: address_denied"
fs_assert_eq $((3 * n)) "$(al_requests recv True)" "requests at the receiver (part 3's only: none went around the proxy)"
echo "ok: through a proxy, literal denied addresses are refused before it; names go to it"
fs_kill alerter3 TERM
fs_wait_exit alerter3 30
echo PASS
