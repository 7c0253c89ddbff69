#!/usr/bin/env bash
# Installs everything building, running and testing edgerelay needs, skipping what is already
# there: the wasm32 target, the npm packages in package-lock.json, worker-build, and the
# wasm-bindgen CLI at exactly the version Cargo.lock pins (worker-build would otherwise try to
# download it from GitHub, which these machines cannot reach), and Debian's chromium for the
# dashboard's browser test (playwright-core drives it; its own browser download is unreachable).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.sh

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm not found: install Node.js ${NODE_MIN}+ first" >&2; exit 1; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# npm ci only when the lockfile changed since the last install (or nothing is installed).
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat node_modules/.edgerelay-lock 2>/dev/null)" != "$lock_sum" ]; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.edgerelay-lock
fi

installed_version() { # prints the version a CLI reports, or nothing
  "$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true
}

if [ "$(installed_version worker-build)" != "$WORKER_BUILD_VERSION" ]; then
  say "installing worker-build $WORKER_BUILD_VERSION (takes a few minutes once)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --force
fi

wasm_bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$wasm_bindgen_version" ]; then echo "wasm-bindgen not found in Cargo.lock" >&2; exit 1; fi
if [ "$(installed_version wasm-bindgen)" != "$wasm_bindgen_version" ] \
  || [ "$(installed_version wasm-bindgen-test-runner)" != "$wasm_bindgen_version" ]; then
  say "installing wasm-bindgen-cli $wasm_bindgen_version (takes a few minutes once)"
  # Without --locked: its own lockfile pins a crate version the registry mirror may lack.
  cargo install wasm-bindgen-cli --version "$wasm_bindgen_version" --force
fi

# The dashboard test (tests/e2e/dashboard.test.mjs) drives /usr/bin/chromium headless.
if [ ! -x /usr/bin/chromium ]; then
  command -v apt-get >/dev/null || { echo "/usr/bin/chromium missing and no apt-get: install Chromium there" >&2; exit 1; }
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "/usr/bin/chromium missing: run as root or install sudo" >&2; exit 1; }
    as_root=(sudo)
  fi
  say "installing chromium with apt-get (for the dashboard's browser test; a minute or two once)"
  "${as_root[@]}" apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi
