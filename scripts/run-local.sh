#!/usr/bin/env bash
# scripts/run-local.sh: the whole pipeline on this machine, in the foreground (what `make run` runs).
#
#   PostgreSQL (.run/pg, created once, reused) -> dev broker (mock Kafka, development only)
#   -> two scorers, the alerter -> ingest on 127.0.0.1:8000 (FS_LISTEN_PORT to change)
#
# State lives under .run/ (git-ignored): pg/ (database cluster), postgres.url, kafka.bootstrap,
# pii.secret (generated once), logs/. Ctrl-C or SIGTERM stops everything in order (ingest, scorers,
# broker, PostgreSQL) and exits 0; a process dying on its own stops everything with exit 1.
# Delete .run/ to start from an empty database. The dev broker keeps nothing across runs.
# FS_RUN_DIR puts that state elsewhere (tests/integration/test_make_run.sh runs it in its own dir).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@" # `make run` calls it with sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUILD=${BUILD:-build/release}
case $BUILD in /*) ;; *) BUILD="$REPO/$BUILD" ;; esac
RUN=${FS_RUN_DIR:-$REPO/.run}
case $RUN in /*) ;; *) RUN="$REPO/$RUN" ;; esac
LOGS="$RUN/logs"
PGBIN=/usr/lib/postgresql/15/bin
LISTEN_PORT=${FS_LISTEN_PORT:-8000}
ALERTER_ADMIN_PORT=${FS_ALERTER_ADMIN_PORT:-9103}

declare -A PIDS=()  # name -> pid of the processes we started (each in its own session)
ORDER=()            # start order, for the liveness checks (stop order: see stop_all)
PG_DATA=
PG_STARTED=0
STOP=0

say() { printf '%s\n' "run-local: $*" >&2; }

as_postgres() {
    # from /: the postgres user may not be allowed into our working directory
    if [[ $(id -u) == 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local p
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        port_free "$p" && { echo "$p"; return 0; }
    done
    return 1
}

alive() { kill -0 "${PIDS[$1]}" 2>/dev/null; }

# Ctrl-C reaches only our process group: the children run in their own sessions (setsid), so the
# shutdown order stays ours: ingest stops taking requests before the scorers and the broker go.
start_bg() {
    local name=$1
    shift
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- & # 9: our lock, not theirs to hold
    PIDS[$name]=$!
    ORDER+=("$name")
    echo "${PIDS[$name]}" >"$RUN/pids/$name.pid"
}

# Processes left running by a run that was killed (kill -9 of this script: the children live in
# their own sessions, so nothing else stops them). Only our own binaries are touched.
stop_leftovers() {
    local f pid i name
    for name in ingest scorer-1 scorer-2 alerter devbroker; do
        f="$RUN/pids/$name.pid"
        [[ -f "$f" ]] || continue
        pid=$(cat "$f")
        if [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q 'fraudshield-'; then
            say "stopping $name (pid $pid) left running by an earlier run"
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}

stop_one() {
    local name=$1 pid=${PIDS[$1]:-} i
    [[ -n "$pid" ]] || return 0
    if kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name did not stop within 30 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$name]"
    rm -f "$RUN/pids/$name.pid"
}

stop_all() {
    local name
    trap '' INT TERM
    for name in ingest scorer-1 scorer-2 alerter devbroker; do
        [[ -n "${PIDS[$name]:-}" ]] || continue
        say "stopping $name"
        stop_one "$name"
    done
    if [[ $PG_STARTED == 1 ]]; then
        say "stopping PostgreSQL"
        as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null || true
        PG_STARTED=0
    fi
    rm -f "$RUN/postgres.url" "$RUN/kafka.bootstrap"
}

# Ctrl-C during start-up: stop what is already running.
check_stop() {
    [[ $STOP == 0 ]] && return 0
    say "interrupted during start-up"
    stop_all
    exit 0
}

die() {
    say "ERROR: $*"
    stop_all
    exit 1
}

tail_log() {
    echo "----- last 30 lines of $LOGS/$1.log -----" >&2
    tail -n 30 "$LOGS/$1.log" >&2 || true
}

# The postgres user must reach the data dir; a clone under /root (mode 700) cannot be reached, so
# the cluster then lives under /var/tmp and .run/pg is a symlink to it.
pg_datadir() {
    local d="$RUN/pg" alt
    if [[ -L "$d" ]]; then
        readlink -f "$d"
        return 0
    fi
    if [[ $(id -u) == 0 ]] && ! runuser -u postgres -- test -x "$RUN"; then
        alt="/var/tmp/fraudshield-$(printf '%s' "$RUN" | md5sum | cut -c1-12)/pg"
        mkdir -p "$alt"
        chmod 755 "$(dirname "$alt")"
        ln -sfn "$alt" "$d"
        say "the postgres user cannot reach $RUN: the cluster lives in $alt (.run/pg links there)"
        echo "$alt"
        return 0
    fi
    echo "$d"
}

pg_init() {
    if [[ -f "$PG_DATA/PG_VERSION" ]]; then return 0; fi
    say "creating the PostgreSQL cluster in .run/pg (once; delete .run/ to start over)"
    rm -rf "${PG_DATA:?}"/* 2>/dev/null || true # leftovers of an interrupted initdb
    mkdir -p "$PG_DATA"
    [[ $(id -u) == 0 ]] && chown postgres: "$PG_DATA"
    chmod 700 "$PG_DATA"
    as_postgres "$PGBIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C \
        >"$LOGS/initdb.log" 2>&1 || { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
    cat >>"$PG_DATA/postgresql.conf" <<EOF
# fraudshield run-local: loopback only, trust auth (initdb -A trust); the port is given at start.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DATA'
EOF
}

# A postmaster.pid left by a killed run: a server still running from it is stopped (it may hold
# another port); a dead one's pid file is removed so the start cannot trip over a recycled pid.
pg_clear_stale() {
    local pidfile="$PG_DATA/postmaster.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid=$(head -n 1 "$pidfile")
    if [[ -n "$pid" ]] && grep -qs postgres "/proc/$pid/cmdline" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$PG_DATA"; then
        say "stopping the PostgreSQL server left running by an earlier run (pid $pid)"
        as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
            die "could not stop the old PostgreSQL server (pid $pid)"
    else
        say "removing a stale postmaster.pid (pid $pid is not running)"
        rm -f "$pidfile"
    fi
}

pg_start() {
    local port log="$LOGS/postgres.log" db
    PG_DATA=$(pg_datadir)
    pg_init
    pg_clear_stale
    if port_free 5433; then port=5433; else port=$(free_port) || die "no free port for PostgreSQL"; fi
    if [[ "$PG_DATA" != "$RUN/pg" ]]; then # out-of-tree cluster: its log lives beside it
        log="$(dirname "$PG_DATA")/postgres.log"
        ln -sfn "$log" "$LOGS/postgres.log"
    fi
    touch "$log"
    [[ $(id -u) == 0 ]] && chown postgres: "$log"
    PG_STARTED=1 # before: a signal that kills pg_ctl -w does not stop the server it started
    as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$log" -o "-p $port" -w -t 60 start >/dev/null 9>&- ||
        { tail_log postgres; die "PostgreSQL did not start"; }
    db=$(psql -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
        "SELECT 1 FROM pg_database WHERE datname = 'fraudshield'") || die "psql failed"
    if [[ "$db" != 1 ]]; then
        "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres fraudshield || die "createdb failed"
    fi
    FS_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/fraudshield"
    echo "$FS_DATABASE_URL" >"$RUN/postgres.url.tmp" && mv "$RUN/postgres.url.tmp" "$RUN/postgres.url"
    say "PostgreSQL up: $FS_DATABASE_URL"
}

broker_start() {
    local file="$RUN/kafka.bootstrap" i
    rm -f "$file"
    start_bg devbroker "$BUILD/bin/fraudshield-devbroker" --bootstrap-file "$file"
    for ((i = 0; i < 300; i++)); do
        [[ -s "$file" ]] && break
        alive devbroker || { tail_log devbroker; die "the dev broker exited during start-up"; }
        check_stop
        sleep 0.1
    done
    [[ -s "$file" ]] || die "the dev broker wrote no bootstrap file within 30 s"
    FS_BROKERS=$(head -n 1 "$file")
    say "dev broker up (development only): $FS_BROKERS"
}

pii_secret() {
    local f="$RUN/pii.secret"
    [[ -s "$f" ]] && return 0
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
    chmod 600 "$f"
    say "generated the PII secret .run/pii.secret (keep it: digests depend on it)"
}

# The development API key (all scopes): created once, kept in .run/api.key, hashed in .run/api-keys.
api_key() {
    local key
    if [[ -s "$RUN/api.key" && -s "$RUN/api-keys" ]]; then
        say "development API key (.run/api.key): $(cat "$RUN/api.key")"
        return 0
    fi
    rm -f "$RUN/api-keys" "$RUN/api.key"
    key=$("$BUILD/bin/fraudshield-ingest" keys create --keys-file "$RUN/api-keys" --id dev \
        --scopes payments:write,payments:read,payments:read_all,outcomes:write 2>/dev/null) ||
        die "could not create the API key"
    (umask 077 && printf '%s\n' "$key" >"$RUN/api.key")
    say "created the development API key .run/api.key: $key"
}

services_start() {
    local i
    export FS_BROKERS FS_DATABASE_URL FS_PII_SECRET_FILE="$RUN/pii.secret"
    for i in 1 2; do
        start_bg "scorer-$i" env FS_SCORER_ID="scorer-$i" FS_ADMIN_PORT=0 "$BUILD/bin/fraudshield-scorer"
    done
    start_bg alerter env FS_ADMIN_ADDR=127.0.0.1 FS_ADMIN_PORT="$ALERTER_ADMIN_PORT" \
        "$BUILD/bin/fraudshield-alerter"
    port_free "$LISTEN_PORT" || die "port $LISTEN_PORT is in use: set FS_LISTEN_PORT to another one"
    # FS_ADMIN_PORT set here, not inherited: an exported one would move /ready off the API port
    start_bg ingest env FS_LISTEN_PORT="$LISTEN_PORT" FS_ADMIN_PORT=-1 FS_KEYS_FILE="$RUN/api-keys" \
        "$BUILD/bin/fraudshield-ingest"
    for ((i = 0; i < 600; i++)); do
        curl -sf -o /dev/null "http://127.0.0.1:$LISTEN_PORT/ready" && return 0
        check_children
        check_stop
        sleep 0.1
    done
    tail_log ingest
    die "ingest did not become ready within 60 s"
}

check_children() {
    local name
    for name in "${ORDER[@]}"; do
        [[ -n "${PIDS[$name]:-}" ]] || continue
        if ! alive "$name"; then
            local rc=0
            wait "${PIDS[$name]}" 2>/dev/null || rc=$?
            unset "PIDS[$name]"
            rm -f "$RUN/pids/$name.pid"
            tail_log "$name"
            die "$name exited unexpectedly (status $rc)"
        fi
    done
}

banner() {
    cat <<EOF

FraudShield is running (Ctrl-C stops everything).
  ingest      http://127.0.0.1:$LISTEN_PORT   (GET /health, /ready, /metrics)
  PostgreSQL  $FS_DATABASE_URL   (.run/postgres.url)
  Kafka       $FS_BROKERS   (dev broker, .run/kafka.bootstrap)
  alerter     http://127.0.0.1:$ALERTER_ADMIN_PORT/metrics   (webhooks: fraudshield-alerter subscriptions add, docs/alerter.md)
  logs        .run/logs/

API key (all scopes, .run/api.key): $(cat "$RUN/api.key")

Post a payment:
  curl -s -X POST http://127.0.0.1:$LISTEN_PORT/api/v1/payments \\
    -H "X-API-Key: \$(cat .run/api.key)" -H 'Content-Type: application/json' \\
    -d '{"user_id":"u-1","merchant_id":"m-1","amount":"1250.00","currency":"EUR","payment_method":"card","country":"DE"}'
  curl -s -H "X-API-Key: \$(cat .run/api.key)" http://127.0.0.1:$LISTEN_PORT/api/v1/payments/<payment_id>

See it:
  psql "\$(cat .run/postgres.url)" -c 'SELECT payment_id, score, decision, reasons FROM decisions ORDER BY decided_at DESC LIMIT 5'
  kcat -b "\$(cat .run/kafka.bootstrap)" -C -t processed_payments -o beginning -e
  kcat -b "\$(cat .run/kafka.bootstrap)" -C -t fraud_alerts -o beginning -e

EOF
}

main() {
    mkdir -p "$LOGS" "$RUN/pids"
    exec 9>"$RUN/lock"
    flock -n 9 || { say "ERROR: another run-local.sh is running on .run/"; exit 1; }
    stop_leftovers
    local f
    for f in "$LOGS"/*.log; do [[ -f "$f" ]] && mv -f "$f" "$f.prev"; done # this run's logs only
    local b
    for b in ingest scorer alerter devbroker; do
        [[ -x "$BUILD/bin/fraudshield-$b" ]] || { say "ERROR: missing $BUILD/bin/fraudshield-$b (run make)"; exit 1; }
    done
    trap 'STOP=1' INT TERM
    # Safety net: whatever fails under set -e still stops what was started.
    trap 'rc=$?; [[ $rc == 0 ]] || stop_all' EXIT
    pg_start
    check_stop
    broker_start
    pii_secret
    api_key
    services_start
    banner
    while [[ $STOP == 0 ]]; do
        check_children
        sleep 1 &
        wait $! || true # returns at once on a signal, so Ctrl-C is handled without delay
    done
    say "stopping"
    stop_all
    say "stopped"
    exit 0
}

main "$@"
