#!/usr/bin/env bash
# Real local services the tests run against, all on 127.0.0.1.
#
#   scripts/services.sh start   # a Docker Engine, a registry, the base test image
#   scripts/services.sh stop    # stops what `start` started, nothing else
#
# `start`:
#   - a Docker Engine: when `docker info` fails, installs Debian's docker.io if
#     dockerd is missing and starts dockerd on unix:///var/run/docker.sock (an
#     engine that was already running is used as it is, and never stopped);
#   - a container registry (Debian's docker-registry) on 127.0.0.1 and a free
#     port, with basic auth (user `launch`, a fresh random password each start),
#     its own config and a throwaway storage dir with delete enabled;
#   - the base test image launch-agent-test/busybox:latest, imported from
#     Debian's busybox-static (no pulls: this machine reaches no image registry);
#   - KEY=VALUE lines in $LAUNCH_AGENT_SERVICES_ENV (default
#     ${TMPDIR:-/tmp}/launch-agent-services.env) that the tests read:
#       LAUNCH_AGENT_TEST_REGISTRY=127.0.0.1:PORT
#       LAUNCH_AGENT_TEST_REGISTRY_USER, LAUNCH_AGENT_TEST_REGISTRY_PASSWORD
#       LAUNCH_AGENT_TEST_BASE_IMAGE=launch-agent-test/busybox:latest
#       LAUNCH_AGENT_SERVICES_DIR (logs, registry config and storage)
#       LAUNCH_AGENT_SERVICES_DOCKERD_PID (empty when dockerd was already running)
#       LAUNCH_AGENT_SERVICES_REGISTRY_PID
#
# Both commands are idempotent: `start` with everything still up changes
# nothing, `stop` with nothing started does nothing. Progress goes to stderr.
# Needs root (apt-get, dockerd).
set -euo pipefail

ENV_FILE="${LAUNCH_AGENT_SERVICES_ENV:-${TMPDIR:-/tmp}/launch-agent-services.env}"
BASE_IMAGE="launch-agent-test/busybox:latest"
# Bump when the image's contents change, so older copies are rebuilt.
BASE_IMAGE_VERSION=1
REGISTRY_USER="launch"
DOCKER_SOCK="unix:///var/run/docker.sock"
READY_TIMEOUT=30 # seconds, for dockerd and the registry each

log() { echo "services: $*" >&2; }
die() {
  echo "services: error: $*" >&2
  exit 1
}

APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    die "installing $* needs root (apt-get); install them, or run as root"
  fi
  local apt_log="$STATE_DIR/apt.log"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update (log: $apt_log)"
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$apt_log" 2>&1 ||
      { tail -n 20 "$apt_log" >&2; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
  log "installing $* (log: $apt_log)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$apt_log" 2>&1 ||
    { tail -n 20 "$apt_log" >&2; die "apt-get install $* failed"; }
}

# The value of KEY in the env file (empty when absent).
env_value() {
  [ -f "$ENV_FILE" ] || return 0
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# True when PID is alive and its command line contains NAME (so a recycled
# PID of some other process is never signalled).
pid_is() {
  local pid="$1" name="$2"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
    grep -qa -- "$name" "/proc/$pid/cmdline" 2>/dev/null
}

# Sends SIGTERM to PID (when it is NAME), waits up to SECONDS, then SIGKILL.
stop_pid() {
  local pid="$1" name="$2" seconds="$3"
  pid_is "$pid" "$name" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  local i
  for ((i = 0; i < seconds * 10; i++)); do
    pid_is "$pid" "$name" || return 0
    sleep 0.1
  done
  log "$name (pid $pid) still running after ${seconds}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

registry_status() { # prints the HTTP status of /v2/ (000 when nothing answers)
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1/v2/" || true
}

start_docker() {
  if docker info >/dev/null 2>&1; then
    log "Docker Engine: already running"
    DOCKERD_PID=""
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
  fi
  local pidfile=/var/run/docker.pid
  if [ -f "$pidfile" ] && pid_is "$(cat "$pidfile")" dockerd; then
    die "a dockerd (pid $(cat "$pidfile")) is running but \`docker info\` fails; see its log, or stop it"
  fi
  log "starting dockerd on $DOCKER_SOCK (log: $STATE_DIR/dockerd.log)"
  setsid dockerd --host "$DOCKER_SOCK" </dev/null >"$STATE_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  local i
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    if DOCKER_HOST="$DOCKER_SOCK" docker info >/dev/null 2>&1; then
      export DOCKER_HOST="$DOCKER_SOCK"
      log "Docker Engine ready ($(DOCKER_HOST="$DOCKER_SOCK" docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null))"
      return
    fi
    if ! pid_is "$DOCKERD_PID" dockerd; then
      tail -n 20 "$STATE_DIR/dockerd.log" >&2 || true
      die "dockerd exited while starting (log above: $STATE_DIR/dockerd.log)"
    fi
    sleep 0.1
  done
  tail -n 20 "$STATE_DIR/dockerd.log" >&2 || true
  die "dockerd not ready after ${READY_TIMEOUT}s (log: $STATE_DIR/dockerd.log)"
}

start_registry() {
  local missing=()
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
  REGISTRY_PASSWORD="$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  htpasswd -Bbc "$STATE_DIR/htpasswd" "$REGISTRY_USER" "$REGISTRY_PASSWORD" 2>/dev/null
  local port secret
  port="$(free_port)"
  secret="$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  REGISTRY="127.0.0.1:$port"
  mkdir -p "$STATE_DIR/registry-data"
  # Our own config: the packaged /etc/docker/registry/config.yml listens on
  # every interface.
  cat >"$STATE_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry-data
  delete:
    enabled: true
http:
  addr: $REGISTRY
  secret: $secret
auth:
  htpasswd:
    realm: launch-agent-test
    path: $STATE_DIR/htpasswd
EOF
  log "starting docker-registry on $REGISTRY (log: $STATE_DIR/registry.log)"
  setsid docker-registry serve "$STATE_DIR/registry.yml" </dev/null >"$STATE_DIR/registry.log" 2>&1 &
  REGISTRY_PID=$!
  local i
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    if [ "$(registry_status "$REGISTRY")" = 401 ]; then
      log "registry ready on $REGISTRY (basic auth, user $REGISTRY_USER)"
      return
    fi
    if ! pid_is "$REGISTRY_PID" docker-registry; then
      tail -n 20 "$STATE_DIR/registry.log" >&2 || true
      die "docker-registry exited while starting (log above: $STATE_DIR/registry.log)"
    fi
    sleep 0.1
  done
  die "registry on $REGISTRY did not answer 401 on /v2/ after ${READY_TIMEOUT}s (log: $STATE_DIR/registry.log)"
}

base_image_current() {
  [ "$(docker image inspect -f '{{index .Config.Labels "launch-agent-test.version"}}' "$BASE_IMAGE" 2>/dev/null)" = "$BASE_IMAGE_VERSION" ]
}

build_base_image() {
  if base_image_current; then
    log "base image $BASE_IMAGE: present"
    return
  fi
  if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    apt_install busybox-static
  fi
  local busybox=/bin/busybox
  [ -x "$busybox" ] || die "busybox-static is installed but $busybox is missing"
  local previous
  previous="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)"
  log "building $BASE_IMAGE from $busybox"
  local root="$STATE_DIR/busybox-rootfs"
  rm -rf "$root"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  local applet
  for applet in sh echo cat sleep env ls true false id pwd printf mkdir rm test wc grep; do
    ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . |
    docker import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' \
      --change "LABEL launch-agent-test.version=$BASE_IMAGE_VERSION" - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  if [ -n "$previous" ]; then
    # The outdated copy, now untagged (kept if a container still uses it).
    docker rmi "$previous" >/dev/null 2>&1 || true
  fi
  log "base image $BASE_IMAGE built"
}

# Writes the env file: what `stop` needs always, what the tests read only
# with `complete` (so a half-done start is never taken for a working one).
write_env() {
  local tmp="$ENV_FILE.tmp.$$"
  mkdir -p "$(dirname "$ENV_FILE")"
  (
    umask 077
    {
      echo "LAUNCH_AGENT_SERVICES_DIR=$STATE_DIR"
      echo "LAUNCH_AGENT_SERVICES_DOCKERD_PID=$DOCKERD_PID"
      echo "LAUNCH_AGENT_SERVICES_REGISTRY_PID=$REGISTRY_PID"
      if [ "${1:-}" = complete ]; then
        echo "LAUNCH_AGENT_TEST_REGISTRY=$REGISTRY"
        echo "LAUNCH_AGENT_TEST_REGISTRY_USER=$REGISTRY_USER"
        echo "LAUNCH_AGENT_TEST_REGISTRY_PASSWORD=$REGISTRY_PASSWORD"
        echo "LAUNCH_AGENT_TEST_BASE_IMAGE=$BASE_IMAGE"
      fi
    } >"$tmp"
  )
  mv "$tmp" "$ENV_FILE"
}

# True when a previous `start` left everything up and answering.
already_up() {
  [ -f "$ENV_FILE" ] || return 1
  local registry registry_pid dockerd_pid
  registry="$(env_value LAUNCH_AGENT_TEST_REGISTRY)"
  registry_pid="$(env_value LAUNCH_AGENT_SERVICES_REGISTRY_PID)"
  dockerd_pid="$(env_value LAUNCH_AGENT_SERVICES_DOCKERD_PID)"
  pid_is "$registry_pid" docker-registry || return 1
  [ "$(registry_status "$registry")" = 401 ] || return 1
  if [ -n "$dockerd_pid" ]; then
    pid_is "$dockerd_pid" dockerd || return 1
  fi
  docker info >/dev/null 2>&1 || return 1
  base_image_current || return 1
}

on_start_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    write_env
    log "start failed: scripts/services.sh stop cleans up what it started"
  fi
}

cmd_start() {
  if already_up; then
    log "already running (registry $(env_value LAUNCH_AGENT_TEST_REGISTRY)); env file: $ENV_FILE"
    return
  fi
  # Whatever an earlier start left half-up goes first.
  cmd_stop
  STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-services.XXXXXX")"
  DOCKERD_PID=""
  REGISTRY_PID=""
  REGISTRY=""
  REGISTRY_PASSWORD=""
  # Record PIDs as soon as they exist, so a failed start can be stopped.
  trap on_start_exit EXIT
  start_docker
  write_env
  start_registry
  write_env
  build_base_image
  write_env complete
  trap - EXIT
  log "ready; env file: $ENV_FILE"
}

cmd_stop() {
  if [ ! -f "$ENV_FILE" ]; then
    log "nothing to stop ($ENV_FILE absent)"
    return
  fi
  stop_pid "$(env_value LAUNCH_AGENT_SERVICES_REGISTRY_PID)" docker-registry 5
  # dockerd only when `start` started it; it stops its containers first.
  stop_pid "$(env_value LAUNCH_AGENT_SERVICES_DOCKERD_PID)" dockerd 30
  local dir
  dir="$(env_value LAUNCH_AGENT_SERVICES_DIR)"
  case "$dir" in
    "${TMPDIR:-/tmp}"/launch-agent-services.*) rm -rf "$dir" ;;
    "") ;;
    *) log "leaving $dir alone (not a services temp dir)" ;;
  esac
  rm -f "$ENV_FILE"
  log "stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
