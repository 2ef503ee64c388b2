# Sourced by the scripts that run the REAL `wandb` CLI against the FAKE server
# (submit_with_wandb.sh, create_job_with_wandb.sh, log_job_with_wandb.sh).
#
# It sets the defaults of the options they share (VENV, PORT, API_KEY,
# ENTITY, PROJECT); `common_option` takes one of those options, and
# `require_wandb` checks the venv. With PORT and API_KEY set,
# `isolate_wandb` keeps everything on this machine and out of the user's real
# W&B settings:
# - WANDB_BASE_URL points the client (and its wandb-core sidecar) at the fake;
# - a throw-away config/cache/data dir, SCRATCH (removed on exit), so
#   ~/.config/wandb and ~/.netrc are neither used nor written;
# - no error reporting (Sentry), no git, and no proxy for loopback traffic.
# The caller then runs the CLI from "$SCRATCH".

isolate_wandb() {
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
    export TMPDIR="$SCRATCH" # the CLI writes debug-cli.<user>.log into the temp dir
    export NETRC="$SCRATCH/netrc"
    unset WANDB_ENTITY WANDB_PROJECT WANDB_MODE || true
    export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
}

VENV="${LAUNCH_AGENT_WANDB_VENV:-$HOME/.cache/launch-agent-wandb-venv}"
PORT=""
API_KEY="${WANDB_FAKE_API_KEY:-ffffffffffffffffffffffffffffffffffffffff}"
ENTITY="fake-entity"
PROJECT="fake-project"

# Sets the shared option "$1" to "$2" (--port, --api-key, --entity,
# --project); fails for any other, so the caller can shift 2 on success.
common_option() {
    case "$1" in
        --port) PORT="$2" ;;
        --api-key) API_KEY="$2" ;;
        --entity) ENTITY="$2" ;;
        --project) PROJECT="$2" ;;
        *) return 1 ;;
    esac
}

# Exits 2 when the venv has no wandb client.
require_wandb() {
    [ -x "$VENV/bin/wandb" ] || {
        echo "no wandb in $VENV: run $(dirname "${BASH_SOURCE[0]}")/setup.sh first" >&2
        exit 2
    }
}
