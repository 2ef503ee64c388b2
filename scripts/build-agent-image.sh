#!/usr/bin/env bash
# Builds the agent's own container image: `launch-agent` as a static (musl)
# binary that embeds the default bundle (host/build.rs), `FROM scratch`, so
# that it builds with no base image to pull. The image `deploy coreweave`
# runs (its `--image` flag).
#
#   scripts/build-agent-image.sh [--tag TAG] [--profile release|dev] [--binary-only]
#
#   --tag TAG      the image's tag (default launch-agent:latest)
#   --profile P    cargo profile: `release` (default; what you ship) or `dev`
#                  (the tests': the workspace's dev profile optimises the
#                  dependencies, so it is quick enough to serve a queue)
#   --binary-only  build the static binary only, no image
#
# What the image holds (and nothing else: no shell, no package manager):
#
# | path | what |
# |---|---|
# | /usr/local/bin/launch-agent | the static binary, stripped (entrypoint; the default command is `run`) |
# | /etc/ssl/certs/ca-certificates.crt | this machine's CA bundle (Debian's `ca-certificates`), for W&B and the registries |
# | /etc/passwd, /etc/group | `root` and `launch_agent` (uid/gid 1000), the user it runs as |
# | /home/launch_agent | its home (owned by 1000): the W&B config is mounted at .config/wandb |
# | /tmp | world-writable with the sticky bit |
#
# What it needs, installed when missing (so a fresh Debian machine works):
# rustup's x86_64-unknown-linux-musl target and Debian's `musl-tools`
# (`musl-gcc`: ring and the bundled SQLite are C), `ca-certificates`,
# `binutils` (`strip`), and a Docker engine answering `docker info`
# (scripts/services.sh starts one).
# The build has a cargo target dir of its own, $LAUNCH_AGENT_IMAGE_TARGET_DIR,
# default $CARGO_TARGET_DIR/agent-image (or target/agent-image), so that it
# never waits on the lock of a build or test running in the usual one (a
# test builds the image this way); the binary is in
# x86_64-unknown-linux-musl/<profile>/ there.
#
# Progress goes to stderr; the last line on stdout is the image's tag (or,
# with --binary-only, the binary's path).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
triple=x86_64-unknown-linux-musl
tag=launch-agent:latest
profile=release
binary_only=false

log() { echo "build-agent-image: $*" >&2; }
die() {
    echo "build-agent-image: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift 2 ;;
        --profile) [ $# -ge 2 ] || die "--profile needs a value"; profile="$2"; shift 2 ;;
        --binary-only) binary_only=true; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument \`$1\` (see --help)" ;;
    esac
done
case "$profile" in
    release) profile_dir=release ;;
    dev | debug) profile=dev; profile_dir=debug ;;
    *) die "--profile must be \`release\` or \`dev\`, not \`$profile\`" ;;
esac

apt_install() {
    command -v apt-get >/dev/null || die "$1 is missing and this machine has no apt-get: install $1"
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; } ||
        die "cannot install $*"
}

if ! command -v rustup >/dev/null; then
    log "rustup not found; assuming the $triple target is installed"
elif ! rustup target list --installed | grep -qx "$triple"; then
    log "installing the $triple target"
    rustup target add "$triple" >&2
fi
command -v musl-gcc >/dev/null || apt_install musl-tools
[ -s /etc/ssl/certs/ca-certificates.crt ] || apt_install ca-certificates

target_dir="${LAUNCH_AGENT_IMAGE_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/agent-image}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$root/$target_dir" ;;
esac
started=$(date +%s)
log "building launch-agent for $triple ($profile profile) into $target_dir"
# The C parts (ring, SQLite) are compiled with musl-gcc; Rust links the
# binary statically with its own musl (crt-static is the musl default).
(cd "$root" && CC_x86_64_unknown_linux_musl=musl-gcc CARGO_TARGET_DIR="$target_dir" \
    cargo build --profile "$profile" --target "$triple" -p launch-agent --bin launch-agent >&2)
binary="$target_dir/$triple/$profile_dir/launch-agent"
[ -x "$binary" ] || die "the build did not produce $binary"
if command -v file >/dev/null && ! file -L "$binary" | grep -Eq 'statically linked|static-pie linked'; then
    die "$binary is not statically linked: $(file -L "$binary")"
fi
log "binary: $binary ($(du -h "$binary" | cut -f1)), built in $(($(date +%s) - started)) s"
if $binary_only; then
    echo "$binary"
    exit 0
fi

command -v docker >/dev/null || die "the docker CLI is needed (scripts/services.sh installs it)"
docker info >/dev/null 2>&1 || die "no Docker engine answers \`docker info\`: start one (scripts/services.sh start)"
context="$(mktemp -d "${TMPDIR:-/tmp}/launch-agent-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc/ssl/certs" "$context/rootfs/tmp" \
    "$context/home/.config/wandb"
cp "$binary" "$context/rootfs/usr/local/bin/launch-agent"
# The image carries no debug information (the binary in the target dir keeps
# it): half the size of a dev build.
command -v strip >/dev/null || apt_install binutils
strip "$context/rootfs/usr/local/bin/launch-agent"
cp -L /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
cat >"$context/rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
launch_agent:x:1000:1000:launch-agent:/home/launch_agent:/sbin/nologin
PASSWD
cat >"$context/rootfs/etc/group" <<'GROUP'
root:x:0:
launch_agent:x:1000:
GROUP
chmod 1777 "$context/rootfs/tmp"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
COPY --chown=1000:1000 home/ /home/launch_agent/
ENV HOME=/home/launch_agent \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 1000:1000
WORKDIR /home/launch_agent
ENTRYPOINT ["/usr/local/bin/launch-agent"]
CMD ["run"]
DOCKERFILE
log "building the image $tag"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$context" >&2
log "image $tag: $(docker image inspect -f '{{.Size}}' "$tag") bytes, $(($(date +%s) - started)) s in all"
echo "$tag"
