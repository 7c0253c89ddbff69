#!/usr/bin/env bash
# Fuzz the pure core with cargo-fuzz (libFuzzer, nightly Rust): every target in fuzz/, or the
# ones named as arguments, for FUZZ_SECONDS each (default 60), FUZZ_JOBS at a time (default 1).
# Not part of `npm test`.
#
#   bash scripts/fuzz.sh                                  # all targets, 60 s each
#   FUZZ_SECONDS=600 FUZZ_JOBS=2 bash scripts/fuzz.sh sse_parser translate_pipe
#
# Corpora start from tests/fixtures/** (and fuzz/seeds/<target>/), copied into
# fuzz/corpus/<target>/ with a leading byte, since every target reads its first byte as a
# parameter (where to cut the stream, which options to use). Corpora, crash artifacts and logs
# (fuzz/artifacts/<target>/fuzz.log) stay under fuzz/ and are git-ignored.
#
# Prints one line per target; exits non-zero if any target found a crash, a leak, a timeout or
# too much memory (the artifact path is printed; reproduce with
# `cargo +nightly fuzz run <target> <artifact>`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
flags=(-rss_limit_mb=512 -max_len=65536 -timeout=10 -print_final_stats=1
  "-dict=$root/fuzz/dicts/relay.dict")
# AddressSanitizer keeps up to 256 MB of freed memory in quarantine by default, which would
# count against the 512 MB limit above; a smaller one leaves the limit to the code under test.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz…" >&2
  cargo install cargo-fuzz --locked
fi

cd fuzz
mapfile -t all < <(cargo +nightly fuzz list)
targets=("${@:-${all[@]}}")
for t in "${targets[@]}"; do
  if ! printf '%s\n' "${all[@]}" | grep -qx "$t"; then
    echo "no fuzz target '$t' (have: ${all[*]})" >&2
    exit 2
  fi
done

echo "building the fuzz targets…" >&2
cargo +nightly fuzz build
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=$root/fuzz/target/$host/release

# Which fixtures seed which target (a glob relative to tests/fixtures).
seeds_for() {
  case "$1" in
    sse_parser | translate_pipe) echo '*/*.sse' ;;
    openai_stream) echo 'openai/*.sse' ;;
    anthropic_stream) echo 'anthropic/*.sse' ;;
    gemini_stream) echo 'gemini/*.sse' ;;
    eventstream) echo '*/*.bin' ;;
    bedrock_stream) echo 'bedrock/*.json' ;;
    request_decoders) echo '*/request_*.json' ;;
    reply_decoders) echo '*/*.json' ;;
    # Tokens and origins: only its own seeds (fuzz/seeds/bearer_tokens/).
    bearer_tokens) echo 'no-fixtures/*' ;;
    *) echo '*/*' ;;
  esac
}

seed() {
  local t=$1 corpus=$root/fuzz/corpus/$1 f
  local -a fixtures
  mkdir -p "$corpus"
  mapfile -t fixtures < <(cd "$root/tests/fixtures" && compgen -G "$(seeds_for "$t")" || true)
  # 0x80 cuts a stream about in the middle; for the request target it means "no key, no beta".
  for f in "${fixtures[@]}"; do
    { printf '\x80'; cat "$root/tests/fixtures/$f"; } >"$corpus/fixture-${f//\//-}"
  done
  if [[ -d $root/fuzz/seeds/$t ]]; then
    for f in "$root/fuzz/seeds/$t"/*; do
      { printf '\x80'; cat "$f"; } >"$corpus/seed-$(basename "$f")"
    done
  fi
}

run() {
  local t=$1 artifacts=$root/fuzz/artifacts/$1
  local log=$artifacts/fuzz.log
  mkdir -p "$artifacts"
  seed "$t"
  local before after status=0
  before=$(find "$artifacts" -maxdepth 1 -type f ! -name fuzz.log | sort)
  "$bin_dir/$t" "$root/fuzz/corpus/$t" "${flags[@]}" -max_total_time="$seconds" \
    -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  after=$(find "$artifacts" -maxdepth 1 -type f ! -name fuzz.log | sort)
  local new cov execs rate rss
  new=$(comm -13 <(echo "$before") <(echo "$after") | grep -v '^$' || true)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 || true)
  execs=$(final_stat "$log" number_of_executed_units)
  rate=$(final_stat "$log" average_exec_per_sec)
  rss=$(final_stat "$log" peak_rss_mb)
  if ((status == 0)); then
    printf '%-18s ok    %ss  execs %s (%s/s)  %s  peak rss %s MB  crashes 0\n' \
      "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-cov ?}" "${rss:-?}"
  else
    local why
    why=$(grep -m1 -oE "panicked at .*|ERROR: libFuzzer: [a-z-]+|ERROR: AddressSanitizer: [a-z-]+" "$log" || true)
    printf '%-18s FAIL  exit %s  execs %s  %s  crashes %s  %s  artifact: %s  log: %s\n' \
      "$t" "$status" "${execs:-?}" "${cov:-cov ?}" "$(grep -c . <<<"$new" || true)" \
      "${why:-see the log}" "${new:-none}" "$log"
  fi
  return "$status"
}

# The last value of libFuzzer's `stat::<name>` line (printed with -print_final_stats=1).
final_stat() {
  sed -n "s/^stat::$2: *//p" "$1" | tail -1
}

failed=0
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while ((running > 0)); do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
