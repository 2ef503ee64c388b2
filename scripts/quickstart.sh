#!/usr/bin/env bash
# The quick start: builds the agent and its plugins, queues the example jobs
# on the embedded queue, runs the agent until the queue is empty, and shows
# each job's outcome.
#
#   scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/launch-agent-target}"

echo "== building the plugins (wasm32-wasip2) and the agent" >&2
bundle=$(scripts/build-plugins.sh)
cargo build -p launch-agent --quiet
agent="$CARGO_TARGET_DIR/debug/launch-agent"

state=$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-quickstart.XXXXXX")
export LAUNCH_AGENT_STATE_DIR="$state"
export LAUNCH_AGENT_PLUGIN_DIR="$bundle"
echo "== state dir: $state" >&2

echo "== plugins the example config loads" >&2
"$agent" plugins list --config examples/launch-config.yaml

echo "== submitting the example jobs" >&2
for spec in examples/jobs/*.json; do
  id=$("$agent" submit --queue default "$spec")
  echo "   $(basename "$spec") -> $id" >&2
done

echo "== running the agent until the queue is empty (path: local-process)" >&2
"$agent" run --config examples/launch-config.yaml --exit-when-idle

echo "== outcome" >&2
"$agent" queue list


echo "== what each run printed" >&2
for dir in "$state"/runs/*/; do
  echo "-- $(basename "$dir")" >&2
  sed 's/^/   /' "$dir/output.log" >&2
done
