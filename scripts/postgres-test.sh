#!/usr/bin/env bash
# A throwaway PostgreSQL server for the state tests and benchmarks, idempotent: starts
# the cluster in $CLOCHE_PG_DIR (default /var/tmp/cloche-pg) on 127.0.0.1:$CLOCHE_PG_PORT
# (default 54329) if it is not running, creates the database `cloche_test`, and prints
# its DSN on stdout (everything else goes to stderr):
#
#   export CLOCHE_TEST_PG_DSN=$(scripts/postgres-test.sh)
#
# `scripts/postgres-test.sh stop` stops it. Needs Debian's `postgresql` package.
set -euo pipefail
DIR=${CLOCHE_PG_DIR:-/var/tmp/cloche-pg}
PORT=${CLOCHE_PG_PORT:-54329}
DB=cloche_test
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
    echo "postgres-test: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    exit 1
fi
as_pg() { runuser -u postgres -- "$@"; }

if [[ "${1:-}" == "stop" ]]; then
    [[ -f "$DIR/data/postmaster.pid" ]] && as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
    exit 0
fi

mkdir -p "$DIR"
chown postgres:postgres "$DIR"
chmod 700 "$DIR"
if [[ ! -f "$DIR/data/PG_VERSION" ]]; then
    rm -rf "$DIR/data"
    as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >&2
    cat >>"$DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
CONF
fi
if ! as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start >&2
fi
for _ in $(seq 1 100); do
    as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.1
done
if ! as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB" >&2
fi
echo "postgresql://postgres@127.0.0.1:$PORT/$DB"
