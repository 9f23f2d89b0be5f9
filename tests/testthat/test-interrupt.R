# Ctrl-C during a multi-gigabyte load or save: the call ends within about a
# second with a classed error, R stays usable, and no partial file is left.
# A child R session does the work and gets SIGINT, as a terminal sends it.
# Opt-in (SAFETENSORS_TEST_LARGE=true): the files are gigabytes.

# Starts `fun(...)` in child session `rs`, interrupts it after `after`
# seconds and waits for the call to end. Returns the session's result and
# the seconds from the interrupt to the end of the call.
interrupt_call <- function(rs, fun, args, after = 0.7) {
  rs$call(fun, args = args)
  Sys.sleep(after)
  if (rs$poll_process(0) == "ready") {
    return(list(result = rs$read(), seconds = NA_real_))
  }
  t0 <- Sys.time()
  rs$interrupt()
  state <- rs$poll_process(30000)
  seconds <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  list(result = if (state == "ready") rs$read(), seconds = seconds)
}

expect_interrupted <- function(res) {
  expect_false(is.na(res$seconds), label = "the call was still running when interrupted")
  err <- res$result$error
  expect_s3_class(err$parent %||% err, "safetensors_error_interrupted")
  # Within a second on an idle machine; allow for a busy one.
  expect_lt(res$seconds, 2)
  if (nzchar(Sys.getenv("SAFETENSORS_TEST_TIMINGS"))) {
    cat(sprintf("\n  interrupted call ended %.3f s after SIGINT\n", res$seconds), file = Sys.getenv("SAFETENSORS_TEST_TIMINGS"), append = TRUE)
  }
}

local_session <- function(env = parent.frame()) {
  rs <- callr::r_session$new(options = callr::r_session_options(libpath = .libPaths()))
  withr::defer(rs$close(), envir = env)
  rs
}

test_that("Ctrl-C stops a multi-gigabyte load; the session goes on", {
  skip_if_not_large()
  skip_on_os("windows")
  skip_if_memory_below(8)
  n <- 375e6 # 1.5 GB of F32, 3 GB as doubles
  path <- local_sparse_file(obj(entry("x", "F32", n, 0, 4 * n)), 4 * n)
  rs <- local_session()
  load <- function(p, framework, backend) {
    x <- safetensors::safe_load_file(p, framework = framework, backend = backend)
    "finished"
  }
  for (how in list(c("r", "read"), c("r", "mmap"), c("raw", "read"))) {
    res <- interrupt_call(rs, load, list(path, how[[1]], how[[2]]))
    expect_interrupted(res)
    expect_identical(rs$run(function() sum(1:10)), 55L)
  }
  # The session still loads files after the interrupts.
  small <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(a = 1:3), small)
  expect_identical(rs$run(function(p) safetensors::safe_load_file(p)$a[[3]], list(small)), 3L)
})

test_that("Ctrl-C stops a multi-gigabyte save and leaves no file", {
  skip_if_not_large()
  skip_on_os("windows")
  skip_if_memory_below(6)
  dir <- withr::local_tempdir()
  rs <- local_session()
  rs$run(function() {
    x <<- list(x = numeric(2e8)) # 1.6 GB
    NULL
  })
  save <- function(p, dtype) {
    safetensors::safe_save_file(x, p, dtype = dtype)
    "finished"
  }
  # F16 is interrupted while converting, F64 mostly while writing or
  # flushing to disk.
  for (dtype in c("F16", "F64")) {
    path <- file.path(dir, paste0(dtype, ".safetensors"))
    res <- interrupt_call(rs, save, list(path, dtype), after = 0.5)
    expect_interrupted(res)
    expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), character())
    expect_identical(rs$run(function() sum(1:10)), 55L)
  }
  # Overwriting an existing file: interrupted, the old file stays.
  path <- file.path(dir, "old.safetensors")
  safe_save_file(list(old = 1), path)
  before <- readBin(path, "raw", 1e4)
  res <- interrupt_call(rs, save, list(path, "F64"), after = 0.5)
  expect_interrupted(res)
  expect_identical(readBin(path, "raw", 1e4), before)
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), "old.safetensors")
})
