#!/bin/sh
# docker-compose.yml mounts this into the postgres image's /docker-entrypoint-initdb.d: on the first
# start with an empty data volume it creates ingest's read-only login (ingest-role.sql) with the
# password FS_INGEST_DB_PASSWORD. For a volume made before, run the same once by hand:
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/50-ingest-role.sh
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$FS_INGEST_DB_PASSWORD" --username "$POSTGRES_USER" \
    --dbname "$POSTGRES_DB" -f /fraudshield/ingest-role.sql
