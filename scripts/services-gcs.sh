#!/usr/bin/env bash
# The Google Cloud Storage stand-in of the build-context tests, on 127.0.0.1:
#
#   scripts/services-gcs.sh start   # gcp-storage-emulator plus an XML API layer, checking the fake's bearer token
#   scripts/services-gcs.sh stop    # stops what `start` started, nothing else
#
# `start` installs PyPI's `gcp-storage-emulator` (and `google-cloud-storage`,
# the store's own client the build-context benchmark compares with) into a
# venv under ~/.cache/launch-agent-gcs-venv when missing, runs it in memory through
# tests/gcs_fake/serve.py (every request must carry `Authorization: Bearer
# <the token tests/gcp_fake/server.py issues>`; the XML API calls object_store
# makes are served by tests/gcs_fake/xml_api.py) on a free port, and writes
# KEY=VALUE lines to $LAUNCH_AGENT_GCS_ENV (default
# ${TMPDIR:-/tmp}/launch-agent-gcs.env):
#   LAUNCH_AGENT_GCS_URL=http://127.0.0.1:PORT   (the JSON and XML APIs' base)
#   LAUNCH_AGENT_GCS_PYTHON=<the venv's python>  (with google-cloud-storage, for the benchmark)
#   LAUNCH_AGENT_GCS_PID, LAUNCH_AGENT_GCS_DIR
#   LAUNCH_AGENT_GCS_XML_API=1 (serves the XML API: one started without it is replaced)
#
# Both commands are idempotent. Progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="${LAUNCH_AGENT_GCS_ENV:-${TMPDIR:-/tmp}/launch-agent-gcs.env}"
VENV="${LAUNCH_AGENT_GCS_VENV:-$HOME/.cache/launch-agent-gcs-venv}"
# The access token tests/gcp_fake/server.py issues (host/tests/common/gcp.rs: TOKEN).
TOKEN="ya29.fake-access-token-0123456789abcdefghijklmnop"

SERVICE=services-gcs
# shellcheck source=scripts/lib/services-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/services-common.sh"

running() {
  local pid
  pid="$(env_value LAUNCH_AGENT_GCS_PID)"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && grep -qa "gcs_fake/serve.py" "/proc/$pid/cmdline"
}

start() {
  if running && [ "$(env_value LAUNCH_AGENT_GCS_XML_API)" = 1 ]; then
    log "already running ($(env_value LAUNCH_AGENT_GCS_URL))"
    return 0
  fi
  # One started by an older version of this script (without the XML API):
  # replaced.
  stop
  if [ ! -x "$VENV/bin/python" ] ||
    ! "$VENV/bin/python" -c "import gcp_storage_emulator, google.cloud.storage" 2>/dev/null; then
    log "installing gcp-storage-emulator and google-cloud-storage into $VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q gcp-storage-emulator google-cloud-storage >&2
  fi
  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-gcs.XXXXXX")"
  PYTHONDONTWRITEBYTECODE=1 nohup "$VENV/bin/python" "$root/tests/gcs_fake/serve.py" "$dir/port" "$TOKEN" \
    >"$dir/server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    [ -s "$dir/port" ] && break
    kill -0 "$pid" 2>/dev/null || die "the emulator exited: $(tail -n 5 "$dir/server.log")"
    sleep 0.1
  done
  [ -s "$dir/port" ] || die "the emulator did not start in 10 s: $(tail -n 5 "$dir/server.log")"
  {
    echo "LAUNCH_AGENT_GCS_URL=http://127.0.0.1:$(cat "$dir/port")"
    echo "LAUNCH_AGENT_GCS_PYTHON=$VENV/bin/python"
    echo "LAUNCH_AGENT_GCS_PID=$pid"
    echo "LAUNCH_AGENT_GCS_DIR=$dir"
    echo "LAUNCH_AGENT_GCS_XML_API=1"
  } >"$ENV_FILE"
  log "gcp-storage-emulator on http://127.0.0.1:$(cat "$dir/port") (pid $pid)"
}

stop() {
  if running; then
    local pid
    pid="$(env_value LAUNCH_AGENT_GCS_PID)"
    log "stopping the emulator (pid $pid)"
    kill "$pid" 2>/dev/null || true
  fi
  local dir
  dir="$(env_value LAUNCH_AGENT_GCS_DIR)"
  case "$dir" in
    "${TMPDIR:-/tmp}"/launch-agent-gcs.*) rm -rf "$dir" ;;
  esac
  rm -f "$ENV_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
