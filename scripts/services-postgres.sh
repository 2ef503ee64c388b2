#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the PostgreSQL queue backend's tests.
#
#   scripts/services-postgres.sh start   # initdb + postgres on 127.0.0.1, a free port
#   scripts/services-postgres.sh stop    # stops the server `start` started, by its PID
#
# `start`:
#   - uses Debian's server binaries (/usr/lib/postgresql/15/bin: initdb, pg_ctl,
#     postgres); installs `postgresql-15` with apt-get when they are missing;
#   - runs the server as a non-root user (LAUNCH_AGENT_PG_USER, default
#     `launchpg`, created when missing: PostgreSQL refuses to run as root);
#   - in a fresh data dir under a throwaway dir, listening on 127.0.0.1 only
#     (no Unix socket outside that dir), password auth (scram-sha-256) for the
#     role `launch` with a fresh random password each start;
#   - with TLS offered (not required) by a server certificate for localhost
#     and 127.0.0.1, signed by a throwaway CA made with openssl at each start;
#   - writes KEY=VALUE lines to $LAUNCH_AGENT_POSTGRES_ENV (default
#     ${TMPDIR:-/tmp}/launch-agent-postgres.env) that the tests read:
#       LAUNCH_AGENT_TEST_POSTGRES_URL=postgres://launch:PASSWORD@127.0.0.1:PORT/launch?sslmode=disable
#       LAUNCH_AGENT_POSTGRES_PID (the postmaster)
#       LAUNCH_AGENT_POSTGRES_DIR (data dir, log)
#       LAUNCH_AGENT_POSTGRES_BIN, LAUNCH_AGENT_POSTGRES_OS_USER (for restarts in tests)
#       LAUNCH_AGENT_POSTGRES_CA (the CA certificate, PEM, for sslmode=verify-*)
#
# Both commands are idempotent: `start` with the server still up changes
# nothing, `stop` with nothing started does nothing. Progress goes to stderr.
set -euo pipefail

ENV_FILE="${LAUNCH_AGENT_POSTGRES_ENV:-${TMPDIR:-/tmp}/launch-agent-postgres.env}"
PG_BIN="${LAUNCH_AGENT_PG_BIN:-/usr/lib/postgresql/15/bin}"
OS_USER="${LAUNCH_AGENT_PG_USER:-launchpg}"
DB_ROLE="launch"
DB_NAME="launch"
READY_TIMEOUT=30 # seconds

log() { echo "services-postgres: $*" >&2; }
die() {
  echo "services-postgres: error: $*" >&2
  exit 1
}

env_value() {
  [ -f "$ENV_FILE" ] || return 0
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# True when PID is alive and is a postgres process (a recycled PID of some
# other process is never signalled).
pid_is_postgres() {
  local pid="$1"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
    grep -qa -- "postgres" "/proc/$pid/cmdline" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the server's OS user.
as_user() {
  if [ "$(id -un)" = "$OS_USER" ]; then
    "$@"
  elif [ "$(id -u)" = 0 ]; then
    runuser -u "$OS_USER" -- "$@"
  else
    die "run as root (to switch to $OS_USER) or as $OS_USER"
  fi
}

ensure_binaries() {
  if [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/postgres" ]; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "$PG_BIN has no initdb/pg_ctl/postgres; install postgresql-15 (needs root)"
  log "installing postgresql-15 (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 >&2 ||
    die "apt-get install postgresql-15 failed"
  # Debian's package starts a cluster of its own on port 5432; it is not
  # ours to keep running, but we do not stop it either.
  [ -x "$PG_BIN/postgres" ] || die "postgresql-15 installed, yet $PG_BIN/postgres is missing"
}

ensure_os_user() {
  if [ "$(id -u)" != 0 ]; then
    OS_USER="$(id -un)"
    return
  fi
  if ! id "$OS_USER" >/dev/null 2>&1; then
    log "creating system user $OS_USER"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$OS_USER"
  fi
}

# A throwaway CA and a server certificate for localhost and 127.0.0.1 in DIR.
make_certificates() {
  local tls="$1"
  command -v openssl >/dev/null || {
    [ "$(id -u)" = 0 ] || die "openssl is missing (needs root to install)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl >&2
  }
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=launch-agent test CA" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
      -extfile server.ext -out server.crt
    rm -f ca.key server.csr server.ext ca.srl
  ) >"$tls/openssl.log" 2>&1 || { cat "$tls/openssl.log" >&2; die "cannot make the TLS certificates"; }
  chmod 0600 "$tls/server.key"
  if [ "$(id -u)" = 0 ]; then chown "$OS_USER" "$tls/server.key" "$tls/server.crt"; fi
}

start() {
  local pid
  pid="$(env_value LAUNCH_AGENT_POSTGRES_PID)"
  if pid_is_postgres "$pid"; then
    log "already running (pid $pid): $ENV_FILE"
    return
  fi
  ensure_binaries
  ensure_os_user
  local dir data port password pwfile
  dir="$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-postgres.XXXXXX")"
  chmod 0755 "$dir"
  data="$dir/data"
  mkdir -p "$data" "$dir/socket" "$dir/log"
  if [ "$(id -u)" = 0 ]; then chown "$OS_USER" "$data" "$dir/socket" "$dir/log"; fi
  password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  pwfile="$dir/pwfile"
  printf '%s\n' "$password" >"$pwfile"
  if [ "$(id -u)" = 0 ]; then chown "$OS_USER" "$pwfile"; fi
  chmod 0600 "$pwfile"
  log "initdb in $data (as $OS_USER)"
  as_user "$PG_BIN/initdb" -D "$data" -U "$DB_ROLE" --pwfile="$pwfile" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$pwfile"
  make_certificates "$dir/tls"
  port="$(free_port)"
  log "starting postgres on 127.0.0.1:$port"
  as_user "$PG_BIN/pg_ctl" -D "$data" -l "$dir/log/postgres.log" -w -t "$READY_TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c max_connections=200 -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key" \
    start >&2 || { tail -n 20 "$dir/log/postgres.log" >&2; die "postgres did not start"; }
  pid="$(head -n 1 "$data/postmaster.pid")"
  PGPASSWORD="$password" "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U "$DB_ROLE" -d postgres \
    -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $DB_NAME" >&2 || die "cannot create database $DB_NAME"
  umask 077
  cat >"$ENV_FILE" <<EOF
LAUNCH_AGENT_TEST_POSTGRES_URL=postgres://$DB_ROLE:$password@127.0.0.1:$port/$DB_NAME?sslmode=disable
LAUNCH_AGENT_POSTGRES_PID=$pid
LAUNCH_AGENT_POSTGRES_DIR=$dir
LAUNCH_AGENT_POSTGRES_BIN=$PG_BIN
LAUNCH_AGENT_POSTGRES_OS_USER=$OS_USER
LAUNCH_AGENT_POSTGRES_CA=$dir/tls/ca.crt
EOF
  log "ready (pid $pid): $ENV_FILE"
}

stop() {
  local pid dir
  pid="$(env_value LAUNCH_AGENT_POSTGRES_PID)"
  dir="$(env_value LAUNCH_AGENT_POSTGRES_DIR)"
  # A test that restarted the server (pg_ctl restart) left a new postmaster:
  # its PID is in the data dir.
  if ! pid_is_postgres "$pid" && [ -n "$dir" ] && [ -r "$dir/data/postmaster.pid" ]; then
    pid="$(head -n 1 "$dir/data/postmaster.pid")"
  fi
  if pid_is_postgres "$pid"; then
    log "stopping postgres (pid $pid)"
    # SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, then it exits.
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      pid_is_postgres "$pid" || break
      sleep 0.1
    done
    pid_is_postgres "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  case "$dir" in
    "${TMPDIR:-/tmp}"/launch-agent-postgres.*) rm -rf "$dir" ;;
  esac
  rm -f "$ENV_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
