#!/usr/bin/env bash
# Builds the plugins (WebAssembly components) in release: lean ones (no WASI
# imports) for wasm32-unknown-unknown, the others for wasm32-wasip2 (see the
# SDK's `lean` module):
#
#   $TARGET/bundle/        the default bundle: builder-noop.wasm, builder-docker.wasm, builder-kaniko.wasm,
#                          deployer-coreweave.wasm,
#                          environment-local.wasm, registry-oci.wasm, registry-gcr.wasm, ...
#   $TARGET/test-plugins/  plugins for the host's tests: hostile.wasm, hostile-lean.wasm,
#                          hostile-builder.wasm, future-wit.wasm, registry-computed.wasm,
#                          contract-v0-1.wasm, kube-user.wasm
#
# where $TARGET is $CARGO_TARGET_DIR, or `target` in the workspace root.
# The agent does not need $TARGET/bundle: it embeds the same bundle
# (host/build.rs); the tests load these files, and a plugin dir with them
# overrides the embedded ones.
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

# The target dir and commands host/build.rs builds the embedded bundle with,
# and none of the caller's build settings (as there), so that the two share
# their work instead of rebuilding each other's.
wasm_target="$target_dir/wasm-plugins"
unset RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
while read -r var; do
    unset "$var"
done < <(compgen -e | grep -E '^CARGO_(ENCODED_RUSTFLAGS|BUILD_|PROFILE_|TARGET_|INCREMENTAL)' || true)

echo "build-plugins: building plugins into $wasm_target/{$wasi,$lean}/release" >&2
(
    cd "$root"
    # The default bundle, exactly as host/build.rs builds it.
    cargo build --release --target "$lean" --target-dir "$wasm_target" \
        -p builder-noop -p environment-local -p registry-oci -p registry-acr -p deployer-coreweave >&2
    cargo build --release --target "$wasi" --target-dir "$wasm_target" \
        -p builder-docker -p builder-kaniko -p environment-aws -p registry-ecr -p environment-gcp -p environment-azure -p registry-gcr >&2
    # Test plugins that use files, environment variables or wasi:http.
    cargo build --release --target "$wasi" --target-dir "$wasm_target" \
        -p launch-plugin-sdk \
        -p hostile-plugin \
        -p hostile-builder-plugin \
        -p future-wit-plugin \
        -p contract-v0-1-plugin \
        -p kube-user-plugin \
        >&2
    # Lean test plugins: nothing of WASI.
    cargo build --release --target "$lean" --target-dir "$wasm_target" \
        -p hostile-plugin -p registry-computed-plugin >&2
)

bundle="$target_dir/bundle"
tests="$target_dir/test-plugins"
mkdir -p "$bundle" "$tests"

# copy TRIPLE FILE DEST
copy() {
    local from="$wasm_target/$1/release/$2" to="$3"
    if [ ! -f "$from" ]; then
        echo "build-plugins: $from was not built" >&2
        exit 1
    fi
    cp "$from" "$to"
    echo "build-plugins: $to ($(wc -c <"$to") bytes)" >&2
}

copy "$lean" builder_noop.wasm "$bundle/builder-noop.wasm"
copy "$wasi" builder_docker.wasm "$bundle/builder-docker.wasm"
copy "$wasi" builder_kaniko.wasm "$bundle/builder-kaniko.wasm"
copy "$lean" environment_local.wasm "$bundle/environment-local.wasm"
copy "$lean" registry_oci.wasm "$bundle/registry-oci.wasm"
copy "$wasi" registry_gcr.wasm "$bundle/registry-gcr.wasm"
copy "$lean" registry_acr.wasm "$bundle/registry-acr.wasm"
copy "$wasi" environment_aws.wasm "$bundle/environment-aws.wasm"
copy "$wasi" registry_ecr.wasm "$bundle/registry-ecr.wasm"
copy "$wasi" environment_gcp.wasm "$bundle/environment-gcp.wasm"
copy "$wasi" environment_azure.wasm "$bundle/environment-azure.wasm"
copy "$lean" deployer_coreweave.wasm "$bundle/deployer-coreweave.wasm"
copy "$wasi" hostile_plugin.wasm "$tests/hostile.wasm"
copy "$lean" hostile_plugin.wasm "$tests/hostile-lean.wasm"
copy "$wasi" hostile_builder_plugin.wasm "$tests/hostile-builder.wasm"
copy "$wasi" future_wit_plugin.wasm "$tests/future-wit.wasm"
copy "$lean" registry_computed_plugin.wasm "$tests/registry-computed.wasm"
copy "$wasi" contract_v0_1_plugin.wasm "$tests/contract-v0-1.wasm"
copy "$wasi" kube_user_plugin.wasm "$tests/kube-user.wasm"

echo "$bundle"
