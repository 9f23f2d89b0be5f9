# Python's safetensors (and numpy) serve as the reference implementation for
# interoperability tests. They are optional: tests skip cleanly without them.

# The first of the Pythons `exes` that can run `check` (Python code that
# fails when a module it needs is missing), remembered under `key`; NULL
# when none can. By default, SAFETENSORS_PYTHON when set (and then only
# it), else python3.
find_python <- function(key, check, exes = Sys.getenv("SAFETENSORS_PYTHON", Sys.which("python3"))) {
  if (!exists(key, envir = python_cache, inherits = FALSE)) {
    ok <- Filter(function(exe) {
      nzchar(exe) && identical(
        python_system2(exe, c("-c", shQuote(check)), stdout = FALSE, stderr = FALSE),
        0L
      )
    }, exes)
    assign(key, if (length(ok) > 0) ok[[1]] else NULL, envir = python_cache)
  }
  get(key, envir = python_cache, inherits = FALSE)
}
python_cache <- new.env()

python_exe <- function() {
  find_python("python", "import safetensors, numpy")
}

# Runs Python without R's LD_LIBRARY_PATH: it lists the system library
# directory first, so a Python built elsewhere (pyenv, say) can load the
# system's libpython instead of its own and lose its site-packages.
python_system2 <- function(...) {
  withr::with_envvar(c(LD_LIBRARY_PATH = NA), suppressWarnings(system2(...)))
}

# Python with numpy and ml_dtypes, the oracle of dtype conversions
# (test-dtype-oracle.R, test-convert.R).
oracle_python <- function() {
  find_python("oracle_python", "import numpy, ml_dtypes; ml_dtypes.float4_e2m1fn")
}

skip_without_oracle <- function() {
  skip_on_cran()
  if (is.null(oracle_python())) skip("Python with numpy and ml_dtypes is not available")
}

skip_without_python <- function() {
  skip_on_cran()
  if (is.null(python_exe())) skip("Python with safetensors and numpy is not available")
}

# Runs Python `code` (a character vector of lines) with `args` available as
# sys.argv[1:], with Python `exe`; returns its standard output lines, failing
# the test on error.
run_python <- function(code, args = character(), exe = python_exe()) {
  script <- tempfile(fileext = ".py")
  on.exit(unlink(script), add = TRUE)
  writeLines(code, script)
  out <- python_system2(exe, c(shQuote(script), shQuote(args)), stdout = TRUE, stderr = TRUE)
  status <- attr(out, "status") %||% 0L
  if (status != 0L) {
    stop("Python failed (status ", status, "):\n", paste(out, collapse = "\n"), call. = FALSE)
  }
  out
}

`%||%` <- function(x, y) if (is.null(x)) y else x

fixture <- function(...) test_path("fixtures", ...)
