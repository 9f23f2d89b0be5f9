# Runs the testthat suite against an installed copy of safetensors and writes
# the counts to a file. Called by tools/test.sh:
#
#   Rscript tools/run-testthat.R LIBRARY COUNTS_FILE [FAILURES_FILE]
#
# LIBRARY is put first on .libPaths() (where tools/test.sh installed the
# package). COUNTS_FILE gets one line "passed failed skipped": passed and
# failed count expectations as testthat's summary does, a test that errored
# or a test file that failed to run counts as failed, skipped counts skipped
# tests. FAILURES_FILE, if given, gets a line per failed expectation (file,
# line, test and the first line of its message), which tools/test.sh repeats
# next to its summary, where a CI log that keeps only its tail shows it.
# Exit status 0 when the suite ran (whatever its result); 2, and no counts
# file, when it could not run at all.

args <- commandArgs(trailingOnly = TRUE)
if (!length(args) %in% 2:3) {
  cat("usage: Rscript tools/run-testthat.R LIBRARY COUNTS_FILE [FAILURES_FILE]\n", file = stderr())
  quit(status = 2)
}
lib <- args[[1]]
counts_file <- args[[2]]
failures_file <- if (length(args) == 3L) args[[3]]

file_arg <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
root <- normalizePath(file.path(dirname(file_arg), ".."), mustWork = TRUE)

.libPaths(c(lib, .libPaths()))
# Run the tests CRAN would skip too, as devtools::test() does.
if (!nzchar(Sys.getenv("NOT_CRAN"))) Sys.setenv(NOT_CRAN = "true")
# Print every failure instead of giving up after ten.
options(testthat.progress.max_fails = 1e6, warn = 1)

write_counts <- function(passed, failed, skipped) {
  writeLines(sprintf("%d %d %d", as.integer(passed), as.integer(failed), as.integer(skipped)),
             counts_file)
}

results <- tryCatch(
  testthat::test_dir(
    file.path(root, "tests", "testthat"),
    package = "safetensors",
    load_package = "installed",
    reporter = testthat::ProgressReporter$new(show_praise = FALSE),
    stop_on_failure = FALSE,
    stop_on_warning = FALSE
  ),
  error = function(e) {
    cat("\ntestthat could not run the suite: ", conditionMessage(e), "\n", sep = "", file = stderr())
    NULL
  }
)

if (is.null(results)) {
  quit(status = 2)   # no counts file: tools/test.sh counts one failure
}

`%|%` <- function(x, y) if (length(x) == 0 || is.na(x)) y else x
# "test-x.R:12 [test name] first line of the message", per failure or error.
failure_lines <- function(results) {
  unlist(lapply(results, function(test) {
    bad <- Filter(function(e) inherits(e, c("expectation_failure", "expectation_error")), test$results)
    vapply(bad, function(e) {
      line <- if (!is.null(e$srcref)) paste0(":", e$srcref[[1]]) else ""
      first <- strsplit(conditionMessage(e), "\n", fixed = TRUE)[[1]][1]
      sprintf("%s%s [%s] %s", test$file, line, test$test, substr(first %|% "", 1, 200))
    }, character(1))
  }))
}
if (!is.null(failures_file)) {
  writeLines(as.character(failure_lines(results)), failures_file)
}

df <- as.data.frame(results)
if (nrow(df) == 0L) {
  write_counts(0, 0, 0)
} else {
  write_counts(
    passed = sum(df$passed),
    failed = sum(df$failed) + sum(df$error),
    skipped = sum(df$skipped)
  )
}
quit(status = 0)
