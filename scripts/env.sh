# Environment shared by every script: tools on PATH, and nothing reaching the internet.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PWD/node_modules/.bin:$PATH"
# worker-build: use the installed wasm-bindgen, npm's binaryen and esbuild instead of downloads.
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-wasm-bindgen}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
# wrangler / Miniflare: no telemetry, no download of request.cf data, no update checks.
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export WRANGLER_LOG="${WRANGLER_LOG:-warn}"
export NO_UPDATE_NOTIFIER=1
