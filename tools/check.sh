#!/usr/bin/env bash
# The CRAN check, as a release needs it:
#
#   bash tools/check.sh
#
# 1. copies the package (the files git tracks, plus new files it doesn't
#    ignore) to a temporary directory, so the work tree is never touched;
# 2. vendors the Rust crates there (tools/vendor.sh: src/rust/vendor.tar.xz)
#    and checks that the regenerated inst/AUTHORS and LICENSE.note equal the
#    committed ones;
# 3. `R CMD build` (which builds the vignettes, installing the package from
#    the vendored crates) and checks the tarball: under 10 MB, the crates
#    bundled, no build products;
# 4. `R CMD check --as-cran` on the tarball with the network cut off
#    (`unshare -n`, else CARGO_NET_OFFLINE=true) and HOME pointing to an
#    empty directory, so that a download or a write to the home directory
#    (such as cargo's default CARGO_HOME) shows;
# 5. reads the installation log as R >= 4.5's check_rust() does (rustc
#    version reported before compiling, no crates downloaded) and checks
#    `-j 2`, `--offline` and that nothing of the Rust build is left behind.
#
# It fails (exit 1) on any ERROR or WARNING of the check, or any failure of
# the steps above; NOTEs are listed (each must be explained in
# cran-comments.md). Its last line is "check: N errors, N warnings, N notes".
# The vendored crates and the copy are deleted afterwards; the logs are kept
# in $SAFETENSORS_CHECK_LOGS (default: ${TMPDIR:-/tmp}/safetensors-check).
#
# Environment:
#   SAFETENSORS_CHECK_LOGS=DIR   where the logs (and the tarball) are kept
#   SAFETENSORS_CHECK_KEEP_TARBALL=true   keep the built tarball there too
#
# Not checked here: the PDF manual (`--no-manual`; no LaTeX on the build
# machines), and what needs CRAN's servers (_R_CHECK_CRAN_INCOMING_REMOTE_
# is off, and the orphaned-dependency check sees an empty package
# database). torch, a suggested package, is not installable from Debian, so
# _R_CHECK_FORCE_SUGGESTS_=false.

set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
exec </dev/null

logs=${SAFETENSORS_CHECK_LOGS:-${TMPDIR:-/tmp}/safetensors-check}
work=$(mktemp -d "${TMPDIR:-/tmp}/safetensors-check.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

failures=()
fail() {
  echo "check.sh: FAILED: $*" >&2
  failures+=("$*")
}
step() { printf '\n==== %s ====\n' "$*"; }
finish() {
  local errors=${1:-0} warnings=${2:-0} notes=${3:-0}
  echo
  if [ "${#failures[@]}" -gt 0 ]; then
    echo "check.sh failures:"
    printf '  - %s\n' "${failures[@]}"
  fi
  echo "logs: $logs"
  echo "check: $errors errors, $warnings warnings, $notes notes"
  if [ "${#failures[@]}" -gt 0 ] || [ "$errors" -gt 0 ] || [ "$warnings" -gt 0 ]; then
    exit 1
  fi
  exit 0
}

if ! command -v cargo >/dev/null 2>&1 && [ -d "${HOME:-}/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TERM_COLOR=never

rm -rf "$logs"
mkdir -p "$logs"

# --- 0. what the check needs beyond tools/install-deps.sh --------------------------------
#   devscripts   checkbashisms, for the configure and cleanup scripts
#   tidy         HTML validation of the help pages
#   qpdf         R CMD check's check of PDF sizes (needed even with no PDFs)
#   pandoc       the vignettes (rmarkdown)
missing=""
for p in devscripts tidy qpdf pandoc; do
  case "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" in
    *"install ok installed"*) ;;
    *) missing="$missing $p" ;;
  esac
done
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  echo "installing Debian packages:$missing"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
    echo "check.sh: could not install$missing; the check may report them missing" >&2
fi

# --- 1. a private copy of the package -------------------------------------------------
step "copy of the package"
src="$work/src/safetensors"
mkdir -p "$src"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked files and new files git doesn't ignore; deleted files are skipped.
  git -C "$root" ls-files -z --cached --others --exclude-standard |
    (cd "$root" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
    rsync -a --from0 --files-from=- "$root/" "$src/"
else
  rsync -a --exclude .git --exclude 'src/rust/target' --exclude 'src/rust/vendor*' \
    --exclude 'src/*.o' --exclude 'src/*.so' --exclude 'src/Makevars' "$root/" "$src/"
fi
echo "copied $(find "$src" -type f | wc -l) files to $src"

# --- 2. vendored crates ----------------------------------------------------------------------
step "tools/vendor.sh"
if bash "$src/tools/vendor.sh" >"$logs/vendor.log" 2>&1; then
  tail -n 2 "$logs/vendor.log"
  for f in inst/AUTHORS LICENSE.note; do
    if ! cmp -s "$root/$f" "$src/$f"; then
      fail "$f is out of date with Cargo.lock: run 'Rscript tools/authors.R' and commit it"
      diff "$root/$f" "$src/$f" | head -n 20
    fi
  done
else
  tail -n 30 "$logs/vendor.log"
  fail "tools/vendor.sh"
  finish
fi

# --- 3. R CMD build -----------------------------------------------------------------------------
step "R CMD build"
out="$work/out"
mkdir -p "$out"
# A separate, empty home: a build that writes there (cargo without a private
# CARGO_HOME, for one) is caught below.
home="$work/home"
mkdir -p "$home"
rustup_home=${RUSTUP_HOME:-${HOME:-}/.rustup}
run_isolated() {
  # No network: a new network namespace when we may make one.
  local -a pre=()
  if unshare -n true 2>/dev/null; then
    pre=(unshare -n)
  elif unshare -rn true 2>/dev/null; then
    pre=(unshare -rn)
  fi
  env -u CARGO_HOME HOME="$home" RUSTUP_HOME="$rustup_home" CARGO_NET_OFFLINE=true \
    "${pre[@]}" "$@"
}
if unshare -n true 2>/dev/null || unshare -rn true 2>/dev/null; then
  echo "network: cut off (unshare -n)"
else
  echo "network: CARGO_NET_OFFLINE=true (unshare is not permitted here)"
fi
if ! (cd "$out" && run_isolated R CMD build "$src") >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log"
  fail "R CMD build"
  finish
fi
grep -E '^\* (building|creating vignettes|checking for LF)' "$logs/build.log" || true
tarball=$(find "$out" -maxdepth 1 -name 'safetensors_*.tar.gz' | head -n 1)
if [ -z "$tarball" ]; then
  fail "R CMD build made no tarball"
  finish
fi

size=$(wc -c <"$tarball")
echo "tarball: $(basename "$tarball"), $((size / 1024)) kB"
if [ "$size" -ge 10000000 ]; then
  fail "the tarball is $size bytes; CRAN's limit is 10 MB"
fi
contents=$(tar -tzf "$tarball")
echo "$contents" | grep -qx 'safetensors/src/rust/vendor.tar.xz' ||
  fail "the tarball lacks src/rust/vendor.tar.xz"
echo "$contents" | grep -qx 'safetensors/src/rust/vendor-config.toml' ||
  fail "the tarball lacks src/rust/vendor-config.toml"
leftovers=$(echo "$contents" | grep -E '^safetensors/(src/rust/target/|src/rust/vendor/|src/\.cargo/|src/vendor/|src/Makevars$|src/.*\.(o|so)$|docs/|.*\.Rcheck/)' || true)
if [ -n "$leftovers" ]; then
  fail "the tarball contains build products"
  echo "$leftovers" | head -n 10
fi
echo "$contents" | grep -q '^safetensors/inst/doc/.*\.html$' ||
  fail "the tarball has no built vignettes (inst/doc)"
if [ -n "$(find "$home" -mindepth 1 -print -quit)" ]; then
  fail "R CMD build wrote to HOME: $(cd "$home" && find . -mindepth 1 -maxdepth 3 | head -n 5 | tr '\n' ' ')"
fi

# --- 4. R CMD check --as-cran ----------------------------------------------------------------
step "R CMD check --as-cran --no-manual $(basename "$tarball")"
# --as-cran looks up in CRAN's package database whether a dependency that
# is not installed (torch here) is orphaned; offline, that database is an
# empty one (R_CRAN_WEB), so no dependency counts as orphaned.
mkdir -p "$work/cran/web/packages"
Rscript -e 'saveRDS(data.frame(Package = character(), Maintainer = character()), commandArgs(TRUE)[[1]])' \
  "$work/cran/web/packages/packages.rds"
t0=$(date +%s)
(cd "$out" && run_isolated env \
  R_CRAN_WEB="file://$work/cran" \
  _R_CHECK_CRAN_INCOMING_REMOTE_=false \
  _R_CHECK_SYSTEM_CLOCK_=0 \
  _R_CHECK_FORCE_SUGGESTS_=false \
  R CMD check --as-cran --no-manual "$tarball") >"$logs/check.log" 2>&1
echo "R CMD check took $(( $(date +%s) - t0 )) s"
rcheck="$out/safetensors.Rcheck"
for f in 00check.log 00install.out; do
  [ -f "$rcheck/$f" ] && cp "$rcheck/$f" "$logs/"
done
if [ -d "$rcheck/tests" ]; then
  mkdir -p "$logs/tests"
  find "$rcheck/tests" -maxdepth 1 -name '*.Rout*' -exec cp {} "$logs/tests/" \;
fi
if [ ! -f "$logs/00check.log" ]; then
  tail -n 40 "$logs/check.log"
  fail "R CMD check did not run"
  finish
fi

# Everything that is not OK, with its detail lines.
# (A result can also stand on the line after its "* checking" line.)
awk '/^\* / { head = $0; show = ($0 ~ /\.\.\. *(NOTE|WARNING|ERROR)/); if (show) print; next }
     /^ *(NOTE|WARNING|ERROR)$/ { show = 1; print head; print; next }
     /^Status:/ { print; next }
     show { print }' "$logs/00check.log"

status=$(grep -E '^Status:' "$logs/00check.log" | tail -n 1)
count() { echo "$status" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
errors=$(count ERROR)
warnings=$(count WARNING)
notes=$(count NOTE)
if [ -z "$status" ]; then
  fail "no Status line in 00check.log"
  errors=1
fi

# --- 4b. HTML help pages ------------------------------------------------------------------------
# --no-manual also skips R's validation of the HTML help pages with tidy, so
# it is done here: each problem tidy reports counts as a note.
step "HTML help pages (tidy)"
if command -v tidy >/dev/null 2>&1; then
  html_problems=$(cd "$src" && Rscript -e '
    version <- read.dcf("DESCRIPTION", "Version")[[1]]
    n <- 0
    for (f in list.files("man", "[.]Rd$", full.names = TRUE)) {
      out <- tempfile(fileext = ".html")
      tools::Rd2HTML(f, out, package = c("safetensors", version), stages = c("build", "install", "render"))
      res <- suppressWarnings(system2("tidy", c("-qe", "--drop-empty-elements", "no", out), stdout = TRUE, stderr = TRUE))
      if (length(res)) cat(paste0(basename(f), ": ", res), sep = "\n", file = stderr())
      n <- n + length(res)
    }
    cat(n)' 2>"$logs/tidy.log")
  if [ -s "$logs/tidy.log" ]; then cat "$logs/tidy.log"; fi
  html_problems=${html_problems:-1}
  echo "$html_problems problems in the HTML help pages"
  notes=$((notes + html_problems))
else
  fail "tidy is not installed; the HTML help pages were not validated"
fi

# --- 5. the Rust build in the install log ------------------------------------------------------
step "Rust build (00install.out)"
inst="$logs/00install.out"
if [ -f "$inst" ]; then
  # R >= 4.5's check_rust(): the rustc version before the first "Compiling".
  first_compile=$(grep -n '^ *Compiling ' "$inst" | head -n 1 | cut -d: -f1)
  version_line=$(grep -n -E 'rustc *[0-9]+\.[0-9]' "$inst" | head -n 1 | cut -d: -f1)
  if [ -z "$first_compile" ]; then
    fail "no Rust compilation in the install log"
  elif [ -z "$version_line" ] || [ "$version_line" -gt "$first_compile" ]; then
    fail "no rustc version reported before compiling"
  else
    sed -n "${version_line}p" "$inst"
  fi
  grep -q 'Downloading crates' "$inst" && fail "the installation downloads Rust crates"
  cargo_line=$(grep -E '^[^#]*cargo build ' "$inst" | head -n 1)
  echo "$cargo_line" | grep -q -- '-j 2' || fail "cargo build does not use -j 2"
  echo "$cargo_line" | grep -q -- '--offline' || fail "cargo build is not offline"
  grep -q 'CARGO_HOME="[^"]*/src/\.cargo"' "$inst" || fail "CARGO_HOME is not inside the build tree"
  pkgsrc="$rcheck/00_pkg_src/safetensors/src"
  for d in .cargo vendor rust/target; do
    [ -e "$pkgsrc/$d" ] && fail "the build left src/$d behind"
  done
  echo "rustc reported before compiling; -j 2 --offline; private CARGO_HOME; no build products left"
else
  fail "no 00install.out"
fi
if [ -n "$(find "$home" -mindepth 1 -print -quit)" ]; then
  fail "the check wrote to HOME: $(cd "$home" && find . -mindepth 1 -maxdepth 3 | head -n 5 | tr '\n' ' ')"
fi

if [ "${SAFETENSORS_CHECK_KEEP_TARBALL:-}" = "true" ]; then
  cp "$tarball" "$logs/"
  echo "tarball kept: $logs/$(basename "$tarball")"
fi
finish "$errors" "$warnings" "$notes"
