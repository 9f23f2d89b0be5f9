#!/usr/bin/env bash
# The one test command (also run by CI through .ci/run):
#
#   bash tools/test.sh
#
# 1. tools/install-deps.sh            R, R packages, Python oracle
# 2. R CMD INSTALL into a temporary library (release build; DEBUG=true in the
#    environment gives a faster debug build)
# 3. cargo test in src/rust           the Rust workspace: the core crate
#                                      (no R) and the bindings
#    Rust gates, one test each:        cargo fmt --check (and rustfmt on the
#                                      fuzz crate); cargo clippy --workspace
#                                      --all-targets -D warnings (the lints
#                                      of [workspace.lints] included); the
#                                      MSRV stated alike (tools/check-msrv.sh);
#                                      cargo +MSRV test --workspace, the
#                                      floor toolchain installed with rustup
#                                      when missing (skipped, with a message,
#                                      where rustup or the network is not
#                                      there)
# 4. testthat against the installed package (tools/run-testthat.R)
# 5. tools/check-architecture.R       the layers ARCHITECTURE.md describes,
#    tools/check-nonapi.R             R's API only in the Rust code
# 6. with SAFETENSORS_CHECK=true: the CRAN check (tools/check.sh)
#
# Its last line is always "N passed, N failed, N skipped", summed over cargo
# (ignored tests count as skipped), the Rust gates, testthat (expectations,
# as testthat's own summary counts them; errors count as failed) and the
# architecture checks. It exits non-zero if
# anything failed or a step broke. Works from any directory, without a
# terminal or standard input.

set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
exec </dev/null

export CARGO_TERM_COLOR=never
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"   # the machines have 2 cores

work=$(mktemp -d "${TMPDIR:-/tmp}/safetensors-test.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

passed=0
failed=0
skipped=0
broken=""

note_broken() {
  broken="$broken $1"
  failed=$((failed + 1))
}

step() { printf '\n==== %s ====\n' "$*"; }

# --- 1. dependencies ----------------------------------------------------------------
step "dependencies (tools/install-deps.sh)"
# shellcheck source=tools/install-deps.sh
if ! . tools/install-deps.sh; then
  note_broken "install-deps"
fi

# --- 2. install --------------------------------------------------------------------------
lib="$work/lib"
mkdir -p "$lib"
installed=no
step "R CMD INSTALL --library=$lib ."
t0=$(date +%s)
if command -v R >/dev/null 2>&1 &&
   R CMD INSTALL --no-multiarch --library="$lib" . >"$work/install.log" 2>&1; then
  installed=yes
  grep -E '^(Using (cargo|rustc)|Building offline|No src/rust/vendor|DEBUG is set|\* DONE)' "$work/install.log"
  echo "installed in $(( $(date +%s) - t0 )) s"
else
  tail -n 60 "$work/install.log" 2>/dev/null
  echo "R CMD INSTALL failed (full log above is the last 60 lines)"
  note_broken "install"
fi

# --- 3. cargo test -------------------------------------------------------------------------
step "cargo test (src/rust)"
if command -v cargo >/dev/null 2>&1; then
  (cd src/rust && cargo test --workspace -j "$CARGO_BUILD_JOBS" 2>&1) | tee "$work/cargo.log"
  cargo_rc=${PIPESTATUS[0]}
  # e.g. "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ..."
  read -r c_pass c_fail c_ign c_lines < <(
    awk '/^test result:/ {
           for (i = 1; i <= NF; i++) {
             if ($(i+1) ~ /^passed/)  p += $i
             if ($(i+1) ~ /^failed/)  f += $i
             if ($(i+1) ~ /^ignored/) s += $i
           }
           n++
         }
         END { printf "%d %d %d %d\n", p, f, s, n }' "$work/cargo.log")
  passed=$((passed + c_pass)); failed=$((failed + c_fail)); skipped=$((skipped + c_ign))
  echo "cargo test: $c_pass passed, $c_fail failed, $c_ign ignored ($c_lines test binaries)"
  if [ "$cargo_rc" -ne 0 ] && [ "$c_fail" -eq 0 ]; then
    note_broken "cargo-test(exit $cargo_rc)"
  fi
else
  echo "cargo not found"
  note_broken "cargo-test"
fi

# --- 3b. Rust gates ------------------------------------------------------------------------
# Each counts as one test: passed, failed, or skipped when its tool is missing.
gate_pass() { passed=$((passed + 1)); echo "passed: $1"; }
gate_fail() { note_broken "$1"; echo "FAILED: $1"; }
gate_skip() { skipped=$((skipped + 1)); echo "skipped: $1"; }

step "rustfmt (cargo fmt --check)"
if command -v cargo >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1; then
  # The fuzz crate is a workspace of its own; rustfmt checks its files
  # without resolving its dependencies.
  if (cd src/rust && cargo fmt --check &&
      rustfmt --check --edition 2021 fuzz/src/*.rs fuzz/fuzz_targets/*.rs fuzz/examples/*.rs); then
    gate_pass "rustfmt"
  else
    gate_fail "rustfmt(run cargo fmt in src/rust and src/rust/fuzz)"
  fi
else
  gate_skip "rustfmt (not installed: rustup component add rustfmt)"
fi

step "clippy (cargo clippy --workspace --all-targets -- -D warnings)"
if command -v cargo >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
  if (cd src/rust && cargo clippy --workspace --all-targets -j "$CARGO_BUILD_JOBS" -- -D warnings 2>&1); then
    gate_pass "clippy"
  else
    gate_fail "clippy"
  fi
else
  gate_skip "clippy (not installed: rustup component add clippy)"
fi

step "MSRV stated alike (tools/check-msrv.sh)"
if bash tools/check-msrv.sh; then
  gate_pass "msrv-stated"
else
  gate_fail "msrv-stated"
fi

# The floor: the workspace's tests with the oldest rustc the package says it
# supports, in a target directory of its own (kept between runs).
msrv=$(sed -n 's/^Config\/safetensors\/MSRV:[[:space:]]*//p' DESCRIPTION | tr -d '[:space:]')
step "cargo +$msrv test --workspace (the MSRV)"
floor_ready=no
if ! command -v rustup >/dev/null 2>&1; then
  gate_skip "MSRV test (rustup not found, so rustc $msrv can't be installed)"
elif rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  floor_ready=yes
elif rustup toolchain install "$msrv" --profile minimal >"$work/msrv-install.log" 2>&1; then
  floor_ready=yes
else
  tail -n 5 "$work/msrv-install.log"
  gate_skip "MSRV test (rustup could not install $msrv: offline?)"
fi
if [ "$floor_ready" = yes ]; then
  rustup run "$msrv" rustc --version
  if (cd src/rust && CARGO_TARGET_DIR=target/msrv cargo "+$msrv" test --workspace -j "$CARGO_BUILD_JOBS" 2>&1) >"$work/msrv.log"; then
    grep '^test result:' "$work/msrv.log"
    gate_pass "msrv-test"
  else
    tail -n 40 "$work/msrv.log"
    gate_fail "msrv-test(rustc $msrv)"
  fi
fi

# --- 4. testthat ---------------------------------------------------------------------------
step "testthat (tests/testthat, installed package)"
if [ "$installed" = yes ]; then
  counts="$work/testthat-counts"
  Rscript tools/run-testthat.R "$lib" "$counts" "$work/testthat-failures"
  r_rc=$?
  if [ -s "$counts" ]; then
    read -r t_pass t_fail t_skip < "$counts"
    passed=$((passed + t_pass)); failed=$((failed + t_fail)); skipped=$((skipped + t_skip))
    echo "testthat: $t_pass passed, $t_fail failed, $t_skip skipped"
  fi
  if [ "$r_rc" -ne 0 ]; then
    note_broken "testthat(exit $r_rc)"
  fi
else
  echo "skipped: the package did not install"
  note_broken "testthat(not run)"
fi

# --- 5. architecture ----------------------------------------------------------------------
step "architecture (tools/check-architecture.R)"
if command -v Rscript >/dev/null 2>&1; then
  Rscript tools/check-architecture.R 2>&1 | tee "$work/arch.log"
  arch_rc=${PIPESTATUS[0]}
  read -r a_pass a_fail < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ { print $1, $3 }' "$work/arch.log")
  passed=$((passed + ${a_pass:-0})); failed=$((failed + ${a_fail:-0}))
  if [ "$arch_rc" -ne 0 ] && [ "${a_fail:-0}" -eq 0 ]; then
    note_broken "architecture(exit $arch_rc)"
  fi
else
  note_broken "architecture(no Rscript)"
fi

# The R entry points the Rust code calls must all be R's API (CRAN's check
# reports the others); one test.
step "R API only (tools/check-nonapi.R)"
if Rscript tools/check-nonapi.R >"$work/nonapi.log" 2>&1; then
  tail -n 1 "$work/nonapi.log"
  passed=$((passed + 1))
else
  cat "$work/nonapi.log"
  note_broken "check-nonapi"
fi

# --- 6. CRAN check (opt-in) -------------------------------------------------------------
# tools/check.sh (R CMD build + R CMD check --as-cran on the vendored
# tarball) takes about ten minutes on two cores, which would more than
# double this script's time; it runs only when SAFETENSORS_CHECK=true, and
# then counts as one test: passed, or failed on any ERROR, WARNING or broken
# step.
if [ "${SAFETENSORS_CHECK:-}" = "true" ]; then
  step "CRAN check (tools/check.sh)"
  if bash tools/check.sh; then
    passed=$((passed + 1))
  else
    note_broken "cran-check"
  fi
else
  step "CRAN check skipped (SAFETENSORS_CHECK=true runs tools/check.sh)"
fi

echo
if [ -s "$work/testthat-failures" ]; then
  echo "failed testthat expectations (details above, under each file):"
  head -n 30 "$work/testthat-failures" | sed 's/^/  /'
fi
if [ -n "$broken" ]; then
  echo "broken steps (each counted as one failure):$broken"
fi
status=0
if [ "$failed" -gt 0 ] || [ -n "$broken" ]; then
  status=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
