#!/usr/bin/env bash
# Shows on Linux, without Windows or a Mac, that the package's Rust code
# builds for Windows and macOS and that its Windows file access works:
#
#   bash tools/windows-check.sh [--core-only] [a] [b] [c]
#
# (a) Windows, run: the core crate's tests (lib tests and
#     tests/differential.rs) cross-compiled for x86_64-pc-windows-gnu and run
#     under Wine, headless (WINEDEBUG=-all, a private WINEPREFIX in the build
#     directory, no X server). Wine 8 (Debian 12) lacks bcryptprimitives.dll,
#     which Rust's standard library imports; a test-only stand-in is built
#     from tools/windows/bcryptprimitives.c and put next to the executables.
# (b) Other targets, compile: `cargo check` of the core crate (with its
#     tests) for both macOS targets, and of the binding crate (`-p
#     safetensors-r --lib`) for x86_64-pc-windows-gnu, aarch64-apple-darwin
#     and x86_64-apple-darwin. extendr-ffi's build script runs on this
#     machine and only reads R's version from Rversion.h; the script writes
#     one per R version checked (SAFETENSORS_WINCHECK_R_VERSIONS) and points
#     R_HOME and R_INCLUDE_DIR at it, so no R is needed.
# (c) Windows build files: configure.win writes src/Makevars.win with the
#     right target, library path, system libraries and CRAN flags (checked by
#     evaluating it with make), its clean-up removes what the build leaves,
#     cleanup.win and the ignore files know Makevars.win, DESCRIPTION has no
#     OS_type; the system libraries rustc lists for a Windows static library
#     of the core are all linked (PKG_LIBS or the toolchain's defaults); and
#     a DLL linked with PKG_LIBS, the way R links the package, is loaded and
#     run under Wine (tools/windows/linkcheck).
#
# --core-only skips the binding crate in (b) (it needs the R sources to be
# in step with the core). Naming steps (a, b, c) runs only those.
#
# Installs what it needs when run as root: rustup targets, Debian's
# gcc-mingw-w64-x86-64 and wine/wine64 (apt-get update only when a package
# is missing). Idempotent; later runs reuse the build directory.
#
# Environment:
#   SAFETENSORS_WINCHECK_DIR   build directory (default src/rust/target/windows-check)
#   SAFETENSORS_WINCHECK_R_VERSIONS   R versions for (b) (default "4.2.0 4.5.0":
#                              the oldest R the package supports, and R >= 4.5,
#                              where extendr switches to newer R API calls)
#
# Prints a PASS/FAIL line per check and ends with "windows-check: N passed,
# N failed"; exits 1 if any check failed.

set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
exec </dev/null

core_only=no
steps=""
for arg in "$@"; do
  case "$arg" in
    --core-only) core_only=yes ;;
    a|b|c) steps="$steps $arg" ;;
    -h|--help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

steps=${steps:- a b c}
want() { case " $steps " in *" $1 "*) return 0 ;; esac; return 1; }
rust="$root/src/rust"
build=${SAFETENSORS_WINCHECK_DIR:-$rust/target/windows-check}
r_versions=${SAFETENSORS_WINCHECK_R_VERSIONS:-4.2.0 4.5.0}
win=x86_64-pc-windows-gnu
mac_targets="aarch64-apple-darwin x86_64-apple-darwin"
mkdir -p "$build"
build=$(cd "$build" && pwd)

export CARGO_TERM_COLOR=never
if [ -d "${HOME:-/nonexistent}/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi

t_start=$(date +%s)
n_pass=0
n_fail=0
summary=""
record() { # record PASS|FAIL TEXT
  if [ "$1" = PASS ]; then n_pass=$((n_pass + 1)); else n_fail=$((n_fail + 1)); fi
  summary="$summary$1  $2"$'\n'
  printf '%s  %s\n' "$1" "$2"
}
step() { printf '\n==== %s ====\n' "$*"; }
since() { echo "$(($(date +%s) - $1)) s"; }
# Last lines of a log, indented, for a failure.
show() { tail -n "${2:-20}" "$1" | sed 's/^/    | /'; }

# --- setup --------------------------------------------------------------------
step "setup"
setup_ok=yes
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found (install Rust with rustup: https://rustup.rs)" >&2
  setup_ok=no
fi
echo "Using $(cargo --version 2>/dev/null), $(rustc --version 2>/dev/null)"

if command -v rustup >/dev/null 2>&1; then
  have=$(rustup target list --installed 2>/dev/null)
  want=""
  for t in $win $mac_targets; do
    grep -qx "$t" <<<"$have" || want="$want $t"
  done
  if [ -n "$want" ]; then
    echo "rustup target add$want"
    # shellcheck disable=SC2086
    rustup target add $want || setup_ok=no
  fi
else
  echo "no rustup: the targets $win $mac_targets must be installed by hand" >&2
fi

# Wine's 64-bit loader: Debian keeps it out of PATH.
find_wine() {
  local w p
  for w in /usr/lib/wine/wine64 wine64 wine; do
    p=$(command -v "$w" 2>/dev/null) || continue
    if [ -f "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
  done
  return 1
}
packages=""
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || packages="$packages gcc-mingw-w64-x86-64"
find_wine >/dev/null || packages="$packages wine wine64"
if [ -n "$packages" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "apt-get install$packages"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages; } \
      >"$build/apt.log" 2>&1 || { show "$build/apt.log"; setup_ok=no; }
  else
    echo "missing:$packages (install them, or run this script as root on Debian)" >&2
    setup_ok=no
  fi
fi
wine=$(find_wine) || wine=""
wineserver=""
if [ -n "$wine" ]; then
  for s in "$(dirname "$wine")/wineserver" "$(command -v wineserver 2>/dev/null)"; do
    if [ -n "$s" ] && [ -x "$s" ]; then wineserver=$s; break; fi
  done
  echo "Using $("$wine" --version 2>/dev/null) ($wine)"
fi
if [ "$setup_ok" = yes ] && [ -n "$wine" ] && command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
  record PASS "setup: Rust targets, MinGW-w64 and Wine present"
else
  record FAIL "setup: see above"
fi

# Headless Wine with a private prefix; no Mono or Gecko prompts. DISPLAY is
# dropped so that a desktop session makes no difference.
export WINEPREFIX="$build/wineprefix" WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY WAYLAND_DISPLAY
run_wine() { # run_wine DIR EXE [ARGS...]: runs EXE with DIR as working directory
  local dir=$1
  shift
  (cd "$dir" && timeout 1800 nice "$wine" "$@")
}
wine_ready=no
if [ -n "$wine" ]; then
  if [ ! -f "$WINEPREFIX/system.reg" ]; then
    echo "Creating the Wine prefix $WINEPREFIX"
    "$wine" wineboot --init >"$build/wineboot.log" 2>&1
    [ -n "$wineserver" ] && "$wineserver" -w
  fi
  [ -f "$WINEPREFIX/system.reg" ] && wine_ready=yes
fi

# The stand-in bcryptprimitives.dll (tools/windows/bcryptprimitives.c).
dll_ok=no
if command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 &&
   x86_64-w64-mingw32-gcc -shared -O2 -Wall -Wextra -Werror -o "$build/bcryptprimitives.dll" \
     tools/windows/bcryptprimitives.c tools/windows/bcryptprimitives.def -ladvapi32 >"$build/dll.log" 2>&1; then
  dll_ok=yes
else
  show "$build/dll.log"
fi

# --- (a) core tests under Wine ---------------------------------------------------
if want a; then
  step "(a) core tests for $win, run under Wine"
  t0=$(date +%s)
  if (cd "$rust" && nice cargo test -p safetensors-core --target $win --no-run -j 2 --message-format=json) \
       >"$build/test-build.json" 2>"$build/test-build.log"; then
    exes=$(grep -o '"executable":"[^"]*"' "$build/test-build.json" | sed 's/^"executable":"//; s/"$//' | sort -u)
    echo "built in $(since "$t0"):"
    sed 's/^/  /' <<<"$exes"
    record PASS "(a) core tests cross-compiled for $win ($(wc -l <<<"$exes") executables)"
  else
    exes=""
    show "$build/test-build.log"
    record FAIL "(a) core tests don't compile for $win"
  fi
  if [ -n "$exes" ] && [ "$wine_ready" = yes ] && [ "$dll_ok" = yes ]; then
    mkdir -p "$build/run"
    while IFS= read -r exe; do
      [ -n "$exe" ] || continue
      name=$(basename "$exe" .exe)
      name=${name%-*}
      cp "$build/bcryptprimitives.dll" "$(dirname "$exe")/"
      t0=$(date +%s)
      # The working directory is on Wine's Z: drive (the Unix root), where the
      # differential test finds the fixtures by their Unix path.
      run_wine "$build/run" "$exe" >"$build/wine-$name.log" 2>&1
      rc=$?
      counts=$(grep -E '^test result:' "$build/wine-$name.log" |
        sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
        awk '{p += $1; f += $2; i += $3} END {printf "%d %d %d", p, f, i}')
      read -r p f i <<<"$counts"
      text="$p passed, $f failed, $i ignored, in $(since "$t0")"
      if [ "$name" = safetensors_core ]; then
        nwin=$(grep -cE '^test io::sys::tests::.* ok$' "$build/wine-$name.log")
        text="$text; $nwin of them Windows-only (io::sys::tests)"
      fi
      if [ "$rc" = 0 ] && [ "$f" = 0 ] && [ "$p" -gt 0 ] && { [ "$name" != safetensors_core ] || [ "$nwin" -gt 0 ]; }; then
        record PASS "(a) $name under Wine: $text"
      else
        grep -E '^test .* FAILED$' "$build/wine-$name.log" | sed 's/^/    /'
        show "$build/wine-$name.log" 30
        record FAIL "(a) $name under Wine: $text (exit $rc; log $build/wine-$name.log)"
      fi
    done <<<"$exes"
    [ -n "$wineserver" ] && "$wineserver" -w
  elif [ -n "$exes" ]; then
    record FAIL "(a) tests not run: no Wine prefix or no bcryptprimitives.dll (see setup)"
  fi
fi

# --- (b) cargo check for the other targets ------------------------------------
if want b; then
  step "(b) cargo check for $win and macOS"
  # A fake R installation per version: extendr-ffi's build script takes R_HOME
  # as given (it only adds R_HOME/lib to the link search path if it exists) and
  # reads R_MAJOR and R_MINOR from R_INCLUDE_DIR/Rversion.h.
  fake_r() { # fake_r VERSION -> prints the R_HOME
    local v=$1 home="$build/fake-R-$1"
    mkdir -p "$home/include"
    printf '#define R_MAJOR  "%s"\n#define R_MINOR  "%s"\n' "${v%%.*}" "${v#*.}" >"$home/include/Rversion.h"
    echo "$home"
  }
  check() { # check LABEL LOG CARGO-ARGS...: cargo check, recorded
    local label=$1 log=$2 t0
    shift 2
    t0=$(date +%s)
    if (cd "$rust" && nice cargo check -j 2 --message-format short "$@") >"$log" 2>&1; then
      record PASS "(b) $label ($(since "$t0"))"
    else
      local why
      if grep -q "could not compile \`safetensors-r\`" "$log"; then
        why="the binding crate's own sources: $(grep -c ': error' "$log") errors, first: $(grep -m1 ': error' "$log" | cut -c1-150)"
      else
        why="$(grep -m1 -E '^error|: error' "$log" | cut -c1-200)"
      fi
      record FAIL "(b) $label: $why (log $log)"
    fi
  }
  for t in $mac_targets; do
    check "core crate and its tests for $t" "$build/check-core-$t.log" \
      -p safetensors-core --all-targets --target "$t" --target-dir "$build/check-core"
  done
  if [ "$core_only" = no ]; then
    for v in $r_versions; do
      home=$(fake_r "$v")
      for t in $win $mac_targets; do
        R_HOME="$home" R_INCLUDE_DIR="$home/include" \
          check "binding crate for $t, R $v" "$build/check-r$v-$t.log" \
          -p safetensors-r --lib --target "$t" --target-dir "$build/check-r$v"
      done
    done
  else
    echo "(--core-only: the binding crate is not checked)"
  fi
fi

# --- (c) the Windows build files ----------------------------------------------
if want c; then
  step "(c) Windows build files"
  pkg="$build/pkg"
  rm -rf "$pkg"
  mkdir -p "$pkg/src/rust"
  cp configure configure.win cleanup cleanup.win DESCRIPTION "$pkg/"
  cp src/Makevars.in src/Makevars.win.in "$pkg/src/"
  cat >"$build/print.mk" <<'EOF'
print-%:
	@echo '$($*)'
EOF
  mkvar() { # mkvar VAR: the value of VAR in $pkg/src/Makevars.win, as make sees it
    make -s -C "$pkg/src" -f Makevars.win -f "$build/print.mk" "print-$1" SHLIB=safetensors.dll
  }
  problems=""
  problem() { problems="$problems"$'\n'"    $*"; }
  expect_eq() { [ "$2" = "$3" ] || problem "$1: '$2', expected '$3'"; }
  expect_has() { case " $2 " in *" $3 "*) ;; *) problem "$1 lacks '$3': '$2'" ;; esac; }

  lib_name=$(sed -n '/^\[lib\]/,/^\[/s/^name *= *"\(.*\)"/\1/p' "$rust/Cargo.toml")
  [ -n "$lib_name" ] || problem "no [lib] name in src/rust/Cargo.toml"
  for mode in release debug vendored; do
    rm -f "$pkg/src/Makevars" "$pkg/src/Makevars.win" "$pkg/src/rust/vendor.tar.xz"
    [ "$mode" = vendored ] && touch "$pkg/src/rust/vendor.tar.xz"
    if [ "$mode" = debug ]; then
      (cd "$pkg" && DEBUG=true sh ./configure.win) >"$build/configure-win-$mode.log" 2>&1
    else
      (cd "$pkg" && env -u DEBUG sh ./configure.win) >"$build/configure-win-$mode.log" 2>&1
    fi || { problem "configure.win ($mode) failed: $(tail -n 3 "$build/configure-win-$mode.log" | tr '\n' ' ')"; continue; }
    [ -f "$pkg/src/Makevars.win" ] || { problem "configure.win ($mode) wrote no src/Makevars.win"; continue; }
    [ -f "$pkg/src/Makevars" ] && problem "configure.win ($mode) also wrote src/Makevars"
    grep -q 'Using rustc [0-9]' "$build/configure-win-$mode.log" || problem "configure.win ($mode) does not report the rustc version"
    left=$(grep -v '^#' "$pkg/src/Makevars.win" | grep -o '@[A-Z_]*@' | sort -u | tr '\n' ' ')
    [ -z "$left" ] || problem "Makevars.win ($mode) has unfilled placeholders: $left"
    profile=release
    [ "$mode" = debug ] && profile=debug
    expect_eq "TARGET ($mode)" "$(mkvar TARGET)" "$win"
    expect_eq "STATLIB ($mode)" "$(mkvar STATLIB)" "./rust/target/$win/$profile/lib$lib_name.a"
    libs=$(mkvar PKG_LIBS)
    for l in "-L./rust/target/$win/$profile" "-l$lib_name" -lws2_32 -ladvapi32 -luserenv -lbcrypt -lntdll; do
      expect_has "PKG_LIBS ($mode)" "$libs" "$l"
    done
    flags=$(mkvar CARGO_FLAGS)
    expect_has "CARGO_FLAGS ($mode)" "$flags" "-j 2"
    if [ "$mode" = vendored ]; then
      expect_has "CARGO_FLAGS ($mode)" "$flags" "--offline"
    fi
    # The commands make would run to build the library.
    cmds=$(make -n -C "$pkg/src" -f Makevars.win "./rust/target/$win/$profile/lib$lib_name.a" SHLIB=safetensors.dll 2>&1)
    cargo_line=$(grep 'cargo build' <<<"$cmds")
    expect_has "cargo build ($mode)" "$cargo_line" "--target=$win"
    expect_has "cargo build ($mode)" "$cargo_line" "--lib"
    [ "$mode" = debug ] || expect_has "cargo build ($mode)" "$cargo_line" "--release"
    grep -q 'touch ./rust/target/libgcc_mock/libgcc_eh.a' <<<"$cmds" || problem "no empty libgcc_eh.a ($mode)"
    grep -q 'LIBRARY_PATH=.*libgcc_mock' <<<"$cmds" || problem "libgcc_mock not on LIBRARY_PATH ($mode)"
    if [ "$mode" = vendored ]; then
      grep -q 'export CARGO_HOME="[^"]*/\.cargo"' <<<"$cmds" || problem "no private CARGO_HOME (vendored)"
      grep -q 'tar -xf rust/vendor.tar.xz' <<<"$cmds" || problem "vendor.tar.xz not unpacked (vendored)"
    fi
    # Clean-up after linking, on a made-up build tree.
    t="$pkg/src/rust/target"
    rm -rf "$t" "$pkg/src/.cargo" "$pkg/src/vendor"
    mkdir -p "$t/$win/$profile" "$t/$profile/build" "$t/libgcc_mock" "$pkg/src/.cargo" "$pkg/src/vendor"
    touch "$t/$win/$profile/lib$lib_name.a" "$t/libgcc_mock/libgcc_eh.a" "$t/CACHEDIR.TAG" "$t/.rustc_info.json" "$pkg/src/safetensors.dll"
    # -o: take the DLL and the library as built (rust_clean depends on them).
    make -s -C "$pkg/src" -f Makevars.win -o safetensors.dll -o "./rust/target/$win/$profile/lib$lib_name.a" \
      rust_clean SHLIB=safetensors.dll >"$build/rust-clean-$mode.log" 2>&1 ||
      problem "rust_clean ($mode) failed: $(tail -n 3 "$build/rust-clean-$mode.log" | tr '\n' ' ')"
    [ -e "$pkg/src/.cargo" ] || [ -e "$pkg/src/vendor" ] && problem "rust_clean ($mode) left .cargo or vendor"
    if [ "$mode" = debug ]; then
      [ -f "$t/$win/debug/lib$lib_name.a" ] || problem "rust_clean (debug) removed the debug build"
    else
      [ -e "$t" ] && problem "rust_clean ($mode) left $(cd "$pkg/src" && find rust/target | tr '\n' ' ')"
    fi
  done
  # cleanup.win removes both generated files; configure (Linux) writes no Makevars.win.
  (cd "$pkg" && sh ./configure) >"$build/configure-linux.log" 2>&1 || problem "configure (Linux) failed"
  [ -f "$pkg/src/Makevars" ] || problem "configure (Linux) wrote no src/Makevars"
  (cd "$pkg" && sh ./configure.win) >/dev/null 2>&1
  (cd "$pkg" && sh ./cleanup.win) || problem "cleanup.win failed"
  [ -e "$pkg/src/Makevars" ] || [ -e "$pkg/src/Makevars.win" ] && problem "cleanup.win left src/Makevars or src/Makevars.win"
  grep -qx 'src/Makevars.win' .gitignore || problem ".gitignore lacks src/Makevars.win"
  grep -qxF '^src/Makevars\.win$' .Rbuildignore || problem ".Rbuildignore lacks ^src/Makevars\\.win\$"
  grep -q '^OS_type:' DESCRIPTION && problem "DESCRIPTION restricts OS_type"
  grep -qx 'R_init_safetensors' src/safetensors-win.def || problem "src/safetensors-win.def does not export R_init_safetensors"
  grep -q '^void R_init_safetensors(' src/entrypoint.c || problem "src/entrypoint.c does not define R_init_safetensors"
  if [ -z "$problems" ]; then
    record PASS "(c) configure.win writes src/Makevars.win: $win, lib$lib_name.a, PKG_LIBS, -j 2, offline vendored build, clean-up"
  else
    record FAIL "(c) Windows build files:$problems"
  fi

  # The system libraries of a Windows static library of the core, and a DLL
  # linked with PKG_LIBS.
  t0=$(date +%s)
  lc="$build/linkcheck"
  rm -rf "$lc/src"
  mkdir -p "$lc/src"
  cp tools/windows/linkcheck/* "$lc/src/"
  sed -i "s|@CORE_DIR@|$rust/core|" "$lc/src/Cargo.toml"
  cp "$rust/Cargo.lock" "$lc/src/Cargo.lock"
  if (cd "$lc/src" && nice cargo rustc -j 2 --lib --target $win --target-dir "$lc/target" -- --print=native-static-libs) \
       >"$lc/build.log" 2>&1; then
    native=$(sed -n 's/.*native-static-libs: //p' "$lc/build.log" | tail -n 1)
    # Linked by the MinGW compiler driver anyway (gcc -shared).
    defaults="-lkernel32 -luser32 -ladvapi32 -lshell32 -lmsvcrt -lucrt -lmingw32 -lmingwex -lmoldname -lgcc -lgcc_eh -lgcc_s -l:libpthread.a -lpthread"
    rm -f "$pkg/src/rust/vendor.tar.xz"
    (cd "$pkg" && sh ./configure.win) >/dev/null 2>&1
    libs=$(mkvar PKG_LIBS)
    missing=""
    for l in $native; do
      case " $libs $defaults " in *" $l "*) ;; *) missing="$missing $l" ;; esac
    done
    if [ -n "$native" ] && [ -z "$missing" ]; then
      record PASS "(c) rustc's native-static-libs for $win ($native) are all linked"
    else
      record FAIL "(c) rustc's native-static-libs for $win ($native): not in PKG_LIBS:${missing:- (none printed)}"
    fi
    # Link as R does: gcc -shared -s -static-libgcc -o pkg.dll pkg-win.def objects PKG_LIBS.
    sys_libs=$(tr ' ' '\n' <<<"$libs" | grep -v -e '^-L' -e "^-l$lib_name\$" | tr '\n' ' ')
    mkdir -p "$lc/run"
    # shellcheck disable=SC2086
    if x86_64-w64-mingw32-gcc -O2 -c -o "$lc/dll.o" "$lc/src/dll.c" &&
       x86_64-w64-mingw32-gcc -shared -s -static-libgcc -o "$lc/run/safetensors_linkcheck.dll" "$lc/src/dll.def" "$lc/dll.o" \
         -L"$lc/target/$win/debug" -lsafetensors_linkcheck $sys_libs &&
       x86_64-w64-mingw32-gcc -O2 -o "$lc/run/host.exe" "$lc/src/host.c"; then
      cp "$build/bcryptprimitives.dll" "$lc/run/" 2>/dev/null
      rm -f "$lc/run/"*.safetensors
      out=$(run_wine "$lc/run" host.exe 2>&1)
      rc=$?
      [ -n "$wineserver" ] && "$wineserver" -w
      if [ "$rc" = 0 ] && ls "$lc/run/" | grep -q '^linkcheck-Grüße-模型\.safetensors$'; then
        record PASS "(c) a DLL linked with PKG_LIBS ($sys_libs) loads and runs under Wine: $out ($(since "$t0"))"
      else
        record FAIL "(c) the DLL linked with PKG_LIBS did not run under Wine (exit $rc): $out"
      fi
    else
      record FAIL "(c) linking a DLL with PKG_LIBS ($sys_libs) failed"
    fi
  else
    show "$lc/build.log"
    record FAIL "(c) the link check static library does not build for $win"
  fi
fi

# --- summary ------------------------------------------------------------------
printf '\n==== summary (%s) ====\n%s' "$(since "$t_start")" "$summary"
echo "windows-check: $n_pass passed, $n_fail failed"
[ "$n_fail" = 0 ]
