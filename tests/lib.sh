# shellcheck shell=bash
# tests/lib.sh: helpers for the integration tests (sourced; safe under `set -euo pipefail`).
#
#   source "$(dirname "$0")/../lib.sh"
#   fs_setup my_test                 # work dir, EXIT trap (cleanup + log tails on failure)
#   fs_pg_start; fs_broker_start 6   # PostgreSQL and the dev broker on free ports
#   fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
#   fs_wait_for 30 fs_topic_has processed_payments 10
#
# Functions:
#   fs_setup NAME [DIR]      per-test dir $FS_TEST_DIR = $REPO/.test/NAME.$$; EXIT trap -> fs_cleanup.
#                            With DIR: that dir instead, created if needed and never removed (a
#                            persistent work dir, e.g. .eval/ of `make eval`)
#   fs_cleanup               stop fs_bg processes + PostgreSQL, print log tails on failure, remove dir
#                            (kept when FS_KEEP=1); runs from the trap, idempotent
#   fs_free_port             prints a free TCP port on 127.0.0.1
#   fs_pg_start [DATADIR]    initdb + start PostgreSQL; exports FS_DATABASE_URL, PGHOST, PGPORT, PGUSER,
#                            PGDATABASE, FS_PG_PORT, FS_PG_DATA. With DATADIR: a persistent cluster
#                            there (created when empty, else started again on a free port; kept)
#   fs_pipeline_start N [PARTS]  the pipeline without PostgreSQL (fs_pg_start first): the dev broker
#                            (PARTS partitions, default 12), N scorers (args from $FS_SCORER_ARGS, admin
#                            ports in FS_SCORER_ADMIN_PORTS), ingest with an API key (payments:write,
#                            outcomes:write); exports FS_INGEST_URL, FS_API_KEY_FILE; waits until ready
#   fs_pipeline_stop         stops ingest, the scorers and the broker fs_pipeline_start started
#   fs_pg_stop [MODE]        pg_ctl stop (MODE fast|immediate|smart, default fast); data dir kept
#   fs_pg_restart            start again on the SAME port and data dir (stops first if running)
#   fs_psql SQL [ARGS...]    psql -At against FS_DATABASE_URL; prints the result
#   fs_broker_start [PARTS]  starts the dev broker (default 6 partitions); exports FS_BROKERS, and
#                            KAFKA_SESSION_TIMEOUT_MS=6000 / KAFKA_HEARTBEAT_INTERVAL_MS=500 unless set
#   fs_broker_down / fs_broker_up   all mock brokers down (SIGUSR1) / up again (SIGUSR2); return
#                            once the dev broker logged it
#   fs_commit_fault          every offset commit fails from now / no longer (a toggle: SIGHUP);
#                            returns once the dev broker logged it
#   fs_bg NAME CMD...        CMD in the background, output to $FS_TEST_DIR/NAME.log (appended, so a
#                            restarted NAME keeps one log); fs_pid NAME prints its pid
#   fs_alive NAME            true while NAME runs
#   fs_kill NAME [SIG]       sends SIG (default TERM); fails if NAME is not running
#   fs_wait_exit NAME SECS   waits for NAME to exit; sets FS_EXIT_STATUS; fails the test on timeout
#   fs_wait_for SECS CMD...  polls CMD (output discarded) every 0.2 s until it succeeds, else fails;
#                            a single argument is eval'ed each try (re-expands $(...) every time)
#   fs_sentinels PARTS       one new payment per raw_payments partition, decided: a restarted scorer
#                            has then consumed whatever it would consume again (no fixed sleep)
#   fs_topic_count TOPIC     number of messages on TOPIC (all partitions, from the beginning)
#   fs_topic_has TOPIC N     true when TOPIC holds at least N messages (for fs_wait_for)
#   fs_topic_dump TOPIC      one line per message: PARTITION<TAB>OFFSET<TAB>KEY<TAB>HEADERS<TAB>PAYLOAD
#                            (HEADERS as kcat prints %h: name=value,name=value)
#   fs_topic_produce TOPIC KEY   produces each line of stdin as one message with KEY
#   fs_fail MSG              prints MSG and exits 1 (from the test's main shell, not from $(...))
#   fs_assert_eq EXP ACT MSG fails unless EXP = ACT (string comparison)
#
# Variables: REPO (repo root), BUILD (default build/release, made absolute), FS_TEST_DIR, FS_KEEP=1
# keeps the work dir, FS_LOG_TAIL (lines per log printed on failure, default 20).

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BUILD=${BUILD:-build/release}
case $BUILD in /*) ;; *) BUILD="$REPO/$BUILD" ;; esac
export REPO BUILD
FS_PG_BIN=${FS_PG_BIN:-/usr/lib/postgresql/15/bin}

declare -gA FS_PIDS=()   # NAME -> pid of its latest start
declare -ga FS_ALL_PIDS=() # every pid fs_bg started (restarts included), for cleanup
FS_TEST_DIR=${FS_TEST_DIR:-}
FS_FAIL_MSG=
FS__CLEANED=0
FS__PG_RUNNING=0
FS__PG_TMPDIR=

fs_fail() {
    FS_FAIL_MSG="$*"
    echo "FAIL: $*" >&2
    exit 1
}

fs_assert_eq() {
    if [[ "$1" != "$2" ]]; then
        fs_fail "${3:-assertion}: expected '$1', got '$2'"
    fi
    echo "ok: ${3:-assertion} ($2)"
}

FS__PERSISTENT=0

fs_setup() {
    local name=${1:?fs_setup NAME}
    if [[ -n "${2:-}" ]]; then
        FS_TEST_DIR=$2
        FS__PERSISTENT=1
    else
        FS_TEST_DIR="$REPO/.test/$name.$$"
        rm -rf "$FS_TEST_DIR"
    fi
    mkdir -p "$FS_TEST_DIR"
    chmod 755 "$FS_TEST_DIR"
    export FS_TEST_DIR
    FS__CLEANED=0
    trap 'fs__on_exit' EXIT
    # Remembers the first failing command, so a `set -e` exit names its cause and line.
    set -E
    trap 'FS_FAIL_MSG=${FS_FAIL_MSG:-"exit $? from: $BASH_COMMAND (${BASH_SOURCE[0]##*/}:$LINENO)"}' ERR
    # A signal (e.g. run.sh's timeout) becomes an exit, so the EXIT trap still cleans up.
    trap 'exit 143' TERM
    trap 'exit 130' INT
    trap 'exit 129' HUP
}

fs__on_exit() {
    local rc=$?
    fs_cleanup "$rc"
    exit "$rc"
}

# True when pid is a live child of this shell (guards against a recycled pid).
fs__is_child() {
    local pid=$1 stat ppid
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # fields after "(comm) "
    read -r _ ppid _ <<<"$stat"
    [[ "$ppid" == "$BASHPID" || "$ppid" == "$$" ]] || return 1
    [[ "${stat:0:1}" != "Z" ]]
}

fs_cleanup() {
    local rc=${1:-0} pid f deadline i
    [[ $FS__CLEANED == 1 ]] && return 0
    FS__CLEANED=1
    set +e
    trap - TERM INT HUP ERR
    # Newest first: services stop (and commit) while the broker they were started after still runs.
    for ((i = ${#FS_ALL_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${FS_ALL_PIDS[$i]}
        fs__is_child "$pid" || continue
        kill -TERM "$pid" 2>/dev/null
        deadline=$((SECONDS + 10))
        while fs__is_child "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if fs__is_child "$pid"; then
            echo "cleanup: pid $pid ignored SIGTERM for 10 s, killing" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    [[ $FS__PG_RUNNING == 1 ]] && fs_pg_stop fast >/dev/null 2>&1
    if [[ $rc != 0 && -n "$FS_TEST_DIR" && -d "$FS_TEST_DIR" ]]; then
        for f in "$FS_TEST_DIR"/*.log ${FS__PG_TMPDIR:+"$FS__PG_TMPDIR"/*.log}; do
            [[ -f "$f" ]] || continue
            echo "----- last ${FS_LOG_TAIL:-20} lines of $(basename "$f") -----" >&2
            tail -n "${FS_LOG_TAIL:-20}" "$f" >&2
        done
        # Repeated last, so it survives a runner that shows only the tail of the output.
        if [[ -z "$FS_FAIL_MSG" ]] && ((rc > 128)); then FS_FAIL_MSG="terminated by signal $((rc - 128))"; fi
        echo "FAILED (exit $rc): ${FS_FAIL_MSG:-a command failed}" >&2
    fi
    if [[ $FS__PERSISTENT == 1 ]]; then
        rm -f "$FS_TEST_DIR/.ports"
    elif [[ "${FS_KEEP:-0}" == 1 ]]; then
        echo "FS_KEEP=1: kept $FS_TEST_DIR" >&2
    else
        [[ -n "$FS_TEST_DIR" ]] && rm -rf "$FS_TEST_DIR"
        [[ -n "$FS__PG_TMPDIR" ]] && rm -rf "$FS__PG_TMPDIR"
    fi
    return 0
}

# A port below the kernel's ephemeral range (so outgoing connections cannot take it before the
# server binds), bindable right now, and not handed out before in this test.
fs_free_port() {
    local used="" port i
    [[ -n "$FS_TEST_DIR" && -f "$FS_TEST_DIR/.ports" ]] && used=$(cat "$FS_TEST_DIR/.ports")
    if command -v python3 >/dev/null 2>&1; then
        port=$(python3 - $used <<'EOF'
import random, socket, sys
used = set(sys.argv[1:])
for _ in range(500):
    p = random.randrange(20000, 32000)
    if str(p) in used:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
EOF
        )
    else # no python: a refused connection means nobody listens there
        for ((i = 0; i < 500; i++)); do
            port=$((20000 + RANDOM % 12000))
            [[ " $used " == *" $port "* ]] && continue
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
            port=
        done
    fi
    [[ -n "$port" ]] || { echo "fs_free_port: no free port found" >&2; return 1; }
    [[ -n "$FS_TEST_DIR" && -d "$FS_TEST_DIR" ]] && echo "$port" >>"$FS_TEST_DIR/.ports"
    echo "$port"
}

# Runs a PostgreSQL tool as the postgres user when we are root (initdb and postgres refuse root).
fs__pg_as() {
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@") # from /: the postgres user may not enter our cwd
    else
        "$@"
    fi
}

# Sets FS_PG_DATA: inside the test dir when the postgres user can reach it and the socket path fits
# (108 bytes), else a private dir under /tmp (e.g. a clone under /root, which is mode 700).
# Not called in $(...): FS__PG_TMPDIR must survive for the cleanup.
fs__pg_datadir() {
    local d="$FS_TEST_DIR/pg"
    if ! ((${#d} < 80)) || { [[ $(id -u) == 0 ]] && ! runuser -u postgres -- test -x "$FS_TEST_DIR"; }; then
        FS__PG_TMPDIR=$(mktemp -d /tmp/fraudshield-pg.XXXXXX)
        chmod 755 "$FS__PG_TMPDIR"
        d="$FS__PG_TMPDIR/pg"
    fi
    mkdir -p "$d"
    [[ $(id -u) == 0 ]] && chown postgres: "$d"
    chmod 700 "$d"
    FS_PG_DATA=$d
}

fs_pg_start() {
    [[ -n "$FS_TEST_DIR" ]] || fs_fail "fs_pg_start: call fs_setup first"
    local port data log
    port=$(fs_free_port)
    if [[ -n "${1:-}" ]]; then
        fs__pg_keep "$1" "$port" && return 0
    else
        fs__pg_datadir
    fi
    data=$FS_PG_DATA
    log="$(dirname "$data")/postgres.log" # where the postgres user can write
    : >"$log"
    [[ $(id -u) == 0 ]] && chown postgres: "$log"
    fs__pg_as "$FS_PG_BIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$FS_TEST_DIR/initdb.out" 2>&1 || { cat "$FS_TEST_DIR/initdb.out" >&2; fs_fail "initdb failed"; }
    # Speed over durability: test clusters are thrown away. Trust auth for local + 127.0.0.1 (initdb -A).
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
EOF
    # FS_PG_CONF: more settings for this cluster, one per line (benchmarks: memory sizing)
    [[ -z "${FS_PG_CONF:-}" ]] || printf '%s\n' "$FS_PG_CONF" >>"$data/postgresql.conf"
    FS_PG_DATA=$data FS_PG_PORT=$port FS_PG_LOG=$log
    export FS_PG_DATA FS_PG_PORT
    fs__pg_ctl_start
    "$FS_PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres fraudshield ||
        fs_fail "createdb fraudshield failed"
    fs__pg_env
}

fs__pg_env() {
    export PGHOST=127.0.0.1 PGPORT=$FS_PG_PORT PGUSER=postgres PGDATABASE=fraudshield
    export FS_DATABASE_URL="postgresql://postgres@127.0.0.1:$FS_PG_PORT/fraudshield"
}

# fs_pg_start DATADIR: sets FS_PG_DATA to DATADIR; when a cluster is already there, starts it on
# PORT (stopping a server an interrupted run left on it) and returns 0; else returns 1 (initdb).
fs__pg_keep() {
    local data=$1 port=$2
    mkdir -p "$data"
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- test -x "$(dirname "$data")" ||
            fs_fail "fs_pg_start: the postgres user cannot reach $(dirname "$data")"
        chown postgres: "$data"
    fi
    chmod 700 "$data"
    FS_PG_DATA=$data FS_PG_PORT=$port FS_PG_LOG="$(dirname "$data")/postgres.log"
    export FS_PG_DATA FS_PG_PORT
    [[ -f "$data/PG_VERSION" ]] || return 1
    if fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null ||
            fs_fail "fs_pg_start: cannot stop the server left running on $data"
    fi
    sed -i "s/^port = .*/port = $port/" "$data/postgresql.conf"
    touch "$FS_PG_LOG"
    [[ $(id -u) == 0 ]] && chown postgres: "$FS_PG_LOG"
    fs__pg_ctl_start
    fs__pg_env
    return 0
}

fs__pg_ctl_start() {
    fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$FS_PG_DATA" -l "$FS_PG_LOG" -w -t 60 start >/dev/null ||
        fs_fail "PostgreSQL did not start (see $FS_PG_LOG)"
    FS__PG_RUNNING=1
}

fs_pg_stop() {
    local mode=${1:-fast}
    [[ -n "${FS_PG_DATA:-}" ]] || return 0
    fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$FS_PG_DATA" -m "$mode" -w -t 60 stop >/dev/null ||
        { echo "fs_pg_stop: pg_ctl stop failed" >&2; return 1; }
    FS__PG_RUNNING=0
}

fs_pg_restart() {
    [[ -n "${FS_PG_DATA:-}" ]] || fs_fail "fs_pg_restart: fs_pg_start was not called"
    if fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$FS_PG_DATA" status >/dev/null 2>&1; then
        fs_pg_stop fast
    fi
    fs__pg_ctl_start
}

fs_psql() {
    local sql=${1:?fs_psql SQL}
    shift
    psql "$FS_DATABASE_URL" -X -q -At -v ON_ERROR_STOP=1 "$@" -c "$sql"
}

# fs_rows TABLE: its row count. fs_rows_at_least TABLE N: a condition for fs_wait_for.
fs_rows() { fs_psql "SELECT count(*) FROM ${1:?fs_rows TABLE}"; }
fs_rows_at_least() { (($(fs_rows "${1:?fs_rows_at_least TABLE N}") >= ${2:?fs_rows_at_least TABLE N})); }

# fs_produce_at RUN N FROM AT [PARTITION]: events FROM..N-1 of tests/integration/gen_raw_payments.sh
# RUN N onto raw_payments (PARTITION, else by key), their event times moved into the minute AT
# (YYYY-mm-ddTHH:MM; the generator's seconds kept): traffic at a chosen point in event time.
fs_produce_at() {
    bash "$REPO/tests/integration/gen_raw_payments.sh" "$1" "$2" | sed -n "$(($3 + 1)),\$p" |
        sed -E "s/\"event_time\":\"[0-9-]+T[0-9]{2}:[0-9]{2}/\"event_time\":\"$4/" |
        kcat -b "$FS_BROKERS" -P -t raw_payments -K: ${5:+-p "$5"}
}

fs_bg() {
    local name=${1:?fs_bg NAME CMD...}
    shift
    [[ -n "$FS_TEST_DIR" ]] || fs_fail "fs_bg: call fs_setup first"
    "$@" >>"$FS_TEST_DIR/$name.log" 2>&1 &
    FS_PIDS[$name]=$!
    FS_ALL_PIDS+=("$!")
}

fs_pid() {
    [[ -n "${FS_PIDS[${1:?fs_pid NAME}]:-}" ]] || { echo "fs_pid: no process named $1" >&2; return 1; }
    echo "${FS_PIDS[$1]}"
}

fs_alive() {
    local pid=${FS_PIDS[${1:?fs_alive NAME}]:-}
    [[ -n "$pid" ]] && fs__is_child "$pid"
}

fs_kill() {
    local name=${1:?fs_kill NAME [SIG]} sig=${2:-TERM} pid
    pid=$(fs_pid "$name") || return 1
    if ! fs__is_child "$pid"; then
        echo "fs_kill: $name (pid $pid) is not running" >&2
        return 1
    fi
    kill -"$sig" "$pid"
}

# Waits for NAME to exit; its exit status goes to FS_EXIT_STATUS (128+n when killed by signal n).
fs_wait_exit() {
    local name=${1:?fs_wait_exit NAME SECS} secs=${2:-30} pid deadline
    pid=$(fs_pid "$name") || fs_fail "fs_wait_exit: no process named $name"
    deadline=$((SECONDS + secs))
    while fs__is_child "$pid"; do
        ((SECONDS < deadline)) || fs_fail "$name (pid $pid) did not exit within ${secs}s"
        sleep 0.1
    done
    FS_EXIT_STATUS=0
    wait "$pid" 2>/dev/null || FS_EXIT_STATUS=$?
}

# One argument is evaluated as a shell string on every try, so expansions are re-done each time:
#   fs_wait_for 30 '(( $(fs_psql "SELECT count(*) FROM decisions") >= 10 ))'
# Several arguments run as a command whose arguments were expanded ONCE, at the call.
fs_wait_for() {
    local secs=${1:?fs_wait_for SECS CMD...} start
    shift
    start=$SECONDS
    until if (($# == 1)); then eval "$1"; else "$@"; fi >/dev/null 2>&1; do
        ((SECONDS - start < secs)) || fs_fail "timed out after ${secs}s waiting for: $*"
        sleep 0.2
    done
}

fs_broker_start() {
    local parts=${1:-6} file deadline
    [[ -n "$FS_TEST_DIR" ]] || fs_fail "fs_broker_start: call fs_setup first"
    file="$FS_TEST_DIR/kafka.bootstrap"
    [[ -x "$BUILD/bin/fraudshield-devbroker" ]] || fs_fail "missing $BUILD/bin/fraudshield-devbroker (make BUILD=...)"
    fs_bg devbroker env FS_PARTITIONS="$parts" FS_BOOTSTRAP_FILE="$file" \
        "$BUILD/bin/fraudshield-devbroker"
    deadline=$((SECONDS + 30))
    until [[ -s "$file" ]]; do
        fs_alive devbroker || fs_fail "the dev broker exited during start-up (see devbroker.log)"
        ((SECONDS < deadline)) || fs_fail "the dev broker wrote no bootstrap file within 30s"
        sleep 0.1
    done
    FS_BROKERS=$(head -n 1 "$file")
    export FS_BROKERS
    # The mock cluster (librdkafka 2.0.2) completes a group rebalance only when session.timeout.ms
    # runs out (45 s by default), and notices a killed member only after it too: consumers started
    # by the test (through the KAFKA_* passthrough) use 6 s so that a rebalance takes seconds.
    export KAFKA_SESSION_TIMEOUT_MS=${KAFKA_SESSION_TIMEOUT_MS:-6000}
    export KAFKA_HEARTBEAT_INTERVAL_MS=${KAFKA_HEARTBEAT_INTERVAL_MS:-500}
}

# fs__devbroker_signal SIG EVENT: sends SIG and returns once the dev broker has logged EVENT once
# more (it acts on signals between 50 ms sleeps): the fault is in place when the caller goes on.
fs__devbroker_signal() {
    local sig=$1 pattern="\"event\":\"$2\"" before
    before=$(grep -cE "$pattern" "$FS_TEST_DIR/devbroker.log" || true)
    fs_kill devbroker "$sig"
    fs_wait_for 10 "(( \$(grep -cE '$pattern' '$FS_TEST_DIR/devbroker.log') > $before ))"
}
fs_broker_down() { fs__devbroker_signal USR1 brokers_down; }
fs_broker_up() { fs__devbroker_signal USR2 brokers_up; }
fs_commit_fault() { fs__devbroker_signal HUP 'fault_(injected|cleared)'; }

# fs_sentinels PARTS: one new payment on each partition of raw_payments (0..PARTS-1), then waits
# until a scorer decided them all (60 s). A partition is consumed in order, so whatever a restarted
# scorer was going to consume again came before its sentinel: "nothing consumed again" is then
# checked without a fixed sleep. Prints the sentinels' payment_id prefix (for SQL LIKE).
fs_sentinels() {
    local parts=${1:?fs_sentinels PARTS} run=$((RANDOM % 60000 + 70000)) p prefix
    prefix=$(printf '%08x-0000-4000-8000-' "$run")
    for ((p = 0; p < parts; p++)); do
        bash "$REPO/tests/integration/gen_raw_payments.sh" "$run" "$parts" | sed -n "$((p + 1))p" |
            kcat -b "$FS_BROKERS" -P -t raw_payments -p "$p" -K:
    done
    fs_wait_for 60 "(( \$(fs_psql \"SELECT count(*) FROM decisions WHERE payment_id::text LIKE '$prefix%'\") == $parts ))"
    echo "$prefix"
}

fs_topic_count() {
    local topic=${1:?fs_topic_count TOPIC}
    timeout 60 kcat -b "$FS_BROKERS" -C -t "$topic" -o beginning -e -q -f '%o\n' | wc -l
}

fs_topic_has() {
    local n
    n=$(fs_topic_count "${1:?fs_topic_has TOPIC N}") || return 1
    ((n >= ${2:?fs_topic_has TOPIC N}))
}

fs_topic_dump() {
    local topic=${1:?fs_topic_dump TOPIC}
    timeout 60 kcat -b "$FS_BROKERS" -C -t "$topic" -o beginning -e -q \
        -f '%p\t%o\t%k\t%h\t%s\n'
}

fs_topic_produce() {
    local topic=${1:?fs_topic_produce TOPIC KEY} key=${2:-}
    timeout 60 kcat -b "$FS_BROKERS" -P -t "$topic" ${key:+-k "$key"}
}

# fs_validate_topics ARGS...: tests/integration/validate_topics.py against schemas/json, with a
# python3 that has jsonschema (Debian's python3-jsonschema is /usr/bin/python3's; make deps).
fs_validate_topics() {
    local py=/usr/bin/python3
    "$py" -c 'import jsonschema' 2>/dev/null || py=python3
    "$py" "$REPO/tests/integration/validate_topics.py" "$REPO/schemas/json" "$@"
}

# fs_answer_schema METHOD PATH STATUS BODY_FILE: the schemas/json file an answer of ingest's HTTP
# API validates against (docs/ingest.md); nothing for the answers without one (/health, /ready,
# /metrics, a Shopify free order's 200). A batch's 503 is its batch answer once the items were read,
# an error body before.
fs_answer_schema() {
    local route="$1 ${2%/}" status=$3
    if ((status >= 400)); then
        if [[ $route == "POST /api/v1/payments/batch" ]] && grep -q '"results":' "$4"; then
            echo batch-result.v1.json
        else
            echo error.v1.json
        fi
        return 0
    fi
    ((status >= 200 && status < 300)) || return 0
    case $route in
    "POST /api/v1/payments") echo payment-accepted.v1.json ;;
    "POST /webhooks/orders/create") if [[ $status == 202 ]]; then echo payment-accepted.v1.json; fi ;;
    "POST /api/v1/payments/batch") echo batch-result.v1.json ;;
    "POST /api/v1/payments/"*"/outcome") echo outcome-accepted.v1.json ;;
    "GET /api/v1/payments/"*) echo payment-status.v1.json ;;
    esac
    return 0
}

# fs_record_answer METHOD PATH STATUS BODY_FILE [HEADERS_FILE]: an answer of ingest's HTTP API, kept
# for fs_check_answers in $FS_TEST_DIR/answers/SCHEMA.jsonl (one body a line), SCHEMA the file
# fs_answer_schema gives. Not kept: answers without a schema, and a 4xx/5xx that HEADERS_FILE shows
# is not JSON (libevent's own answers, docs/ingest.md, Limits).
fs_record_answer() {
    local schema
    schema=$(fs_answer_schema "$1" "$2" "$3" "$4")
    [[ -n "$schema" ]] || return 0
    if [[ -n "${5:-}" ]] && (($3 >= 400)); then
        grep -qi '^content-type: *application/json' "$5" || return 0
    fi
    mkdir -p "$FS_TEST_DIR/answers"
    { tr -d '\n' <"$4"; echo; } >>"$FS_TEST_DIR/answers/$schema.jsonl"
}

# fs_check_answers SCHEMA...: every answer fs_record_answer kept validates against its schema
# (validate_topics.py --bodies), each SCHEMA named got at least one, and each error code in them
# (error bodies, batch results) is listed (as `code`) in docs/ingest.md.
fs_check_answers() {
    local schema file out codes code
    for schema in "$@"; do
        [[ -s "$FS_TEST_DIR/answers/$schema.jsonl" ]] || fs_fail "no answer recorded for $schema"
    done
    for file in "$FS_TEST_DIR"/answers/*.jsonl; do
        [[ -e "$file" ]] || continue
        schema=$(basename "$file" .jsonl)
        out=$(fs_validate_topics --bodies "$schema" "$file") || fs_fail "answers: $out"
        codes=$(sed '1,/^error codes:$/d' <<<"$out" | tr '\n' ' ')
        for code in $codes; do
            grep -qF "\`$code\`" "$REPO/docs/ingest.md" || fs_fail "error code $code is not in docs/ingest.md"
        done
        echo "ok: $(head -n 1 <<<"$out")${codes:+; codes: $codes}"
    done
}

# fs_pii_secret FILE: a fresh pseudonymization secret (32 random bytes as hex), mode 0600.
fs_pii_secret() {
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"${1:?fs_pii_secret FILE}")
}

# The pipeline of `make run` (scripts/run-local.sh) on free ports, for benchmarks and evaluations.
fs_pipeline_start() {
    local n=${1:-2} parts=${2:-12} i port
    fs_broker_start "$parts"
    [[ -s "$FS_TEST_DIR/pii.secret" ]] ||
        fs_pii_secret "$FS_TEST_DIR/pii.secret"
    rm -f "$FS_TEST_DIR/api-keys"
    "$BUILD/bin/fraudshield-ingest" keys create --keys-file "$FS_TEST_DIR/api-keys" --id pipeline \
        --scopes payments:write,outcomes:write 2>/dev/null >"$FS_TEST_DIR/api.key" ||
        fs_fail "could not create an API key"
    FS_API_KEY_FILE="$FS_TEST_DIR/api.key"
    FS_SCORER_ADMIN_PORTS=()
    for ((i = 1; i <= n; i++)); do
        port=$(fs_free_port)
        FS_SCORER_ADMIN_PORTS+=("$port")
        # shellcheck disable=SC2086 # FS_SCORER_ARGS: options, split on spaces
        fs_bg "scorer-$i" env FS_SCORER_ID="scorer-$i" FS_ADMIN_PORT="$port" \
            "$BUILD/bin/fraudshield-scorer" ${FS_SCORER_ARGS:-}
    done
    port=$(fs_free_port)
    fs_bg ingest env FS_LISTEN_PORT="$port" FS_PII_SECRET_FILE="$FS_TEST_DIR/pii.secret" \
        FS_KEYS_FILE="$FS_TEST_DIR/api-keys" "$BUILD/bin/fraudshield-ingest"
    FS_INGEST_URL="http://127.0.0.1:$port"
    export FS_INGEST_URL FS_API_KEY_FILE
    fs_wait_for 60 curl -sf "$FS_INGEST_URL/ready"
    for port in "${FS_SCORER_ADMIN_PORTS[@]}"; do fs_wait_for 90 curl -sf "http://127.0.0.1:$port/ready"; done
}

fs_pipeline_stop() {
    local name i
    for name in ingest $(for ((i = ${#FS_SCORER_ADMIN_PORTS[@]}; i >= 1; i--)); do echo "scorer-$i"; done) devbroker; do
        fs_alive "$name" || continue
        fs_kill "$name" TERM
        fs_wait_exit "$name" 60
    done
}
