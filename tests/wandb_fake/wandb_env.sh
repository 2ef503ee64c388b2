# Sourced by the scripts that run the REAL `wandb` CLI against the FAKE server
# (submit_with_wandb.sh, create_job_with_wandb.sh). With PORT and API_KEY set,
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
