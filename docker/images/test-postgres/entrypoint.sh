#!/bin/sh
# Initialises $PGDATA on first start (superuser $POSTGRES_USER, default postgres, with the
# password in $POSTGRES_PASSWORD; password auth for every TCP client; a database named
# $POSTGRES_DB when set, like the official image) and runs postgres
# in the foreground, listening on all addresses. Extra arguments go to postgres.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ "$(id -u)" = 0 ]; then
  # A fresh volume or bind mount may be root-owned: fix it, then drop to postgres.
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "berth-postgres: POSTGRES_PASSWORD is empty; refusing to create a cluster without a password" >&2
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --pgdata="$PGDATA" --username="${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
    # As the official image does: an extra database, owned by the superuser.
    printf 'CREATE DATABASE "%s";\n' "$(printf %s "$POSTGRES_DB" | sed 's/"/""/g')" |
      postgres --single -D "$PGDATA" -c jit=off postgres >/dev/null
  fi
  echo "berth-postgres: initialised $PGDATA ($(postgres --version))" >&2
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off -c unix_socket_directories=/run/postgresql "$@"
