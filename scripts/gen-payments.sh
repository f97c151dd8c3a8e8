#!/usr/bin/env bash
# scripts/gen-payments.sh N [RUN] [DAYS] [CUSTOMERS] [TERMINALS] [START]: prints N realistic
# raw_payments v1 events (what ingest produces: identifiers already digested) as "KEY:JSON" lines
# for `kcat -P -K:`, in event-time order.
#
#   RUN        makes the payment_ids of this run unique (UUID RUN-0000-4000-8000-<i>), default 1
#   DAYS       event times spread evenly (with jitter) over this many days, default 30
#   CUSTOMERS  default 20000; each has a home country (DE 30%, FR 20%, GB 15%, US 15%, NL 10%,
#              ES 5%, NG 2%, BR 3%), an email, a device, an IP (1 in 50 customers share an IP with
#              others), one card fingerprint (1 in 10 has a second card); 1 in 20 payments ships
#              abroad (shipping country differs)
#   TERMINALS  default 5000 merchants/terminals; a customer uses a few terminals near "home"
#   START      first event time, seconds since the epoch (default: DAYS days before now)
# KEY is the user id (FS_GEN_KEY=country keys by country as ingest does; the benchmark keys by user
# so that a backlog spreads over all partitions of the dev broker). Digests are 64 hex characters
# derived from the ids (deterministic). Amounts: mostly 5-150 EUR, a tail up to ~6000. awk only.
set -euo pipefail
n=${1:?gen-payments.sh N [RUN] [DAYS] [CUSTOMERS] [TERMINALS] [START]}
run=${2:-1}
days=${3:-30}
customers=${4:-20000}
terminals=${5:-5000}
start=${6:-$(($(date +%s) - days * 86400))}
awk -v n="$n" -v run="$run" -v days="$days" -v nc="$customers" -v nt="$terminals" \
    -v start="$start" -v keyby="${FS_GEN_KEY:-user}" '
function hex64(kind, k,    s, j) { # 64 hex digits, unique per (kind, k) for k < 2^32
    s = ""
    for (j = 0; j < 8; j++) s = s sprintf("%08x", (k * (2654435761 + 2 * j) + kind * 97 + j * 40503) % 4294967296)
    return s
}
function country(c,    r) {
    r = (c * 7919) % 100
    if (r < 30) return "DE"; if (r < 50) return "FR"; if (r < 65) return "GB"; if (r < 80) return "US"
    if (r < 90) return "NL"; if (r < 95) return "ES"; if (r < 97) return "NG"; return "BR"
}
function iso(ms,    s) {
    s = int(ms / 1000)
    return strftime("%Y-%m-%dT%H:%M:%S", s, 1) sprintf(".%03dZ", ms % 1000)
}
BEGIN {
    srand(run)
    step = days * 86400000 / n
    for (i = 0; i < n; i++) {
        c = int(rand() * nc)
        t = int(start * 1000 + i * step + rand() * step * 0.9)
        cc = country(c)
        ship = rand() < 0.05 ? "GB" : cc
        term = (c * 31 + int(rand() * 4) * 1237) % nt
        card = (rand() < 0.1 && c % 10 == 0) ? c + 1000000000 : c
        ip = (c % 50 == 0) ? int(c / 1000) + 2000000000 : c
        u = rand()
        amount = u < 0.97 ? 500 + int(rand() * 14500) : 15000 + int(rand() * rand() * 600000)
        key = keyby == "country" ? cc : "c" c
        printf "%s:{\"schema_version\":1,\"payment_id\":\"%08x-0000-4000-8000-%012x\",", key, run, i
        printf "\"user_id\":\"c%d\",\"merchant_id\":\"t%d\",\"amount_minor\":%d,", c, term, amount
        printf "\"currency\":\"EUR\",\"payment_method\":\"card\",\"card_last_four\":\"%04d\",", card % 10000
        printf "\"card_fingerprint_digest\":\"%s\",\"ip_digest\":\"%s\",", hex64(1, card), hex64(2, ip)
        printf "\"email_digest\":\"%s\",\"device_id_digest\":\"%s\",", hex64(3, c), hex64(4, c)
        printf "\"country\":\"%s\",\"billing_country\":\"%s\",\"shipping_country\":\"%s\",", cc, cc, ship
        printf "\"event_time\":\"%s\",\"ingest_time\":\"%s\"}\n", iso(t), iso(t)
    }
}'
