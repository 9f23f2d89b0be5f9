#!/usr/bin/env bash
# Installs what building and testing safetensors needs, on Debian/Ubuntu.
# Idempotent: on a machine that has everything it changes nothing and does no
# apt work. Needs root (or sudo) only when something is missing.
#
#   R and the R packages     Debian r-base-dev and r-cran-* packages (and
#                            rsync, used by tools/dev-install.sh)
#   Rust (cargo, rustc)      must already be installed (rustup or apt);
#                            this script only puts ~/.cargo/bin on PATH
#   Python safetensors 0.8.0 + numpy (+ ml_dtypes for BF16/F8/F4), for the
#                            interop tests, and huggingface_hub, for the
#                            tests of the Hub cache both ways (optional;
#                            skipped with SAFETENSORS_NO_PYTHON=1; when pip
#                            fails those tests skip)
#
# Source it (`. tools/install-deps.sh`) to keep the PATH change, or run it.

# Not `set -e`: this file may be sourced; failures are handled explicitly.
_st_deps_main() {
  local debs="r-base-dev r-cran-testthat r-cran-cli r-cran-r6 r-cran-rlang
    r-cran-roxygen2 r-cran-knitr r-cran-rmarkdown r-cran-withr r-cran-callr
    r-cran-processx r-cran-jsonlite r-cran-bench r-cran-codetools r-cran-curl
    r-cran-bit64
    rsync"   # rsync: tools/dev-install.sh; not on a new machine
  local missing="" p status

  # --- Debian packages ---------------------------------------------------------
  if command -v dpkg-query >/dev/null 2>&1; then
    for p in $debs; do
      status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
      case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
      esac
    done
  elif ! command -v R >/dev/null 2>&1; then
    echo "install-deps: R is missing and this is not a Debian system; install R >= 4.2 and the packages cli, R6, rlang, testthat, withr, callr, processx, jsonlite, knitr, rmarkdown, bench, bit64, roxygen2, curl by hand." >&2
    return 1
  fi
  if ! command -v R >/dev/null 2>&1 || ! command -v Rscript >/dev/null 2>&1; then
    case " $missing " in *" r-base-dev "*) ;; *) missing="$missing r-base-dev" ;; esac
  fi

  if [ -n "$missing" ]; then
    local sudo=""
    if [ "$(id -u)" != "0" ]; then
      if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "install-deps: need root to install:$missing" >&2
        return 1
      fi
    fi
    echo "install-deps: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    $sudo apt-get update -qq &&
      $sudo apt-get install -y -qq --no-install-recommends $missing </dev/null || {
        echo "install-deps: apt-get install failed" >&2
        return 1
      }
  else
    echo "install-deps: R and the Debian packages are installed."
  fi

  # --- Rust ----------------------------------------------------------------------
  if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-}/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
    echo "install-deps: cargo/rustc not found. Install Rust with rustup (https://rustup.rs) or 'apt-get install cargo rustc' (needs rustc >= the MSRV in DESCRIPTION)." >&2
    return 1
  fi
  echo "install-deps: $(cargo --version), $(rustc --version)"

  # --- Python oracle for the interop tests ---------------------------------------
  if [ "${SAFETENSORS_NO_PYTHON:-0}" = "1" ]; then
    echo "install-deps: SAFETENSORS_NO_PYTHON=1, not installing Python safetensors."
  elif ! command -v python3 >/dev/null 2>&1; then
    echo "install-deps: WARNING: no python3; the Python interop tests will skip." >&2
  elif python3 -c 'import sys, numpy, safetensors; sys.exit(0 if safetensors.__version__ == "0.8.0" else 1)' >/dev/null 2>&1; then
    echo "install-deps: Python safetensors 0.8.0 and numpy are installed."
  else
    echo "install-deps: installing Python safetensors==0.8.0 and numpy with pip"
    if ! python3 -m pip install --quiet --disable-pip-version-check \
        "safetensors==0.8.0" numpy </dev/null; then
      echo "install-deps: WARNING: pip install failed; the Python interop tests will skip." >&2
    fi
  fi
  if [ "${SAFETENSORS_NO_PYTHON:-0}" != "1" ] && command -v python3 >/dev/null 2>&1 &&
     ! python3 -c 'import ml_dtypes' >/dev/null 2>&1; then
    echo "install-deps: installing Python ml_dtypes with pip (BF16, F8 and F4 interop tests)"
    if ! python3 -m pip install --quiet --disable-pip-version-check ml_dtypes </dev/null; then
      echo "install-deps: WARNING: pip install ml_dtypes failed; the BF16/F8/F4 interop tests will skip." >&2
    fi
  fi
  if [ "${SAFETENSORS_NO_PYTHON:-0}" != "1" ] && command -v python3 >/dev/null 2>&1 &&
     ! python3 -c 'import huggingface_hub, filelock' >/dev/null 2>&1; then
    echo "install-deps: installing Python huggingface_hub with pip (tests of the Hub cache with Python)"
    if ! python3 -m pip install --quiet --disable-pip-version-check huggingface_hub </dev/null; then
      echo "install-deps: WARNING: pip install huggingface_hub failed; the tests of the Hub cache with Python will skip." >&2
    fi
  fi
  return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  _st_deps_main "$@"
  exit $?
else
  _st_deps_main "$@"
fi
