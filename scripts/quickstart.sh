#!/usr/bin/env bash
# The quick start: builds the agent (whose build builds its default plugins
# and embeds them: no plugin dir is used), queues the example jobs on the
# embedded queue, runs the agent until the queue is empty, and shows each
# job's outcome.
#
# With a Docker engine reachable (`docker info` works) it also takes the
# Docker path: a registry on 127.0.0.1 with basic auth (scripts/services.sh),
# a code job built by the docker builder, pushed, and run in a container,
# then the same job again, whose build is skipped because the registry has
# the image.
#
#   scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/launch-agent-target}"

# The plugins are built for these targets (the build says so when one is missing).
if command -v rustup >/dev/null; then
  for triple in wasm32-wasip2 wasm32-unknown-unknown; do
    if ! rustup target list --installed | grep -qx "$triple"; then
      echo "== installing the $triple target" >&2
      rustup target add "$triple" >&2
    fi
  done
fi

echo "== building the agent, its embedded plugins included" >&2
cargo build -p launch-agent --quiet
agent="$CARGO_TARGET_DIR/debug/launch-agent"

state=$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-quickstart.XXXXXX")
export LAUNCH_AGENT_STATE_DIR="$state"
# The agent's own embedded bundle, not a plugin dir.
unset LAUNCH_AGENT_PLUGIN_DIR
echo "== state dir: $state" >&2

echo "== plugins the example config loads" >&2
"$agent" plugins list --config examples/launch-config.yaml

echo "== submitting the example jobs" >&2
for spec in examples/jobs/*.json; do
  id=$("$agent" submit --queue default "$spec")
  echo "   $(basename "$spec") -> $id" >&2
done

if docker info >/dev/null 2>&1; then
  echo "== a Docker engine is reachable: taking the Docker path too" >&2
  services_env="${LAUNCH_AGENT_SERVICES_ENV:-${TMPDIR:-/tmp}/launch-agent-services.env}"
  if [ ! -f "$services_env" ]; then
    # Stop at the end only what this run started.
    trap 'scripts/services.sh stop' EXIT
  fi
  scripts/services.sh start
  # shellcheck disable=SC1090
  . "$services_env"
  code="$state/hello"
  cp -r examples/docker/hello "$code"
  sed "s|@BASE_IMAGE@|$LAUNCH_AGENT_TEST_BASE_IMAGE|" examples/docker/hello/Dockerfile.wandb.in >"$code/Dockerfile.wandb"
  rm "$code/Dockerfile.wandb.in"
  sed -e "s|@REGISTRY@|$LAUNCH_AGENT_TEST_REGISTRY|" -e "s|@REGISTRY_USER@|$LAUNCH_AGENT_TEST_REGISTRY_USER|" \
    examples/docker/launch-config.yaml.in >"$state/launch-config.yaml"
  sed "s|@CODE_DIR@|$code|" examples/docker/job.json.in >"$state/container-job.json"
  export QUICKSTART_REGISTRY_PASSWORD="$LAUNCH_AGENT_TEST_REGISTRY_PASSWORD"
  echo "== running the agent (paths: local-process, and docker build + push to $LAUNCH_AGENT_TEST_REGISTRY + local-container)" >&2
  id=$("$agent" submit --queue default "$state/container-job.json")
  echo "   container job -> $id" >&2
  "$agent" run --config "$state/launch-config.yaml" --exit-when-idle
  echo "== the same code job again: the registry has its image, so the build is skipped" >&2
  id=$("$agent" submit --queue default "$state/container-job.json")
  "$agent" run --config "$state/launch-config.yaml" --exit-when-idle
  grep -h "build:" "$state/runs/$id/agent.log" >&2 || true
else
  echo "== running the agent until the queue is empty (path: local-process; no Docker engine reachable)" >&2
  "$agent" run --config examples/launch-config.yaml --exit-when-idle
fi

echo "== outcome" >&2
"$agent" queue list


echo "== what each run printed" >&2
for dir in "$state"/runs/*/; do
  echo "-- $(basename "$dir")" >&2
  sed 's/^/   /' "$dir/output.log" >&2
done
