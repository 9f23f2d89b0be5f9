#!/usr/bin/env bash
# Runs the cargo-fuzz targets of the Rust core (src/rust/fuzz), each for a
# fixed time, one after another:
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     # default 600 s; all targets
#
# Targets: header (parsing and validation of arbitrary bytes), deserialize
# (whole files converted to every R type and encoded back), convert
# (structure-aware conversions), index_walk (the block index walker), slice
# (selections planned, read and decoded), index (shard index files).
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain, or
# a stable one (RUSTC_BOOTSTRAP=1 is set then, for -Zsanitizer=address).
#
# Corpora live in $FUZZ_DIR/corpus/<target> (default src/rust/fuzz), seeded
# from tests/testthat/fixtures/*.safetensors and from valid files the
# core's writer makes (examples/seeds.rs). Crashes go to
# $FUZZ_DIR/artifacts/<target>; reproduce one with
#   cd src/rust/fuzz && cargo +nightly fuzz run <target> <artifact>
# The last lines give executions and crashes per target; the exit status
# is non-zero when any target crashed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(header deserialize convert index_walk slice index)
fi
fuzz=$root/src/rust/fuzz
work=${FUZZ_DIR:-$fuzz}
target_dir=${FUZZ_TARGET_DIR:-$work/target}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz_cmd=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz_cmd=(cargo fuzz)
fi

cd "$fuzz" || exit 2
echo "building fuzz targets (${fuzz_cmd[*]}, optimised, with debug assertions)"
"${fuzz_cmd[@]}" build -O -a --target-dir "$target_dir" || exit 2

# Seeds: the package's fixtures and files from the core's own writer.
for t in "${targets[@]}"; do mkdir -p "$work/corpus/$t"; done
CARGO_TARGET_DIR="$target_dir/seeds" cargo run --quiet --example seeds -- "$work/corpus" || exit 2
for f in "$root"/tests/testthat/fixtures/*.safetensors; do
  [ -f "$f" ] || continue
  for t in header deserialize; do
    cp "$f" "$work/corpus/$t/fixture-$(basename "$f")"
  done
done

summary=()
status=0
for t in "${targets[@]}"; do
  art="$work/artifacts/$t"
  mkdir -p "$art"
  before=$(find "$art" -type f | wc -l)
  dict=()
  case $t in header | deserialize | index) dict=(-dict="$fuzz/header.dict") ;; esac
  log="$work/fuzz-$t.log"
  echo "==== $t: $seconds s (log $log)"
  "${fuzz_cmd[@]}" run -O -a --target-dir "$target_dir" "$t" "$work/corpus/$t" -- \
    -artifact_prefix="$art/" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict[@]}" >"$log" 2>&1
  rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n 1)
  crashes=$(($(find "$art" -type f | wc -l) - before))
  corpus=$(find "$work/corpus/$t" -type f | wc -l)
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes="? (exit $rc)"; fi
  [ "$rc" -ne 0 ] && status=1
  line="$t: ${execs:-?} executions in $seconds s, $crashes crashes, corpus $corpus"
  echo "$line"
  summary+=("$line")
done
echo
printf '%s\n' "${summary[@]}"
exit "$status"
