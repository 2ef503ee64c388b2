# Shell helpers the test services' scripts share (sourced, not run):
# messages, the env file, processes by PID, free ports.
#
# The sourcing script sets SERVICE (its name in messages) and ENV_FILE (its
# KEY=VALUE file) before calling them.

# A progress line on stderr, prefixed with the service's name.
log() { echo "$SERVICE: $*" >&2; }

# An error line on stderr, then exit 1.
die() {
  echo "$SERVICE: error: $*" >&2
  exit 1
}

# The last value of KEY ($1) in ENV_FILE; nothing when either is missing.
env_value() {
  [ -f "$ENV_FILE" ] || return 0
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# Whether PID ($1) is alive and its command line holds NAME ($2): a PID
# reused by another process is not ours.
pid_is() {
  local pid="$1" name="$2"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
    grep -qa -- "$name" "/proc/$pid/cmdline" 2>/dev/null
}

# Stops PID ($1) if it is NAME ($2): TERM, up to 5 s, then KILL.
stop_pid() {
  local pid="$1" name="$2"
  pid_is "$pid" "$name" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  local i
  for ((i = 0; i < 50; i++)); do
    pid_is "$pid" "$name" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# A TCP port free on 127.0.0.1 now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
