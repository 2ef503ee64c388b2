#!/usr/bin/env bash
# The test command: sets up what the tests need, then runs every test.
#
#   scripts/test.sh
#
# It installs the wasm32-wasip2 target when missing, starts the services the
# tests use (a Docker engine and a registry, scripts/services.sh), installs the
# real wandb client in a venv for the W&B compatibility tests, builds the plugins,
# checks formatting and lints, and runs the host's tests. CARGO_TARGET_DIR
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
trap 'scripts/services.sh stop >/dev/null 2>&1' EXIT

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
cargo clippy --release --target wasm32-wasip2 -p launch-plugin-sdk -p builder-docker \
  -p hostile-plugin -p hostile-builder-plugin -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown -p launch-plugin-sdk -p builder-noop \
  -p environment-local -p registry-oci -p hostile-plugin -- -D warnings

echo "== benchmarks, as quick smoke runs" >&2
cargo test -p launch-agent --benches

echo "== cargo test" >&2
cargo test -p launch-agent --lib --bins --tests
