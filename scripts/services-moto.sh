#!/usr/bin/env bash
# The AWS stand-ins of the cloud tests, on 127.0.0.1:
#
#   scripts/services-moto.sh start   # moto_server (STS, IAM, ECR API) + a registry behind ECR's token
#   scripts/services-moto.sh stop    # stops what `start` started, nothing else
#
# `start`:
#   - moto_server (PyPI `moto[server]`, installed into a venv under
#     ~/.cache/launch-agent-moto-venv when missing) on a free port, through
#     tests/moto/server.py (ECR tokens expire as the real ones do, and are
#     counted); tests/moto/setup.py creates an IAM user with an access key
#     and the ECR repository `launch`, then turns SigV4 checking on
#     (INITIAL_NO_AUTH_ACTION_COUNT = 0 via /moto-api/reset-auth): a wrong
#     secret gets 403;
#   - a docker-registry (Debian's) on another free port that accepts what
#     ECR's GetAuthorizationToken hands out on moto: user `AWS`, password
#     `123456789012-auth-token` (htpasswd). It stands for
#     123456789012.dkr.ecr.us-east-1.amazonaws.com (moto serves no /v2/);
#   - KEY=VALUE lines in $LAUNCH_AGENT_MOTO_ENV (default
#     ${TMPDIR:-/tmp}/launch-agent-moto.env):
#       LAUNCH_AGENT_MOTO_URL=http://127.0.0.1:PORT
#       LAUNCH_AGENT_MOTO_ACCESS_KEY_ID, LAUNCH_AGENT_MOTO_SECRET_ACCESS_KEY
#       LAUNCH_AGENT_MOTO_SESSION_KEY_ID, _SESSION_SECRET, _SESSION_TOKEN
#         (temporary credentials of role launch-role, as IMDS or STS hand out)
#       LAUNCH_AGENT_MOTO_ACCOUNT=123456789012, LAUNCH_AGENT_MOTO_REGION=us-east-1
#       LAUNCH_AGENT_ECR_REGISTRY=127.0.0.1:PORT (the registry behind the token)
#       LAUNCH_AGENT_MOTO_ECR_TOKEN_COUNT (a file: one line per GetAuthorizationToken)
#       LAUNCH_AGENT_MOTO_DIR, LAUNCH_AGENT_MOTO_PID, LAUNCH_AGENT_ECR_REGISTRY_PID
#
# Both commands are idempotent. Progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="${LAUNCH_AGENT_MOTO_ENV:-${TMPDIR:-/tmp}/launch-agent-moto.env}"
VENV="${LAUNCH_AGENT_MOTO_VENV:-$HOME/.cache/launch-agent-moto-venv}"
ACCOUNT=123456789012
REGION=us-east-1
READY_TIMEOUT=60

SERVICE=services-moto
# shellcheck source=scripts/lib/services-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/services-common.sh"

status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

already_up() {
  [ -f "$ENV_FILE" ] || return 1
  pid_is "$(env_value LAUNCH_AGENT_MOTO_PID)" tests/moto/server.py || return 1
  pid_is "$(env_value LAUNCH_AGENT_ECR_REGISTRY_PID)" docker-registry || return 1
  [ -n "$(env_value LAUNCH_AGENT_MOTO_SESSION_TOKEN)" ] || return 1
  [ "$(status_of "http://$(env_value LAUNCH_AGENT_ECR_REGISTRY)/v2/")" = 401 ] || return 1
}

install_moto() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import moto.server, boto3, flask' 2>/dev/null; then
    return
  fi
  log "installing moto[server] into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'moto[server]' >&2
}

start() {
  if already_up; then
    log "already running (env: $ENV_FILE)"
    return
  fi
  stop
  command -v docker-registry >/dev/null 2>&1 && command -v htpasswd >/dev/null 2>&1 ||
    die "docker-registry and htpasswd are needed: run scripts/services.sh start first (it installs them)"
  install_moto
  local dir moto_port registry_port
  dir="$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-moto.XXXXXX")"
  moto_port="$(free_port)"
  : >"$dir/ecr-token-count"
  log "starting moto_server on 127.0.0.1:$moto_port (log: $dir/moto.log)"
  (
    cd "$root/tests/moto"
    LAUNCH_AGENT_MOTO_ECR_TOKEN_COUNT="$dir/ecr-token-count" \
      setsid "$VENV/bin/python" "$root/tests/moto/server.py" -H 127.0.0.1 -p "$moto_port" \
      </dev/null >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
  )
  local moto_pid i
  moto_pid="$(cat "$dir/moto.pid")"
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    [ "$(status_of "http://127.0.0.1:$moto_port/moto-api/")" = 200 ] && break
    pid_is "$moto_pid" tests/moto/server.py || { tail -n 20 "$dir/moto.log" >&2; die "moto_server exited"; }
    sleep 0.1
  done
  local keys
  keys="$("$VENV/bin/python" "$root/tests/moto/setup.py" "http://127.0.0.1:$moto_port")" ||
    die "setting moto up failed"
  local key_id secret session_id session_secret session_token
  read -r key_id secret session_id session_secret session_token <<<"$keys"

  registry_port="$(free_port)"
  htpasswd -Bbc "$dir/htpasswd" AWS "$ACCOUNT-auth-token" 2>/dev/null
  mkdir -p "$dir/registry-data"
  cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/registry-data
http:
  addr: 127.0.0.1:$registry_port
  secret: $(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
auth:
  htpasswd:
    realm: ecr-stand-in
    path: $dir/htpasswd
YML
  log "starting the registry behind ECR's token on 127.0.0.1:$registry_port"
  setsid docker-registry serve "$dir/registry.yml" </dev/null >"$dir/registry.log" 2>&1 &
  local registry_pid=$!
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    [ "$(status_of "http://127.0.0.1:$registry_port/v2/")" = 401 ] && break
    pid_is "$registry_pid" docker-registry || { tail -n 20 "$dir/registry.log" >&2; die "docker-registry exited"; }
    sleep 0.1
  done
  local tmp="$ENV_FILE.tmp.$$"
  (
    umask 077
    cat >"$tmp" <<ENV
LAUNCH_AGENT_MOTO_DIR=$dir
LAUNCH_AGENT_MOTO_PID=$moto_pid
LAUNCH_AGENT_ECR_REGISTRY_PID=$registry_pid
LAUNCH_AGENT_MOTO_URL=http://127.0.0.1:$moto_port
LAUNCH_AGENT_MOTO_ACCESS_KEY_ID=$key_id
LAUNCH_AGENT_MOTO_SECRET_ACCESS_KEY=$secret
LAUNCH_AGENT_MOTO_SESSION_KEY_ID=$session_id
LAUNCH_AGENT_MOTO_SESSION_SECRET=$session_secret
LAUNCH_AGENT_MOTO_SESSION_TOKEN=$session_token
LAUNCH_AGENT_MOTO_ACCOUNT=$ACCOUNT
LAUNCH_AGENT_MOTO_REGION=$REGION
LAUNCH_AGENT_ECR_REGISTRY=127.0.0.1:$registry_port
LAUNCH_AGENT_MOTO_ECR_TOKEN_COUNT=$dir/ecr-token-count
ENV
  )
  mv "$tmp" "$ENV_FILE"
  log "ready (env: $ENV_FILE)"
}

stop() {
  [ -f "$ENV_FILE" ] || return 0
  stop_pid "$(env_value LAUNCH_AGENT_MOTO_PID)" tests/moto/server.py
  stop_pid "$(env_value LAUNCH_AGENT_ECR_REGISTRY_PID)" docker-registry
  local dir
  dir="$(env_value LAUNCH_AGENT_MOTO_DIR)"
  case "$dir" in
    */launch-agent-moto.*) rm -rf "$dir" ;;
  esac
  rm -f "$ENV_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
