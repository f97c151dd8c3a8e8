#!/usr/bin/env bash
# gen_raw_payments.sh RUN N [USERS] [COUNTRY]: prints N valid raw_payments events (schema v1, what
# ingest produces) as "KEY:JSON" lines for `kcat -P -K:`; KEY is the country, as ingest keys them.
#   RUN      a number making the payment_ids of this run unique: UUID RUN-0000-4000-8000-<i>
#   USERS    distinct users (default 1000); user-(i % USERS), card last four from the user
#   COUNTRY  put every event on this country/key (default: cycle through six countries)
# Amounts 1.00 .. 1500.99 EUR (about a third at or above the HIGH_VALUE rule: alerts). Event times:
# spread over the last hour (so velocity windows see realistic densities). GEN_DIGESTS=1 adds an
# email digest per user and a device digest per (user % 97) (risk vault entries; no IP, so the
# velocity rules count what they count without it). awk only: runs on a bare Debian with no python.
set -euo pipefail
run=${1:?gen_raw_payments.sh RUN N [USERS] [COUNTRY]}
n=${2:?gen_raw_payments.sh RUN N [USERS] [COUNTRY]}
users=${3:-1000}
country=${4:-}
base=$(date -u -d '1 hour ago' +%Y-%m-%dT%H)
awk -v run="$run" -v n="$n" -v users="$users" -v fixed="$country" -v base="$base" \
    -v digests="${GEN_DIGESTS:-0}" 'BEGIN {
    split("DE FR US GB NL ES", cc, " ")
    for (i = 0; i < n; i++) {
        c = fixed != "" ? fixed : cc[i % 6 + 1]
        u = i % users
        ts = sprintf("%s:%02d:%02d.%03dZ", base, int(i / 60) % 60, i % 60, (i * 7) % 1000)
        id = sprintf("%08x-0000-4000-8000-%012x", run, i)
        printf "%s:{\"schema_version\":1,\"payment_id\":\"%s\",\"user_id\":\"user-%d\",", c, id, u
        printf "\"merchant_id\":\"m-%d\",\"amount_minor\":%d,\"currency\":\"EUR\",", i % 17, 100 + (i * 37) % 150000
        printf "\"payment_method\":\"card\",\"country\":\"%s\",\"card_last_four\":\"%04d\",", c, u % 10000
        if (digests == 1) {
            e = sprintf("%08x", u); d = sprintf("%08x", u % 97 + 1000000)
            printf "\"email_digest\":\"%s%s%s%s%s%s%s%s\",", e, e, e, e, e, e, e, e
            printf "\"device_id_digest\":\"%s%s%s%s%s%s%s%s\",", d, d, d, d, d, d, d, d
        }
        printf "\"event_time\":\"%s\",\"ingest_time\":\"%s\"}\n", ts, ts
    }
}'
