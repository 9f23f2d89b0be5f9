#!/usr/bin/env bash
# Developer install: builds the package from a private copy of the working
# tree (so several builds can run side by side without sharing src/Makevars,
# object files or cargo's target directory) into a library.
#
#   tools/dev-install.sh [LIBDIR]          # default LIBDIR: /tmp/safetensors-dev/lib
#   DEBUG=false tools/dev-install.sh LIB   # optimised (release) build
#
# Then: R_LIBS=LIBDIR Rscript -e 'testthat::test_dir("tests/testthat",
#         package = "safetensors", load_package = "installed")'
# After changing #[extendr] functions, regenerate the wrappers with
#   Rscript tools/document.R "$BUILD/src/safetensors.so"
# (the script prints BUILD) and then roxygen2::roxygenise(load_code = "source").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lib=${1:-/tmp/safetensors-dev/lib}
mkdir -p "$lib"
lib=$(cd "$lib" && pwd)
build="$lib.build"
mkdir -p "$build"
# Keep the copy's cargo target directory between runs for incremental builds.
rsync -a --delete --exclude .git --exclude 'src/rust/target' --exclude 'src/*.o' \
  --exclude 'src/*.so' --exclude 'src/Makevars' "$root/" "$build/"
echo "BUILD=$build"
DEBUG=${DEBUG:-true} R CMD INSTALL --no-multiarch --library="$lib" "$build"
