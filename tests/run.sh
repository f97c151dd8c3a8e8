#!/usr/bin/env bash
# tests/run.sh [unit|integration|NAME...]: runs the test suite, each test on its own with a timeout.
#
#   unit         the binaries $BUILD/tests/test_* (cmocka; test_fuzz_*: the fuzz corpora replayed)
#   integration  the scripts tests/integration/test_*.sh
#   NAME...      the named tests (test_x or test_x.sh, unit or integration)
#   (nothing)    unit, then integration
#
# Prints `PASS name (Ns)` / `FAIL name (Ns)` per test, the last 60 lines of a failed test's output
# (the whole output stays in .test/logs/NAME.out), and as its LAST line `N passed, M failed`.
# Exit status 1 when any test failed. Env: BUILD (default build/release), FS_UNIT_TIMEOUT (120 s),
# FS_INTEGRATION_TIMEOUT (600 s), FS_KEEP=1 keeps the tests' work dirs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUILD=${BUILD:-build/release}
case $BUILD in /*) ;; *) BUILD="$REPO/$BUILD" ;; esac
export REPO BUILD
# Sanitizer builds (make SANITIZE=1): a UBSan finding fails the process, with a stack trace.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
LOGS="$REPO/.test/logs"
mkdir -p "$LOGS"

passed=0
failed=0
current=

# Ctrl-C reaches only our process group; timeout runs each test in its own group, so forward it.
on_signal() {
    [[ -n "$current" ]] && kill -TERM "$current" 2>/dev/null && wait "$current" 2>/dev/null
    echo "interrupted"
    echo "$passed passed, $((failed + 1)) failed"
    exit 130
}
trap on_signal INT TERM

# Work dirs of killed earlier runs (.test/NAME.PID whose PID is gone): stop their PostgreSQL, remove.
clean_stale() {
    local d pid
    for d in "$REPO"/.test/*.[0-9]*; do
        [[ -d "$d" ]] || continue
        pid=${d##*.}
        kill -0 "$pid" 2>/dev/null && continue
        local data real
        for data in "$d/pg" "$d/run/pg"; do # a test's cluster, or test_make_run's run-local.sh one
            [[ -e "$data" ]] || continue
            real=$(readlink -f "$data") # a link to /var/tmp where postgres cannot reach .test
            if [[ -f "$real/postmaster.pid" ]]; then
                runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$real" -m immediate stop \
                    >/dev/null 2>&1 || /usr/lib/postgresql/15/bin/pg_ctl -D "$real" -m immediate stop \
                    >/dev/null 2>&1 || true
            fi
            [[ "$real" == /var/tmp/fraudshield-*/pg ]] && rm -rf "$(dirname "$real")"
        done
        rm -rf "$d"
    done
}

# run_one NAME TIMEOUT CMD...
run_one() {
    local name=$1 secs=$2 start rc=0 out
    shift 2
    out="$LOGS/$name.out"
    start=$SECONDS
    timeout -k 30 "$secs" "$@" >"$out" 2>&1 </dev/null &
    current=$!
    wait "$current" || rc=$?
    current=
    if [[ $rc == 0 ]]; then
        echo "PASS $name ($((SECONDS - start))s)"
        passed=$((passed + 1))
    else
        [[ $rc == 124 ]] && echo "(timed out after ${secs}s)" >>"$out"
        echo "FAIL $name ($((SECONDS - start))s)"
        echo "----- last 60 lines of $name (exit $rc; full output: ${out#"$REPO"/}) -----"
        tail -n 60 "$out"
        echo "----- end of $name -----"
        failed=$((failed + 1))
    fi
}

run_unit() {
    local t
    for t in "$BUILD"/tests/test_*; do
        [[ -f "$t" && -x "$t" ]] || continue
        run_one "$(basename "$t")" "${FS_UNIT_TIMEOUT:-120}" "$t"
    done
}

run_integration() {
    local t
    for t in "$REPO"/tests/integration/test_*.sh; do
        [[ -f "$t" ]] || continue
        run_one "$(basename "$t" .sh)" "${FS_INTEGRATION_TIMEOUT:-600}" bash "$t"
    done
}

run_named() {
    local name=${1%.sh}
    if [[ -x "$BUILD/tests/$name" ]]; then
        run_one "$name" "${FS_UNIT_TIMEOUT:-120}" "$BUILD/tests/$name"
    elif [[ -f "$REPO/tests/integration/$name.sh" ]]; then
        run_one "$name" "${FS_INTEGRATION_TIMEOUT:-600}" bash "$REPO/tests/integration/$name.sh"
    else
        echo "FAIL $name (0s)"
        echo "no unit test $BUILD/tests/$name and no tests/integration/$name.sh"
        failed=$((failed + 1))
    fi
}

clean_stale
if [[ $# == 0 ]]; then
    run_unit
    run_integration
else
    for arg in "$@"; do
        case $arg in
        unit) run_unit ;;
        integration) run_integration ;;
        *) run_named "$arg" ;;
        esac
    done
fi

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
