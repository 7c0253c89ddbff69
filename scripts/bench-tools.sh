# Sourced by scripts/bench.sh and scripts/profile.sh: installs what the benchmark uses when it is
# missing, never failing the run for it (the bench says what it fell back to).
#   wrk        Debian's package, the load generator (else bench/lib.mjs falls back to node)
#   Portkey    @portkey-ai/gateway into bench/.portkey (its own package.json and lockfile)

bench_say() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }

bench_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else return 1
  fi
}

ensure_wrk() {
  command -v wrk >/dev/null && return 0
  if ! command -v apt-get >/dev/null; then
    bench_say "wrk missing and no apt-get: the node load generator will be used"
    return 0
  fi
  bench_say "installing wrk with apt-get (the load generator; once)"
  if ! { bench_as_root apt-get update -q >/dev/null \
      && bench_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null; }; then
    bench_say "could not install wrk: the node load generator will be used"
  fi
  return 0
}

ensure_taskset() {
  command -v taskset >/dev/null || bench_say "taskset missing (package util-linux): no CPU pinning"
}

ensure_portkey() {
  [ -f bench/.portkey/node_modules/@portkey-ai/gateway/build/start-server.js ] && return 0
  bench_say "installing the Portkey AI Gateway into bench/.portkey (once)"
  if ! (cd bench/.portkey && timeout 300 npm install --no-audit --no-fund --loglevel=error >/dev/null); then
    bench_say "could not install Portkey: its rows will be skipped"
  fi
  return 0
}

# Builds the Worker unless build/ is newer than everything it is built from (wasm-opt alone takes
# a minute on a busy machine); BENCH_REBUILD=1 builds anyway.
build_if_stale() {
  local wasm=build/index_bg.wasm
  if [ "${BENCH_REBUILD:-}" != 1 ] && [ -f "$wasm" ] && [ -f build/index.js ] \
    && [ -z "$(find src Cargo.toml Cargo.lock scripts/build.sh scripts/versions.sh -newer "$wasm" -print -quit 2>/dev/null)" ] \
    && { [ ! -e build.rs ] || [ build.rs -ot "$wasm" ]; }; then
    bench_say "build/ is up to date (BENCH_REBUILD=1 to build anyway)"
    return 0
  fi
  bash scripts/build.sh >/dev/null
}
