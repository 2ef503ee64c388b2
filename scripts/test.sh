#!/usr/bin/env bash
# The test command: sets up what the tests need, then runs every test.
#
#   scripts/test.sh
#
# It installs the wasm32-wasip2 target when missing, starts the services the
# tests use (a Docker engine and a registry, scripts/services.sh), installs the
# real wandb client in a venv for the W&B compatibility tests, builds the plugins,
# checks formatting and lints, runs the host's tests, then runs the README's
# quick start and checks how its jobs ended. CARGO_TARGET_DIR
# may point at a warm cache outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/launch-agent-target}"

for triple in wasm32-wasip2 wasm32-unknown-unknown; do
  if ! rustup target list --installed | grep -qx "$triple"; then
    echo "== installing the $triple target" >&2
    rustup target add "$triple"
  fi
done
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
  rustup component add clippy rustfmt
fi

echo "== starting test services (Docker engine, registry)" >&2
scripts/services.sh start
scripts/services-postgres.sh start
scripts/services-moto.sh start
scripts/services-kube.sh start
scripts/services-azure.sh start
scripts/services-gcs.sh start
trap 'scripts/services-gcs.sh stop >/dev/null 2>&1; scripts/services-azure.sh stop >/dev/null 2>&1; scripts/services-kube.sh stop >/dev/null 2>&1; scripts/services-moto.sh stop >/dev/null 2>&1; scripts/services-postgres.sh stop >/dev/null 2>&1; scripts/services.sh stop >/dev/null 2>&1' EXIT

echo "== the real wandb client and the fake W&B server (tests/wandb_fake)" >&2
LAUNCH_AGENT_WANDB_VENV=$(bash tests/wandb_fake/setup.sh | tail -n 1)
export LAUNCH_AGENT_WANDB_VENV
python3 tests/wandb_fake/smoke_test.py >&2

echo "== building plugins" >&2
scripts/build-plugins.sh >/dev/null

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy" >&2
cargo clippy -p launch-agent --all-targets -- -D warnings
# In the plugins' own target dir (scripts/build-plugins.sh), whose proc macros it reuses.
cargo clippy --release --target wasm32-wasip2 --target-dir "$CARGO_TARGET_DIR/wasm-plugins" \
  -p launch-plugin-sdk -p builder-docker -p builder-kaniko -p environment-aws -p registry-ecr -p environment-gcp -p environment-azure -p registry-gcr -p registry-acr -p hostile-plugin -p hostile-builder-plugin -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown --target-dir "$CARGO_TARGET_DIR/wasm-plugins" \
  -p launch-plugin-sdk -p builder-noop -p environment-local -p registry-oci -p deployer-coreweave -p hostile-plugin -- -D warnings

echo "== benchmarks, as quick smoke runs" >&2
cargo test -p launch-agent --benches

echo "== cargo test" >&2
cargo test -p launch-agent --lib --bins --tests
# The cloud plugins' own unit tests (settings, signing), natively; the
# builders' rules and the Kaniko manifests (checked by kubernetes-validate).
cargo test -p environment-aws -p registry-ecr -p environment-gcp -p environment-azure -p registry-gcr -p registry-acr -p deployer-coreweave
cargo test -p builder-common -p builder-docker -p builder-kaniko

echo "== the README's quick start, checked" >&2
# With the engine up it takes both paths: the three example jobs as local
# processes (03-fails exits 3), and the Docker example built, pushed and run
# twice (the second time its build is skipped).
quickstart_out=$(mktemp)
quickstart_log=$(mktemp)
if ! scripts/quickstart.sh >"$quickstart_out" 2>"$quickstart_log"; then
  cat "$quickstart_out" "$quickstart_log" >&2
  echo "quick start: failed" >&2
  exit 1
fi
# `queue list` rows: id, queue, state, stage, exit code, ...
outcomes=$(awk 'length($1) == 32 && $1 ~ /^[0-9a-f]+$/ { print $3, $4, $5 }' "$quickstart_out" |
  sort | uniq -c | awk '{ $1 = $1; print }')
expected=$'1 failed run 3\n4 finished - 0'
if [ "$outcomes" != "$expected" ]; then
  cat "$quickstart_log" >&2
  echo "quick start: the jobs ended as" >&2
  echo "$outcomes" >&2
  echo "instead of" >&2
  echo "$expected" >&2
  exit 1
fi
grep -q "build: skipped" "$quickstart_log" || {
  cat "$quickstart_log" >&2
  echo "quick start: the second run of the Docker example did not skip its build" >&2
  exit 1
}
rm -f "$quickstart_out" "$quickstart_log"
echo "quick start: $(tr '\n' ';' <<<"$outcomes")" >&2
