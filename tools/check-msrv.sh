#!/usr/bin/env bash
# Checks that every place that states the minimum supported Rust version
# states the one in DESCRIPTION (`Config/safetensors/MSRV`, the single
# source of truth):
#
#   bash tools/check-msrv.sh          # prints the MSRV, or the mismatches
#
# - `rust-version` in src/rust/Cargo.toml and src/rust/core/Cargo.toml
#   (cargo and clippy's MSRV-aware lints read it);
# - `SystemRequirements` in DESCRIPTION ("rustc >= X");
# - README.md ("rustc X or later");
# - configure, which must read the MSRV from DESCRIPTION rather than state
#   one of its own.
#
# A version may be written with or without a trailing ".0" (1.81 = 1.81.0).
# Exits non-zero on any mismatch. Run by tools/test.sh.

set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

msrv=$(sed -n 's/^Config\/safetensors\/MSRV:[[:space:]]*//p' DESCRIPTION | tr -d '[:space:]')
if ! printf '%s' "$msrv" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$'; then
  echo "DESCRIPTION: Config/safetensors/MSRV must be a version a.b.c, not '$msrv'"
  exit 1
fi
short=${msrv%.0}
# The version as a regular expression: dots literal, ".0" optional.
re=$(printf '%s' "$short" | sed 's/\./\\./g')
if [ "$short" != "$msrv" ]; then
  re="$re(\\.0)?"
fi

bad=0
expect() { # file, what, extended regexp that must match a line
  if ! grep -Eq "$3" "$1"; then
    echo "$1: $2 is not $msrv (Config/safetensors/MSRV in DESCRIPTION)"
    bad=1
  fi
}
expect src/rust/Cargo.toml "rust-version" "^rust-version = \"$re\"$"
expect src/rust/core/Cargo.toml "rust-version" "^rust-version = \"$re\"$"
expect DESCRIPTION "SystemRequirements (rustc >= X)" "^SystemRequirements:.*rustc >= $re([^0-9.]|$)"
expect README.md "the rustc version in Installation (rustc X or later)" "rustc $re or later"
expect configure "the MSRV (read from DESCRIPTION)" "Config\\\\/safetensors\\\\/MSRV"

# No other version may be stated beside the one expected.
others=$(grep -Eho '^rust-version = "[^"]*"' src/rust/Cargo.toml src/rust/core/Cargo.toml | grep -Ev "\"$re\"")
if [ -n "$others" ]; then
  echo "another rust-version is stated: $others"
  bad=1
fi

if [ "$bad" -ne 0 ]; then
  exit 1
fi
echo "MSRV $msrv stated alike in DESCRIPTION, both Cargo.toml files, README.md and configure"
