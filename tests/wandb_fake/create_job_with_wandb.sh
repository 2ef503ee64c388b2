#!/usr/bin/env bash
# Create a CODE job artifact on the FAKE W&B server with the REAL `wandb` CLI, as a user would:
#
#   create_job_with_wandb.sh --port PORT [--api-key KEY] [--entity E] [--project P]
#                            --name NAME --code-dir DIR [--entry-point "python train.py"]
#                            [--alias A]... [-- extra `wandb job create` options]
#
# Runs `wandb job create --project P --entity E --name NAME [--alias A] code DIR
# --entry-point "..."`, which logs a `code` artifact `code-NAME` (the files of DIR) and a
# `job` artifact `NAME` (wandb-job.json, requirements.frozen.txt, wandb-metadata.json).
# Exits with the CLI's status.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LAUNCH_AGENT_WANDB_VENV:-$HOME/.cache/launch-agent-wandb-venv}"
PORT=""
API_KEY="${WANDB_FAKE_API_KEY:-ffffffffffffffffffffffffffffffffffffffff}"
ENTITY="fake-entity"
PROJECT="fake-project"
NAME=""
CODE_DIR=""
ENTRY="python train.py"
EXTRA=()

while [ $# -gt 0 ]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --api-key) API_KEY="$2"; shift 2 ;;
        --entity) ENTITY="$2"; shift 2 ;;
        --project) PROJECT="$2"; shift 2 ;;
        --name) NAME="$2"; shift 2 ;;
        --code-dir) CODE_DIR="$(cd "$2" && pwd)"; shift 2 ;;
        --entry-point) ENTRY="$2"; shift 2 ;;
        --alias) EXTRA+=(--alias "$2"); shift 2 ;;
        --) shift; EXTRA+=("$@"); break ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[ -n "$PORT" ] && [ -n "$NAME" ] && [ -n "$CODE_DIR" ] || {
    echo "usage: $0 --port PORT --name NAME --code-dir DIR [...]" >&2; exit 2; }
[ -x "$VENV/bin/wandb" ] || { echo "no wandb in $VENV: run $HERE/setup.sh first" >&2; exit 2; }

# Same isolation as submit_with_wandb.sh: everything goes to the fake on 127.0.0.1, nothing
# is read from or written to the user's W&B settings.
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
export WANDB_BASE_URL="http://127.0.0.1:$PORT"
export WANDB_API_KEY="$API_KEY"
export WANDB_ERROR_REPORTING=false
export WANDB_DISABLE_GIT=true
export WANDB_CONFIG_DIR="$SCRATCH/config"
export WANDB_CACHE_DIR="$SCRATCH/cache"
export WANDB_DATA_DIR="$SCRATCH/data"
export WANDB_ARTIFACT_DIR="$SCRATCH/artifacts"
export WANDB_DIR="$SCRATCH"
export TMPDIR="$SCRATCH"
export NETRC="$SCRATCH/netrc"
unset WANDB_ENTITY WANDB_PROJECT WANDB_MODE WANDB_DISABLE_CODE || true
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

cd "$SCRATCH"
"$VENV/bin/wandb" job create --project "$PROJECT" --entity "$ENTITY" --name "$NAME" \
    "${EXTRA[@]}" code "$CODE_DIR" --entry-point "$ENTRY"
