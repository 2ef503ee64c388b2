#!/usr/bin/env bash
# The fake Kubernetes cluster the tests run `resource: kubernetes` jobs on
# (tests/kube_fake/server.py: a fake kube-apiserver + Job controller +
# scheduler + kubelet that runs pods on the local Docker engine), on 127.0.0.1.
#
#   scripts/services-kube.sh start   # venv with kubernetes-validate, the fake, a kubeconfig
#   scripts/services-kube.sh stop    # stops what `start` started, nothing else
#
# Needs the Docker engine of scripts/services.sh (started first). `start`:
#   - a venv (~/.cache/launch-agent-kube-venv, override LAUNCH_AGENT_KUBE_VENV)
#     with PyPI's kubernetes-validate and PyYAML (the fake validates every
#     manifest it receives with kubernetes-validate --strict, against Kubernetes
#     1.30 and 1.33: KUBE_FAKE_SCHEMA_VERSIONS, comma-separated, overrides);
#   - the fake on 127.0.0.1 and a free port, over TLS (a throwaway
#     self-signed certificate from openssl), with a random bearer token;
#   - a kubeconfig for it (context `launch-agent-fake`, namespace `default`);
#   - KEY=VALUE lines in $LAUNCH_AGENT_KUBE_ENV (default
#     ${TMPDIR:-/tmp}/launch-agent-kube.env) that the tests read:
#       LAUNCH_AGENT_KUBE_URL=https://127.0.0.1:PORT (TLS, its CA in LAUNCH_AGENT_KUBE_CA)
#       LAUNCH_AGENT_KUBE_TOKEN (the bearer token the fake wants)
#       LAUNCH_AGENT_KUBECONFIG=<dir>/kubeconfig
#       LAUNCH_AGENT_KUBE_PYTHON=<venv>/bin/python (runs more fakes for tests that want their own)
#       LAUNCH_AGENT_KUBE_DIR, LAUNCH_AGENT_KUBE_PID
# Both commands are idempotent. Progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENV_FILE="${LAUNCH_AGENT_KUBE_ENV:-${TMPDIR:-/tmp}/launch-agent-kube.env}"
VENV="${LAUNCH_AGENT_KUBE_VENV:-$HOME/.cache/launch-agent-kube-venv}"
READY_TIMEOUT=30

SERVICE=services-kube
# shellcheck source=scripts/lib/services-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/services-common.sh"

ensure_venv() {
  if "$VENV/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is needed (apt-get install python3 python3-venv)"
  if ! python3 -m venv --help >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2 ||
      die "cannot install python3-venv"
  fi
  log "creating $VENV with kubernetes-validate (about 110 MB)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate pyyaml >&2 || die "pip install kubernetes-validate failed"
}

start() {
  local pid
  pid="$(env_value LAUNCH_AGENT_KUBE_PID)"
  if pid_is "$pid" kube_fake/server.py; then
    log "the fake cluster is already running (pid $pid)"
    return
  fi
  command -v docker >/dev/null || die "the docker CLI is needed: start scripts/services.sh first"
  docker info >/dev/null 2>&1 || die "no Docker engine answers: start scripts/services.sh first"
  ensure_venv
  local dir token port
  dir="$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-kube.XXXXXX")"
  token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  # TLS as a real API server (kubectl sends no token over plain HTTP).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=launch-agent-kube-fake -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" >/dev/null 2>&1 || die "openssl cannot make the fake's certificate"
  "$VENV/bin/python" "$ROOT/tests/kube_fake/server.py" --port 0 --state-dir "$dir/state" \
    --token "$token" --tls-cert "$dir/tls.crt" --tls-key "$dir/tls.key" >"$dir/ready" 2>"$dir/server.log" &
  pid=$!
  for _ in $(seq $((READY_TIMEOUT * 10))); do
    grep -q '^READY' "$dir/ready" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; die "the fake cluster did not start"; }
    sleep 0.1
  done
  port="$(sed -n 's/^READY //p' "$dir/ready")"
  [ -n "$port" ] || die "the fake cluster did not say it was ready within ${READY_TIMEOUT}s"
  cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: launch-agent-fake
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 "$dir/tls.crt")
contexts:
- name: launch-agent-fake
  context:
    cluster: launch-agent-fake
    user: launch-agent-fake
    namespace: default
current-context: launch-agent-fake
users:
- name: launch-agent-fake
  user:
    token: $token
KUBECONFIG
  chmod 600 "$dir/kubeconfig"
  {
    echo "LAUNCH_AGENT_KUBE_URL=https://127.0.0.1:$port"
    echo "LAUNCH_AGENT_KUBE_CA=$dir/tls.crt"
    echo "LAUNCH_AGENT_KUBE_TOKEN=$token"
    echo "LAUNCH_AGENT_KUBECONFIG=$dir/kubeconfig"
    echo "LAUNCH_AGENT_KUBE_PYTHON=$VENV/bin/python"
    echo "LAUNCH_AGENT_KUBE_DIR=$dir"
    echo "LAUNCH_AGENT_KUBE_PID=$pid"
  } >"$ENV_FILE"
  log "fake cluster on https://127.0.0.1:$port (pid $pid, kubeconfig $dir/kubeconfig)"
}

stop() {
  local pid dir
  pid="$(env_value LAUNCH_AGENT_KUBE_PID)"
  dir="$(env_value LAUNCH_AGENT_KUBE_DIR)"
  if pid_is "$pid" kube_fake/server.py; then
    log "stopping the fake cluster (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [ -n "$dir" ] && [ -d "$dir" ] && rm -rf "$dir"
  rm -f "$ENV_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
