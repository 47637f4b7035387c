#!/usr/bin/env bash
# Build the Apache Beam Prism runner from the Go module proxy and cache it.
#
# The apache-beam Python wheel does not bundle Prism; PrismRunner would download
# a release zip from GitHub at run time, which is not reachable here. Instead we
# build go/cmd/prism of the module github.com/apache/beam/sdks/v2@v<ver> (same version
# as the Python SDK) and point the pipeline at it:
#   --runner=PrismRunner --prism_location="$(scripts/install_prism.sh)" --streaming
#   (--environment_type=LOOPBACK is PrismRunner's default)
#
# Usage: scripts/install_prism.sh [BEAM_VERSION]
#   BEAM_VERSION   e.g. 2.77.0; default: $BEAM_VERSION, else the apache-beam version
#                  installed in the project venv (.venv) / python3, else 2.77.0.
#   BETLAKE_CACHE  cache root (default ~/.cache/betlake); binary goes to
#                  $BETLAKE_CACHE/prism-<ver>/prism
# The module source is patched first with scripts/prism/*.patch (fixes to Prism found here,
# each patch says why); the binary's directory keeps the patches' hash, and a binary built
# from other patches (or none) is rebuilt.
# Idempotent: if the binary already exists nothing is built and no network is used.
# Prints the absolute path of the binary on stdout (logs go to stderr).
# Needs Go >= 1.26 (the go directive of beam sdks/v2 v2.77.0's go.mod). A cold build
# takes ~1.5 min on 2 cores (downloads ~870 MB of modules); the binary is ~50-65 MB.
set -euo pipefail

log() { echo "install_prism: $*" >&2; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$script_dir")"

ver="${1:-${BEAM_VERSION:-}}"
if [[ -z "$ver" ]]; then
  for py in "$repo_dir/.venv/bin/python" python3; do
    if command -v "$py" >/dev/null 2>&1; then
      ver="$("$py" -c 'import importlib.metadata as m; print(m.version("apache-beam"))' 2>/dev/null || true)"
      [[ -n "$ver" ]] && break
    fi
  done
fi
ver="${ver:-2.77.0}"
ver="${ver#v}"
if [[ ! "$ver" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  # e.g. 2.78.0rc1 / 2.78.0.dev0: no matching Go module tag (RC tags are vX.Y.Z-RCn).
  log "unsupported apache-beam version '$ver' (need X.Y.Z); pass one explicitly"
  exit 2
fi

cache_root="${BETLAKE_CACHE:-$HOME/.cache/betlake}"
dest_dir="$cache_root/prism-$ver"
dest="$dest_dir/prism"

patches=("$script_dir"/prism/*.patch)
stamp="$dest_dir/patches.sha256"
want="$(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -x "$dest" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
  echo "$dest"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "'go' not found on PATH; install Go >= 1.26 (e.g. apt-get install golang or the Go toolchain)"
  exit 1
fi

mkdir -p "$dest_dir"
tmp_bin="$(mktemp -d "$dest_dir/.build.XXXXXX")"
trap 'rm -rf "$tmp_bin"' EXIT

module="github.com/apache/beam/sdks/v2@v$ver"
log "building prism from $module (go $(go env GOVERSION)) with ${#patches[@]} patch(es) ..."
start=$(date +%s)
# GOTOOLCHAIN=local: never try to fetch another Go toolchain; fail clearly instead.
module_dir="$(GOTOOLCHAIN=local go mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
if [[ -z "$module_dir" ]]; then
  log "go mod download failed for $module"
  exit 1
fi
src="$tmp_bin/src"
cp -r "$module_dir" "$src"
chmod -R u+w "$src"
for patch_file in "${patches[@]}"; do
  patch --quiet --directory="$src" -p1 <"$patch_file"
done
# -trimpath -ldflags='-s -w': reproducible paths, smaller binary.
if ! (cd "$src" && GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -trimpath -mod=mod" \
      go build -ldflags='-s -w' -o "$tmp_bin/prism" ./go/cmd/prism >&2); then
  log "go build failed for prism from $module"
  exit 1
fi
mv -f "$tmp_bin/prism" "$dest"   # atomic within the same directory tree
chmod 0755 "$dest"
echo "$want" >"$stamp"
log "installed $dest ($(du -h "$dest" | cut -f1)) in $(( $(date +%s) - start ))s"
echo "$dest"
