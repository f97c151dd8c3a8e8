#!/bin/sh
# docker-compose.yml mounts this into the postgres image's /docker-entrypoint-initdb.d: on the first
# start with an empty data volume it makes postgresql.conf include FraudShield's settings
# (deploy/postgres/fraudshield.conf, mounted at /etc/postgresql/fraudshield.conf); they apply from
# the restart that ends initialization. For a volume made before, once by hand, then restart:
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/40-tuning.sh
#   docker compose restart postgres
set -eu
line="include_if_exists '/etc/postgresql/fraudshield.conf'"
grep -qxF "$line" "$PGDATA/postgresql.conf" || echo "$line" >>"$PGDATA/postgresql.conf"
