#!/usr/bin/env bash
# Log a job artifact made of the given files on the FAKE W&B server with the
# REAL `wandb` client, as a run does when it saves a job (`wandb-job.json`,
# and for a repo job its `diff.patch` and `requirements.frozen.txt`):
#
#   log_job_with_wandb.sh --port PORT [--api-key KEY] [--entity E] [--project P]
#                         --name NAME FILE...
#
# Runs `wandb.init`, logs an artifact of type `job` named NAME (alias
# `latest`) holding the FILEs (by base name), and finishes the run. Exits with
# the client's status.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=wandb_env.sh
. "$HERE/wandb_env.sh"
NAME=""
FILES=()

while [ $# -gt 0 ]; do
    if common_option "$@"; then shift 2; continue; fi
    case "$1" in
        --name) NAME="$2"; shift 2 ;;
        *) FILES+=("$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"); shift ;;
    esac
done
[ -n "$PORT" ] && [ -n "$NAME" ] && [ "${#FILES[@]}" -gt 0 ] || {
    echo "usage: $0 --port PORT --name NAME FILE..." >&2; exit 2; }
require_wandb

isolate_wandb

cd "$SCRATCH"
# The type `job` is reserved for the client's own job builder, whose
# artifact class is used here as it uses it.
"$VENV/bin/python" - "$ENTITY" "$PROJECT" "$NAME" "${FILES[@]}" <<'PY'
import sys
import wandb
from wandb.sdk.artifacts._internal_artifact import InternalArtifact

entity, project, name, *files = sys.argv[1:]
run = wandb.init(
    entity=entity,
    project=project,
    job_type="log-job",
    settings=wandb.Settings(disable_git=True, disable_job_creation=True, silent=True),
)
artifact = InternalArtifact(name, "job")
for path in files:
    artifact.add_file(path)
run.log_artifact(artifact, aliases=["latest"])
run.finish()
PY
