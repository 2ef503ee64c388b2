#!/usr/bin/env bash
# The Azure stand-in that runs as a service, on 127.0.0.1:
#
#   scripts/services-azure.sh start   # Azurite's blob service, HTTPS, taking AAD bearer tokens
#   scripts/services-azure.sh stop    # stops what `start` started, nothing else
#
# (AAD, IMDS and ACR's token server are a fake each test starts itself:
# tests/azure_fake/server.py.)
#
# `start`:
#   - Azurite (npm `azurite`, installed into ~/.cache/launch-agent-azurite when
#     missing) with its blob service only, on a free port, in memory, over
#     HTTPS with a certificate for 127.0.0.1 made here, and `--oauth basic`:
#     it takes `Authorization: Bearer <AAD token>` (checking the token's
#     audience `https://storage.azure.com`, issuer and expiry, as
#     tests/azure_fake/server.py issues them), standing for
#     https://ACCOUNT.blob.core.windows.net (account `devstoreaccount1`);
#   - checks a bearer token is taken: creates the container `build-contexts`
#     with one;
#   - KEY=VALUE lines in $LAUNCH_AGENT_AZURE_ENV (default
#     ${TMPDIR:-/tmp}/launch-agent-azure.env):
#       LAUNCH_AGENT_AZURITE_BLOB_URL=https://127.0.0.1:PORT/devstoreaccount1
#       LAUNCH_AGENT_AZURITE_CA (the CA certificate to trust; it signed Azurite's)
#       LAUNCH_AGENT_AZURITE_CONTAINER=build-contexts
#       LAUNCH_AGENT_AZURE_PYTHON (a venv's python with PyPI's azure-storage-blob,
#         ~/.cache/launch-agent-azure-venv: the store's own client the
#         build-context benchmark compares with)
#       LAUNCH_AGENT_AZURE_DIR, LAUNCH_AGENT_AZURITE_PID
#
# Both commands are idempotent. Progress goes to stderr.
set -euo pipefail

ENV_FILE="${LAUNCH_AGENT_AZURE_ENV:-${TMPDIR:-/tmp}/launch-agent-azure.env}"
PREFIX="${LAUNCH_AGENT_AZURITE_PREFIX:-$HOME/.cache/launch-agent-azurite}"
VENV="${LAUNCH_AGENT_AZURE_VENV:-$HOME/.cache/launch-agent-azure-venv}"
ACCOUNT=devstoreaccount1
CONTAINER=build-contexts
READY_TIMEOUT=60

SERVICE=services-azure
# shellcheck source=scripts/lib/services-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/services-common.sh"

# A token shaped as the fake AAD issues it for Azure Storage (Azurite's
# `--oauth basic` checks its claims, not its signature).
storage_token() {
  python3 - <<'PY'
import base64, json, secrets, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
now = int(time.time())
tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
claims = {"aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{tenant}/",
          "iat": now, "nbf": now, "exp": now + 600, "tid": tenant, "oid": "services-azure"}
print(".".join([b(json.dumps({"typ": "JWT", "alg": "RS256"}).encode()),
                b(json.dumps(claims).encode()), b(secrets.token_bytes(32))]))
PY
}

# The HTTP status of `curl ARGS` against Azurite (000 when it does not answer).
status_of() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$1" "${@:2}" || true
}

already_up() {
  [ -f "$ENV_FILE" ] || return 1
  # One started by an older version of this script (a self-signed
  # certificate rustls refuses, no client venv) is replaced.
  [ -n "$(env_value LAUNCH_AGENT_AZURE_PYTHON)" ] || return 1
  pid_is "$(env_value LAUNCH_AGENT_AZURITE_PID)" azurite-blob || return 1
  local code
  code="$(status_of "$(env_value LAUNCH_AGENT_AZURITE_CA)" \
    "$(env_value LAUNCH_AGENT_AZURITE_BLOB_URL)/$CONTAINER?restype=container" \
    -H "Authorization: Bearer $(storage_token)" -H "x-ms-version: 2021-08-06")"
  [ "$code" = 200 ]
}

install_azurite() {
  [ -x "$PREFIX/node_modules/.bin/azurite-blob" ] && return
  command -v npm >/dev/null 2>&1 || {
    log "installing npm (Debian)"
    apt-get install -y --no-install-recommends npm >&2 || die "npm is needed to install azurite"
  }
  log "installing azurite into $PREFIX"
  mkdir -p "$PREFIX"
  (cd "$PREFIX" && npm install --no-audit --no-fund azurite@3 >&2)
}

install_client() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import azure.storage.blob" 2>/dev/null && return
  log "installing azure-storage-blob into $VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q azure-storage-blob >&2
}

start() {
  install_client
  if already_up; then
    log "already running (env: $ENV_FILE)"
    return
  fi
  stop
  install_azurite
  local dir port
  dir="$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-azure.XXXXXX")"
  port="$(free_port)"
  # A CA of its own and a server certificate it signs: rustls (the host's
  # clients) takes no CA certificate as a server's (CaUsedAsEndEntity).
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=launch-agent Azurite test CA" \
      -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" &&
      openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
        -keyout "$dir/key.pem" -out "$dir/server.csr" &&
      printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$dir/server.ext" &&
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
        -CAcreateserial -days 7 -extfile "$dir/server.ext" -out "$dir/cert.pem"
  } >/dev/null 2>&1 || die "openssl could not make the certificates"
  log "starting Azurite's blob service on https://127.0.0.1:$port (log: $dir/azurite.log)"
  (
    cd "$dir"
    setsid "$PREFIX/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
      --inMemoryPersistence --disableTelemetry --skipApiVersionCheck --loose \
      --oauth basic --cert "$dir/cert.pem" --key "$dir/key.pem" \
      </dev/null >"$dir/azurite.log" 2>&1 &
    echo $! >"$dir/azurite.pid"
  )
  local pid i code url="https://127.0.0.1:$port/$ACCOUNT"
  pid="$(cat "$dir/azurite.pid")"
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    code="$(status_of "$dir/ca.pem" "$url/$CONTAINER?restype=container" -X PUT \
      -H "Authorization: Bearer $(storage_token)" -H "x-ms-version: 2021-08-06" -H "content-length: 0")"
    [ "$code" = 201 ] && break
    pid_is "$pid" azurite-blob || {
      tail -n 20 "$dir/azurite.log" >&2
      rm -rf "$dir"
      die "azurite exited"
    }
    sleep 0.1
  done
  if [ "$code" != 201 ]; then
    stop_pid "$pid" azurite-blob
    rm -rf "$dir"
    die "Azurite did not take a bearer token (last status $code)"
  fi
  local tmp="$ENV_FILE.tmp.$$"
  cat >"$tmp" <<ENV
LAUNCH_AGENT_AZURE_DIR=$dir
LAUNCH_AGENT_AZURITE_PID=$pid
LAUNCH_AGENT_AZURITE_BLOB_URL=$url
LAUNCH_AGENT_AZURITE_CA=$dir/ca.pem
LAUNCH_AGENT_AZURITE_CONTAINER=$CONTAINER
LAUNCH_AGENT_AZURE_PYTHON=$VENV/bin/python
ENV
  mv "$tmp" "$ENV_FILE"
  log "ready (env: $ENV_FILE)"
}

stop() {
  [ -f "$ENV_FILE" ] || return 0
  stop_pid "$(env_value LAUNCH_AGENT_AZURITE_PID)" azurite-blob
  local dir
  dir="$(env_value LAUNCH_AGENT_AZURE_DIR)"
  case "$dir" in
    */launch-agent-azure.*) rm -rf "$dir" ;;
  esac
  rm -f "$ENV_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
