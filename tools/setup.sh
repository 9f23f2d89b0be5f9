#!/usr/bin/env bash
# One command for newcomers: installs the dependencies, builds and installs
# the package into the default R library, and runs a small example.
#
#   bash tools/setup.sh
#
# Environment: DEBUG=true for a faster debug build (see configure).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# shellcheck source=tools/install-deps.sh
. tools/install-deps.sh

echo "== R CMD INSTALL . (clean build)"
start=$(date +%s)
R CMD INSTALL --preclean --no-multiarch .
echo "== installed in $(( $(date +%s) - start )) s"

echo "== example"
Rscript -e 'library(safetensors); x <- safe_load_file(system.file("extdata", "example.safetensors", package = "safetensors")); str(x)'
