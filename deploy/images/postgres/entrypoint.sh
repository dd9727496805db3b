#!/bin/sh
# The official postgres image's entry point contract, on Debian's PostgreSQL:
# - started as root, it owns PGDATA and the socket directory to `postgres` and
#   runs the server as that user;
# - on first start (no PG_VERSION) it runs initdb with POSTGRES_USER (default
#   postgres) as the superuser, POSTGRES_PASSWORD as its password (required),
#   password authentication for every host, and creates POSTGRES_DB (default
#   POSTGRES_USER); nothing listens until that is done, so pg_isready answers
#   only for an initialised server;
# - any other command (`sh`, `psql`...) runs as it is.
set -eu
case "${1:-}" in -*) set -- postgres "$@" ;; esac
[ "${1:-}" = postgres ] || exec "$@"

: "${PGDATA:=/var/lib/postgresql/data}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set: it is the superuser password}"
    user=${POSTGRES_USER:-postgres}
    database=${POSTGRES_DB:-$user}
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$password_file" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        # single-user mode: no server runs, so no client sees a half-made cluster
        quoted=$(printf '%s' "$database" | sed 's/"/""/g')
        printf 'CREATE DATABASE "%s"\n' "$quoted" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "docker-entrypoint: initialised $PGDATA (superuser $user, database $database)"
fi
exec "$@"
