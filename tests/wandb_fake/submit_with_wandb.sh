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
# shellcheck source=wandb_env.sh
. "$HERE/wandb_env.sh"
QUEUE="default"
IMAGE="busybox:latest"
JOB=""
EXTRA=()

while [ $# -gt 0 ]; do
    if common_option "$@"; then shift 2; continue; fi
    case "$1" in
        --queue) QUEUE="$2"; shift 2 ;;
        --image) IMAGE="$2"; shift 2 ;;
        --job) JOB="$2"; shift 2 ;;
        --) shift; EXTRA+=("$@"); break ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[ -n "$PORT" ] || { echo "usage: $0 --port PORT [...]" >&2; exit 2; }
require_wandb

BASE="http://127.0.0.1:$PORT"

isolate_wandb
export WANDB_DISABLE_CODE=true
export WANDB_SILENT=false

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
