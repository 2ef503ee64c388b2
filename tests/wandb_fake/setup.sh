#!/usr/bin/env bash
# Creates (or reuses) the venv holding the REAL wandb client used to exercise the fake W&B server.
# Idempotent. Prints the venv path as the last line of output.
set -euo pipefail

WANDB_VERSION="${LAUNCH_AGENT_WANDB_VERSION:-0.31.0}"
VENV="${LAUNCH_AGENT_WANDB_VENV:-$HOME/.cache/launch-agent-wandb-venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV" >&2
fi

installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("wandb"))' 2>/dev/null || true)"
if [ "$installed" != "$WANDB_VERSION" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "wandb==$WANDB_VERSION" >&2
fi
# The fake server itself uses only the standard library (http.server + json); nothing else to install.

"$VENV/bin/python" -c 'import wandb, sys; sys.stderr.write("wandb %s in %s\n" % (wandb.__version__, sys.prefix))'
echo "$VENV"
