#!/usr/bin/env bash
# Memory-error checks, with zero errors as the bar:
#
#   tools/sanitize.sh [asan|valgrind|all] [TEST_FILE...]
#
# asan      cargo test of the Rust core built with AddressSanitizer
#           (-Zsanitizer=address; a nightly toolchain, or stable with
#           RUSTC_BOOTSTRAP=1).
# valgrind  the testthat suite in R under valgrind (R -d valgrind), against
#           the package installed by tools/dev-install.sh into $SANITIZE_LIB
#           (default: a fresh debug build in a temporary library). TEST_FILE
#           names files in tests/testthat (default: all of them).
#
# Prints one summary line per part ("asan: ... errors", "valgrind: N errors
# in M contexts") and exits non-zero if any part found an error or failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
what=${1:-all}
shift || true
files=("$@")
work=${SANITIZE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/safetensors-sanitize.XXXXXX")}
mkdir -p "$work"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
status=0
summary=()

run_asan() {
  local host toolchain=()
  host=$(rustc -vV | sed -n 's/^host: //p')
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
  else
    export RUSTC_BOOTSTRAP=1
  fi
  echo "==== cargo test with AddressSanitizer ($host)"
  # --target keeps the sanitizer flags off build scripts and proc macros.
  (cd "$root/src/rust" &&
    RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes" \
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1" \
    cargo "${toolchain[@]}" test --target "$host" --target-dir "${SANITIZE_TARGET_DIR:-$work/asan-target}" \
      --lib --tests 2>&1) | tee "$work/asan.log"
  local rc=${PIPESTATUS[0]}
  local reports
  reports=$(grep -c -E '^==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer)' "$work/asan.log")
  local tests
  tests=$(awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed", p, f}' "$work/asan.log")
  summary+=("asan: cargo test $tests, $reports sanitizer errors (exit $rc)")
  if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then status=1; fi
}

run_valgrind() {
  local lib=${SANITIZE_LIB:-}
  if [ -z "$lib" ]; then
    lib="$work/lib"
    "$root/tools/dev-install.sh" "$lib" >"$work/install.log" 2>&1 || {
      tail -n 30 "$work/install.log"
      summary+=("valgrind: the package did not install")
      status=1
      return
    }
  fi
  local script="$work/valgrind-tests.R"
  {
    echo "options(warn = 1)"
    echo ".libPaths(c('$lib', .libPaths()))"
    echo "Sys.setenv(NOT_CRAN = 'true')"
    echo "library(testthat)"
    echo "dir <- '$root/tests/testthat'"
    if [ ${#files[@]} -eq 0 ]; then
      echo "res <- test_dir(dir, package = 'safetensors', load_package = 'installed', stop_on_failure = FALSE, reporter = 'summary')"
    else
      printf "files <- c(%s)\n" "$(printf "'%s'," "${files[@]}" | sed 's/,$//')"
      echo "res <- test_dir(dir, filter = paste0('^(', paste(sub('[.]R$', '', sub('^test-', '', basename(files))), collapse = '|'), ')\$'), package = 'safetensors', load_package = 'installed', stop_on_failure = FALSE, reporter = 'summary')"
    fi
    echo "df <- as.data.frame(res)"
    echo "cat(sprintf('TESTTHAT %d passed %d failed %d skipped\n', sum(df\$nb) - sum(df\$failed), sum(df\$failed) + sum(df\$error), sum(df\$skipped)))"
  } >"$script"
  echo "==== testthat under valgrind (${files[*]:-all files})"
  R -d "valgrind --track-origins=yes --num-callers=30 --log-file=$work/valgrind.%p.log" \
    --vanilla -f "$script" 2>&1 | tee "$work/valgrind-r.log"
  # The log of the R process itself (child processes started by tests are
  # not run under valgrind).
  local errors=0 contexts=0 log
  for log in "$work"/valgrind.*.log; do
    local line
    line=$(grep 'ERROR SUMMARY' "$log" | tail -n 1)
    [ -n "$line" ] || continue
    errors=$((errors + $(echo "$line" | awk '{print $4}')))
    contexts=$((contexts + $(echo "$line" | awk '{print $7}')))
  done
  local tests
  tests=$(grep '^TESTTHAT' "$work/valgrind-r.log" | tail -n 1 | sed 's/^TESTTHAT //')
  summary+=("valgrind: testthat ${tests:-did not finish}; $errors errors in $contexts contexts (logs: $work/valgrind.*.log)")
  if [ "$errors" -ne 0 ] || [ -z "$tests" ]; then status=1; fi
}

case $what in
  asan) run_asan ;;
  valgrind) run_valgrind ;;
  all) run_asan; run_valgrind ;;
  *) echo "usage: tools/sanitize.sh [asan|valgrind|all] [TEST_FILE...]" >&2; exit 2 ;;
esac

echo
printf '%s\n' "${summary[@]}"
exit "$status"
