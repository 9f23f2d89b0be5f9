#!/usr/bin/env bash
# Bundles the Rust dependency crates for an offline (CRAN) build.
#
# Run at release time, before `R CMD build`, from any directory:
#   bash tools/vendor.sh
# It writes
#   src/rust/vendor.tar.xz      all crates of Cargo.lock (xz -9, reproducible:
#                               sorted names, fixed mtime, numeric owner 0)
#   src/rust/vendor-config.toml cargo source replacement, copied by
#                               src/Makevars to src/.cargo/config.toml
#   inst/AUTHORS, LICENSE.note  authors and licences of the crates
#                               (tools/authors.R)
# When vendor.tar.xz exists, configure builds with `--offline` and a private
# CARGO_HOME. The tarball is NOT committed (.gitignore): delete it after the
# release (`rm src/rust/vendor.tar.xz`) to go back to normal developer builds.
#
# Environment: SAFETENSORS_VENDOR_KEEP_DIR=1 keeps src/rust/vendor/ for
# inspection; SAFETENSORS_VENDOR_NO_PRUNE=1 bundles the dev-dependencies in
# full (then `cargo test --offline` works from the bundle, but it is ~5 MB
# instead of ~1.5 MB).

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/src/rust"

if ! command -v cargo >/dev/null 2>&1 && [ -d "$HOME/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

msrv=$(sed -n 's/^Config\/safetensors\/MSRV:[[:space:]]*//p' "$root/DESCRIPTION" | tr -d '[:space:]')

rm -rf vendor vendor.tar.xz
# --locked: vendor exactly what Cargo.lock pins (it is the tested set).
# `cargo vendor` prints the source-replacement config on stdout; its
# directory ("vendor") is resolved relative to src/, where the Makevars
# unpacks the tarball.
cargo vendor --locked --versioned-dirs vendor > vendor-config.toml.new
# Keep the config minimal and stable (no comments that name this machine).
grep -v '^#' vendor-config.toml.new | sed '/^$/N;/^\n$/D' > vendor-config.toml
rm -f vendor-config.toml.new

# Prebuilt Windows import libraries (windows_x86_64_gnu, windows_i686_msvc,
# ...) are several MB each and unused on the platforms this package builds
# on. Empty their lib/ folders and drop them from the checksum list, which
# cargo only verifies for files it lists.
shopt -s nullglob
for d in vendor/windows_*; do
  if [ -d "$d/lib" ]; then
    rm -rf "${d:?}/lib"/*
    Rscript -e '
      f <- commandArgs(TRUE)[[1]]
      x <- jsonlite::fromJSON(f, simplifyVector = FALSE)
      x$files <- x$files[!startsWith(names(x$files), "lib/")]
      if (length(x$files) == 0L) x$files <- structure(list(), names = character())
      writeLines(jsonlite::toJSON(x, auto_unbox = TRUE, null = "null"), f)
    ' "$d/.cargo-checksum.json"
  fi
done
shopt -u nullglob

# Dev-dependencies and other platforms' crates: keep only what cargo needs to
# resolve (Cargo.toml, licences); see tools/vendor-prune.R.
if [ "${SAFETENSORS_VENDOR_NO_PRUNE:-0}" != "1" ]; then
  Rscript "$root/tools/vendor-prune.R" vendor
fi

# An older cargo reads every vendored Cargo.toml; one that uses a newer
# edition than the MSRV's cargo understands breaks the offline build.
edition2024=$(grep -l '^edition *= *"2024"' vendor/*/Cargo.toml || true)
if [ -n "$edition2024" ]; then
  msrv_minor=$(echo "$msrv" | cut -d. -f2)
  if [ "${msrv_minor:-0}" -lt 85 ]; then
    echo "ERROR: these vendored crates use edition 2024, which cargo < 1.85 cannot parse" >&2
    echo "(MSRV is $msrv). Pin older versions in Cargo.lock (cargo update -p NAME --precise V):" >&2
    echo "$edition2024" | sed 's|^vendor/||; s|/Cargo.toml$||; s|^|  |' >&2
    exit 1
  fi
fi

# Reproducible tarball: same bytes for the same Cargo.lock.
LC_ALL=C tar --sort=name --mtime='1970-01-01 00:00:00Z' \
  --owner=0 --group=0 --numeric-owner --no-xattrs --format=gnu \
  -cf - vendor | xz -9 -T1 -c > vendor.tar.xz

n_crates=$(find vendor -mindepth 1 -maxdepth 1 -type d | wc -l)
unpacked=$(du -sh vendor | cut -f1)
if [ "${SAFETENSORS_VENDOR_KEEP_DIR:-0}" != "1" ]; then
  rm -rf vendor
fi

# Authors and licences of the bundled crates.
(cd "$root" && Rscript tools/authors.R)

echo "Vendored $n_crates crates ($unpacked unpacked) into src/rust/vendor.tar.xz ($(du -h vendor.tar.xz | cut -f1))"
echo "sha256: $(sha256sum vendor.tar.xz | cut -d' ' -f1)"
