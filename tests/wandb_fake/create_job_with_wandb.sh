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
# shellcheck source=wandb_env.sh
. "$HERE/wandb_env.sh"
NAME=""
CODE_DIR=""
ENTRY="python train.py"
EXTRA=()

while [ $# -gt 0 ]; do
    if common_option "$@"; then shift 2; continue; fi
    case "$1" in
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
require_wandb

isolate_wandb
unset WANDB_DISABLE_CODE || true

cd "$SCRATCH"
"$VENV/bin/wandb" job create --project "$PROJECT" --entity "$ENTITY" --name "$NAME" \
    "${EXTRA[@]}" code "$CODE_DIR" --entry-point "$ENTRY"
