# Python's safetensors (and numpy) serve as the reference implementation for
# interoperability tests. They are optional: tests skip cleanly without them.
#
# Python runs without R's LD_LIBRARY_PATH: with it, a Python built outside the
# system (pyenv) can load the system's libpython, which then looks for
# packages in the wrong place.
python_env <- "LD_LIBRARY_PATH="

python_exe <- function() {
  if (!exists("python", envir = python_cache)) {
    exe <- Sys.getenv("SAFETENSORS_PYTHON", Sys.which("python3"))
    ok <- nzchar(exe) && identical(
      suppressWarnings(system2(exe, c("-c", shQuote("import safetensors, numpy")), stdout = FALSE, stderr = FALSE, env = python_env)),
      0L
    )
    assign("python", if (ok) exe else NULL, envir = python_cache)
  }
  get("python", envir = python_cache)
}
python_cache <- new.env()

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
  out <- suppressWarnings(system2(python_exe(), c(shQuote(script), shQuote(args)), stdout = TRUE, stderr = TRUE, env = python_env))
  status <- attr(out, "status") %||% 0L
  if (status != 0L) {
    stop("Python failed (status ", status, "):\n", paste(out, collapse = "\n"), call. = FALSE)
  }
  out
}

`%||%` <- function(x, y) if (is.null(x)) y else x

fixture <- function(...) test_path("fixtures", ...)
