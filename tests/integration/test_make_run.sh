#!/usr/bin/env bash
# `make run` as the README describes it: scripts/run-local.sh starts the whole pipeline (its own
# PostgreSQL cluster, the dev broker, two scorers, the alerter, ingest), the README's "Try it"
# commands work against it as written (only the port and the state folder differ), SIGTERM stops
# everything with exit 0 and leaves no process behind, and a second start reuses the database and
# the API key ("Running it twice is fine").
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup make_run

RUN="$FS_TEST_DIR/run"
port=$(fs_free_port)
admin_port=$(fs_free_port)
export FS_RUN_DIR=$RUN FS_LISTEN_PORT=$port FS_ALERTER_ADMIN_PORT=$admin_port

# Where run-local.sh puts the cluster when the postgres user cannot reach $RUN (its pg_datadir):
# removed at cleanup, also when the test fails before the pipeline is up.
FS__PG_TMPDIR="/var/tmp/fraudshield-$(printf '%s' "$RUN" | md5sum | cut -c1-12)"

start_pipeline() { # $1: the name of its log
    fs_bg "$1" bash "$REPO/scripts/run-local.sh"
    fs_wait_for 120 "grep -q 'FraudShield is running' '$FS_TEST_DIR/$1.log'"
}

pg_running() {
    local data
    data=$(readlink -f "$RUN/pg")
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$data" status >/dev/null 2>&1
    else
        /usr/lib/postgresql/15/bin/pg_ctl -D "$data" status >/dev/null 2>&1
    fi
}

# Stops run-local.sh like Ctrl-C would, checks exit 0 and that none of its processes is left.
stop_pipeline() { # $1: the name given to start_pipeline
    local pids pid
    pids=$(cat "$RUN"/pids/*.pid)
    fs_kill "$1" TERM
    fs_wait_exit "$1" 120
    fs_assert_eq 0 "$FS_EXIT_STATUS" "run-local.sh exit status after SIGTERM"
    for pid in $pids; do
        if kill -0 "$pid" 2>/dev/null; then fs_fail "process $pid is still running after the stop"; fi
    done
    if pg_running; then fs_fail "PostgreSQL still runs after the stop"; fi
    echo "ok: everything stopped"
}

# The first ```sh block after a README heading, with our port and state folder.
readme_block() { # $1: heading, $2: which block under it (1 = first)
    awk -v h="$1" -v want="${2:-1}" '
        $0 == h { inside = 1; next }
        inside && /^## / { exit }
        inside && /^```sh/ { n++; if (n == want) { take = 1; next } }
        take && /^```/ { exit }
        take { print }' "$REPO/README.md" |
        sed -e "s#127\.0\.0\.1:8000#127.0.0.1:$port#g" -e "s#\.run/#$RUN/#g"
}

start_pipeline run1
grep -q "created the development API key" "$FS_TEST_DIR/run1.log" || fs_fail "no API key was created"
key=$(cat "$RUN/api.key")
[[ -n "$key" ]] || fs_fail "empty .run/api.key"

# README "Try it": the POST as written.
post=$(readme_block "## Try it" 1)
[[ "$post" == *"api/v1/payments"* ]] || fs_fail "the README's first example is not the POST: $post"
reply=$(cd "$FS_TEST_DIR" && bash -c "$post")
echo "POST -> $reply"
payment_id=$(jq -r .payment_id <<<"$reply")
fs_assert_eq accepted "$(jq -r .status <<<"$reply")" "README POST accepted"

# The GET, with its <payment_id>: pending until a scorer stored it (the two scorers first agree on
# their partitions, which the dev broker makes slow), then the decision the README shows.
get=$(readme_block "## Try it" 2 | sed "s#<payment_id>#$payment_id#")
decided() { [[ $(bash -c "$get" | jq -r .status) == decided ]]; }
fs_wait_for 120 decided
status=$(bash -c "$get")
echo "GET -> $status"
fs_assert_eq block "$(jq -r .decision <<<"$status")" "the README's 6000 EUR payment is blocked"

# The psql example and the topic shown by kcat.
rows=$(bash -c "$(readme_block "## Try it" 3)")
grep -q "$payment_id" <<<"$rows" || fs_fail "the README's psql query does not show the payment: $rows"
out=$(readme_block "## Try it" 4 | head -n 1)
fs_wait_for 30 "bash -c '$out' 2>/dev/null | grep -q '$payment_id'"
echo "ok: README psql and kcat examples show the payment"

# The alerter runs with its metrics where the banner says.
curl -sf "http://127.0.0.1:$admin_port/metrics" | grep -q '^fs_alerter_' ||
    fs_fail "no alerter metrics on port $admin_port"

stop_pipeline run1

# Second run: same key, same database (the payment is still decided), Kafka empty again.
start_pipeline run2
grep -q "development API key (.run/api.key): $key" "$FS_TEST_DIR/run2.log" ||
    fs_fail "the second run did not reuse the API key"
fs_assert_eq block "$(bash -c "$get" | jq -r .decision)" "the decision survives a restart"
stop_pipeline run2
