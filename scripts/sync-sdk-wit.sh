#!/usr/bin/env bash
# Copies the contract (wit/*.wit, the published launch:plugin WIT) into the
# guest SDK (plugins/sdk/wit/), which carries its own copy so that it builds
# outside this repository (as a git or crates.io dependency).
#
# wit/ is the one source of truth: edit it, then run this script. The host
# test `sdk_standalone` fails while the two differ.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/plugins/sdk/wit"
mkdir -p "$dest"
rm -f "$dest"/*.wit
cp "$root"/wit/*.wit "$dest"/
echo "sync-sdk-wit: copied $(ls "$root"/wit/*.wit | wc -l) files into $dest" >&2
