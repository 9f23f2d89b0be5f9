# Python's safetensors (and numpy) serve as the reference implementation for
# interoperability tests. They are optional: tests skip cleanly without them.

python_exe <- function() {
  if (!exists("python", envir = python_cache)) {
    exe <- Sys.getenv("SAFETENSORS_PYTHON", Sys.which("python3"))
    ok <- nzchar(exe) && identical(
      python_system2(exe, c("-c", shQuote("import safetensors, numpy")), stdout = FALSE, stderr = FALSE),
      0L
    )
    assign("python", if (ok) exe else NULL, envir = python_cache)
  }
  get("python", envir = python_cache)
}
python_cache <- new.env()

# Runs Python without R's LD_LIBRARY_PATH: it lists the system library
# directory first, so a Python built elsewhere (pyenv, say) can load the
# system's libpython instead of its own and lose its site-packages.
python_system2 <- function(...) {
  withr::with_envvar(c(LD_LIBRARY_PATH = NA), suppressWarnings(system2(...)))
}

skip_without_python <- function() {
  skip_on_cran()
  if (is.null(python_exe())) skip("Python with safetensors and numpy is not available")
}

# Runs Python `code` (a character vector of lines) with `args` available as
# sys.argv[1:]; returns its standard output lines, failing the test on error.
run_python <- function(code, args = character()) {
  script <- tempfile(fileext = ".py")
  on.exit(unlink(script), add = TRUE)
  writeLines(code, script)
  out <- python_system2(python_exe(), c(shQuote(script), shQuote(args)), stdout = TRUE, stderr = TRUE)
  status <- attr(out, "status") %||% 0L
  if (status != 0L) {
    stop("Python failed (status ", status, "):\n", paste(out, collapse = "\n"), call. = FALSE)
  }
  out
}

`%||%` <- function(x, y) if (is.null(x)) y else x

fixture <- function(...) test_path("fixtures", ...)
