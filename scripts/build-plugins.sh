#!/usr/bin/env bash
# Builds the plugins (WebAssembly components) in release: lean ones (no WASI
# imports) for wasm32-unknown-unknown, the others for wasm32-wasip2 (see the
# SDK's `lean` module):
#
#   $TARGET/bundle/        the default bundle: builder-noop.wasm, builder-docker.wasm,
#                          environment-local.wasm, registry-oci.wasm
#   $TARGET/test-plugins/  plugins for the host's tests: hostile.wasm, hostile-lean.wasm,
#                          hostile-builder.wasm, future-wit.wasm
#
# where $TARGET is $CARGO_TARGET_DIR, or `target` in the workspace root.
# Progress goes to stderr; the last (and only) line on stdout is the bundle
# directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$root/$target_dir" ;;
esac
wasi=wasm32-wasip2
lean=wasm32-unknown-unknown

for triple in "$wasi" "$lean"; do
    if ! command -v rustup >/dev/null; then
        echo "build-plugins: rustup not found; assuming the $triple target is installed" >&2
    elif ! rustup target list --installed | grep -qx "$triple"; then
        echo "build-plugins: installing the $triple target" >&2
        rustup target add "$triple" >&2
    fi
done

# The future-wit test plugin must carry the real contract with only the
# version changed; warn when someone changed wit/ without updating it.
for f in "$root"/wit/*.wit; do
    copy="$root/tests/plugins/future-wit/wit/$(basename "$f")"
    if ! sed 's/launch:plugin@0\.1\.0/launch:plugin@0.2.0/g' "$f" | cmp -s - "$copy"; then
        echo "build-plugins: warning: tests/plugins/future-wit/wit/$(basename "$f") is not wit/$(basename "$f") with the version set to 0.2.0" >&2
    fi
done

echo "build-plugins: building plugins into $target_dir/{$wasi,$lean}/release" >&2
(
    cd "$root"
    # Plugins that use files, environment variables or wasi:http.
    CARGO_TARGET_DIR="$target_dir" cargo build --release --target "$wasi" \
        -p launch-plugin-sdk \
        -p builder-docker \
        -p hostile-plugin \
        -p hostile-builder-plugin \
        -p future-wit-plugin \
        >&2
    # Lean plugins: nothing of WASI, cheaper calls.
    CARGO_TARGET_DIR="$target_dir" cargo build --release --target "$lean" \
        -p builder-noop \
        -p environment-local \
        -p registry-oci \
        -p hostile-plugin \
        >&2
)

bundle="$target_dir/bundle"
tests="$target_dir/test-plugins"
mkdir -p "$bundle" "$tests"

# copy TRIPLE FILE DEST
copy() {
    local from="$target_dir/$1/release/$2" to="$3"
    if [ ! -f "$from" ]; then
        echo "build-plugins: $from was not built" >&2
        exit 1
    fi
    cp "$from" "$to"
    echo "build-plugins: $to ($(wc -c <"$to") bytes)" >&2
}

copy "$lean" builder_noop.wasm "$bundle/builder-noop.wasm"
copy "$wasi" builder_docker.wasm "$bundle/builder-docker.wasm"
copy "$lean" environment_local.wasm "$bundle/environment-local.wasm"
copy "$lean" registry_oci.wasm "$bundle/registry-oci.wasm"
copy "$wasi" hostile_plugin.wasm "$tests/hostile.wasm"
copy "$lean" hostile_plugin.wasm "$tests/hostile-lean.wasm"
copy "$wasi" hostile_builder_plugin.wasm "$tests/hostile-builder.wasm"
copy "$wasi" future_wit_plugin.wasm "$tests/future-wit.wasm"

echo "$bundle"
