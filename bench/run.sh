#!/usr/bin/env bash
# The benchmark suite, in one command:
#
#   bash bench/run.sh
#
# 1. a Python venv in bench/.venv with safetensors==0.8.0 and numpy;
# 2. a release build of this package in a private library (or BENCH_LIB);
# 3. CRAN safetensors 0.2.1 in its own library, if its sources are given;
#    an older build of this package as a baseline, if BENCH_BASE_LIB is set;
# 4. the data files (about 4.3 GB) in BENCH_DATA or a temporary directory;
# 5. every case REPS times, each run a fresh process (bench/driver.py);
# 6. the tables written into bench/README.md (bench/report.py).
#
# Environment (all optional):
#   BENCH_LIB=DIR       an R library with this package already installed
#                       (release build!); default: build one in BENCH_WORK
#   CRAN_SAFETENSORS=X  CRAN safetensors 0.2.1: its source directory or
#                       tarball (installed into BENCH_WORK/cran-lib), or a
#                       library it is installed in. Without it, the CRAN
#                       column stays empty.
#   BENCH_BASE_LIB=DIR  A/B mode: an R library with an older (release!) build
#                       of this package, measured as "base" with every case
#                       and command "ours" runs, interleaved with them; the
#                       README gets a table "before/after". Build one with
#                         git worktree add /tmp/before COMMIT
#                         DEBUG=false bash /tmp/before/tools/dev-install.sh DIR
#   BENCH_BASE_LABEL=X  what the baseline is (e.g. its commit id), recorded
#                       in results.json and the README
#   BENCH_DATA=DIR      where the data files go (kept, and reused if there);
#                       default: a temporary directory, removed at the end
#   BENCH_WORK=DIR      builds and libraries; default /tmp/safetensors-bench
#   REPS=N              runs per cell (default 5)
#   ONLY=case,case      run only these cases (ids as in the table)
#   SCALE=S             shrink the 1 GiB files (e.g. 0.1) for a trial run
#   TORCH_PY=PY         a Python with torch and safetensors (what R torch's
#                       env.sh sets): with it, and R torch installed, the
#                       torch cases run too (issue 22; data by gen-torch.R,
#                       about 7 GB more); without, they are skipped
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
work=${BENCH_WORK:-/tmp/safetensors-bench}
reps=${REPS:-5}
scale=${SCALE:-1}
mkdir -p "$work"

# 1. Python
venv="$here/.venv"
if ! "$venv/bin/python" -c 'import safetensors, numpy' 2>/dev/null; then
  echo "== creating $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "safetensors==0.8.0" numpy
fi
py="$venv/bin/python"

# 2. this package, release build
if [ -n "${BENCH_LIB:-}" ]; then
  lib=$(cd "$BENCH_LIB" && pwd)
else
  lib="$work/lib"
  echo "== installing this package (release build) into $lib"
  DEBUG=false "$root/tools/dev-install.sh" "$lib" >"$work/install.log" 2>&1 ||
    { tail -n 40 "$work/install.log"; exit 1; }
fi
R_LIBS=$lib Rscript -e 'stopifnot(exists("safe_open", asNamespace("safetensors")))' >/dev/null

# 3. CRAN safetensors 0.2.1
cran_lib=""
if [ -n "${CRAN_SAFETENSORS:-}" ]; then
  if [ -f "$CRAN_SAFETENSORS/safetensors/DESCRIPTION" ]; then
    cran_lib=$CRAN_SAFETENSORS
  else
    cran_lib="$work/cran-lib"
    mkdir -p "$cran_lib"
    echo "== installing CRAN safetensors from $CRAN_SAFETENSORS into $cran_lib"
    R CMD INSTALL --no-test-load --library="$cran_lib" "$CRAN_SAFETENSORS" >"$work/cran-install.log" 2>&1 ||
      { tail -n 20 "$work/cran-install.log"; exit 1; }
  fi
  R_LIBS=$cran_lib Rscript -e 'stopifnot(!exists("safe_open", asNamespace("safetensors")))' >/dev/null
fi

# 3b. the baseline for an A/B comparison: an older build of this package
base_lib=""
if [ -n "${BENCH_BASE_LIB:-}" ]; then
  base_lib=$(cd "$BENCH_BASE_LIB" && pwd)
  [ -f "$base_lib/safetensors/DESCRIPTION" ] ||
    { echo "BENCH_BASE_LIB=$BENCH_BASE_LIB: no safetensors installed there" >&2; exit 1; }
  R_LIBS=$base_lib Rscript -e 'stopifnot(exists("safe_open", asNamespace("safetensors")))' >/dev/null ||
    { echo "BENCH_BASE_LIB=$BENCH_BASE_LIB: not a build of this package (CRAN 0.2.1?)" >&2; exit 1; }
  echo "== baseline (\"base\"): $base_lib${BENCH_BASE_LABEL:+ ($BENCH_BASE_LABEL)}"
fi

# 4. data
if [ -n "${BENCH_DATA:-}" ]; then
  data=$BENCH_DATA
else
  data=$(mktemp -d "${TMPDIR:-/tmp}/safetensors-bench-data.XXXXXX")
  trap 'rm -rf "$data"' EXIT
fi
echo "== data files in $data"
"$py" "$here/gen.py" "$data" --scale "$scale"
save_rows=$(awk -v s="$scale" 'BEGIN { r = int(4096 * s); print (r < 1 ? 1 : r) }')

# 5. measurements
echo "== running (REPS=$reps)"
results="$here/results.json"
(cd "$here" && "$py" driver.py --data "$data" --lib "$lib" --cran-lib "$cran_lib" \
  --base-lib "$base_lib" --base-label "${BENCH_BASE_LABEL:-}" \
  --reps "$reps" --out "$results" --save-rows "$save_rows" --torch-scale "$scale" ${ONLY:+--only "$ONLY"})

# 6. table
(cd "$here" && "$py" report.py "$results" "$here/README.md")
echo "== wrote $here/README.md"
