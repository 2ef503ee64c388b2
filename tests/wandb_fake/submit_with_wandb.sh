#!/usr/bin/env bash
# Submit a job to a queue on the FAKE W&B server with the REAL `wandb` CLI, as a user would.
#
#   submit_with_wandb.sh --port PORT [--api-key KEY] [--queue Q] [--entity E] [--project P]
#                        [--image IMAGE | --job ENTITY/PROJECT/NAME:ALIAS] [-- extra options]
#
# With --job the item names a job artifact (`wandb launch --job ...`, runSpec.job) instead
# of an image; the job must exist on the fake (create_job_with_wandb.sh).
#
# Exits 0 only when the job landed in the fake's queue (checked via /_fake/state).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LAUNCH_AGENT_WANDB_VENV:-$HOME/.cache/launch-agent-wandb-venv}"
PORT=""
API_KEY="${WANDB_FAKE_API_KEY:-ffffffffffffffffffffffffffffffffffffffff}"
QUEUE="default"
ENTITY="fake-entity"
PROJECT="fake-project"
IMAGE="busybox:latest"
JOB=""
EXTRA=()

while [ $# -gt 0 ]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --api-key) API_KEY="$2"; shift 2 ;;
        --queue) QUEUE="$2"; shift 2 ;;
        --entity) ENTITY="$2"; shift 2 ;;
        --project) PROJECT="$2"; shift 2 ;;
        --image) IMAGE="$2"; shift 2 ;;
        --job) JOB="$2"; shift 2 ;;
        --) shift; EXTRA+=("$@"); break ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[ -n "$PORT" ] || { echo "usage: $0 --port PORT [...]" >&2; exit 2; }
[ -x "$VENV/bin/wandb" ] || { echo "no wandb in $VENV: run $HERE/setup.sh first" >&2; exit 2; }

BASE="http://127.0.0.1:$PORT"

# Keep everything on this machine and out of the user's real W&B settings:
# - WANDB_BASE_URL points the client (and its wandb-core sidecar) at the fake;
# - a throw-away config/cache/data dir so ~/.config/wandb and ~/.netrc are not used or written;
# - no error reporting (Sentry) and no analytics; telemetry export goes to WANDB_BASE_URL anyway.
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
export WANDB_BASE_URL="$BASE"
export WANDB_API_KEY="$API_KEY"
export WANDB_ERROR_REPORTING=false
export WANDB_DISABLE_CODE=true
export WANDB_DISABLE_GIT=true
export WANDB_SILENT=false
export WANDB_CONFIG_DIR="$SCRATCH/config"
export WANDB_CACHE_DIR="$SCRATCH/cache"
export WANDB_DATA_DIR="$SCRATCH/data"
export WANDB_DIR="$SCRATCH"
export TMPDIR="$SCRATCH"   # the CLI writes debug-cli.<user>.log into the temp dir
export NETRC="$SCRATCH/netrc"
unset WANDB_ENTITY WANDB_PROJECT WANDB_MODE || true
# no proxy may divert loopback traffic
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

before="$(curl -fsS "$BASE/_fake/state" | "$VENV/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')"

cd "$SCRATCH"
if [ -n "$JOB" ]; then
    SOURCE=(--job "$JOB")
else
    SOURCE=(--docker-image "$IMAGE")
fi
"$VENV/bin/wandb" launch --queue "$QUEUE" --entity "$ENTITY" --project "$PROJECT" \
    "${SOURCE[@]}" "${EXTRA[@]}"

# Verify the item really landed in the fake's queue.
curl -fsS "$BASE/_fake/state" | "$VENV/bin/python" -c '
import json, sys
st = json.load(sys.stdin)
before, queue, entity, image, job = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
qids = {q["id"] for q in st["queues"] if q["name"] == queue and q["entityName"] == entity}
items = [i for i in st["items"] if i["queueId"] in qids]
ok = len(st["items"]) > before and any(
    (i["runSpec"].get("job") == job) if job else
    ((i["runSpec"].get("docker") or {}).get("docker_image") == image) for i in items)
print(("submitted: " if ok else "NOT submitted: ") + json.dumps([i["id"] for i in items]))
sys.exit(0 if ok else 1)
' "$before" "$QUEUE" "$ENTITY" "$IMAGE" "$JOB"
