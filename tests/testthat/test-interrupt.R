# Ctrl-C during a multi-gigabyte load or save: the call ends within about a
# second with a classed error, R stays usable, and no partial file is left.
# A child R session does the work and gets SIGINT, as a terminal sends it.
# Opt-in (SAFETENSORS_TEST_LARGE=true): the files are gigabytes.

# Starts `fun(...)` in child session `rs`, interrupts it after `after`
# seconds and waits for the call to end. The child notes how the call ended
# (the class of the condition) and when; the result gives that and the
# seconds from the interrupt to the end, as the child saw it.
interrupt_call <- function(rs, fun, args, after = 0.7) {
  rs$call(
    function(fun, args) {
      tryCatch(
        {
          do.call(fun, args)
          list(class = "finished", time = Sys.time())
        },
        error = function(e) list(class = class(e)[[1]], time = Sys.time()),
        interrupt = function(e) list(class = "interrupt", time = Sys.time())
      )
    },
    args = list(fun, args)
  )
  Sys.sleep(after)
  t0 <- Sys.time()
  rs$interrupt()
  expect_identical(rs$poll_process(30000), "ready")
  res <- rs$read()$result
  list(class = res$class, seconds = as.numeric(difftime(res$time, t0, units = "secs")))
}

expect_interrupted <- function(res) {
  # Ours when the signal came while Rust worked, R's own when it came during
  # the R code around the call.
  expect_true(res$class %in% c("safetensors_error_interrupted", "interrupt"), label = res$class)
  expect_lt(res$seconds, 1)
  if (nzchar(Sys.getenv("SAFETENSORS_TEST_TIMINGS"))) {
    cat(sprintf("%s: %.3f s\n", res$class, res$seconds), file = Sys.getenv("SAFETENSORS_TEST_TIMINGS"), append = TRUE)
  }
}

# Open file descriptors and mappings of `path` in the child: an interrupt
# that skipped Rust's destructors would leave some behind.
resources <- function(rs, path) {
  rs$run(function(p) {
    c(
      fds = length(list.files("/proc/self/fd")),
      maps = sum(grepl(p, readLines("/proc/self/maps"), fixed = TRUE))
    )
  }, list(path))
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
  skip_if_not(file.exists("/proc/self/maps"), "needs /proc")
  rs <- local_session()
  load <- function(p, framework, backend) {
    safetensors::safe_load_file(p, framework = framework, backend = backend)
  }
  before <- resources(rs, path)
  for (how in list(c("r", "read"), c("r", "mmap"), c("raw", "read"), c("raw", "mmap"))) {
    res <- interrupt_call(rs, load, list(path, how[[1]], how[[2]]))
    expect_interrupted(res)
    expect_identical(rs$run(function() sum(1:10)), 55L)
    expect_identical(resources(rs, path), before)
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

test_that("Ctrl-C stops safe_convert() and a writer's write; nothing is left, the writer stays usable", {
  skip_if_not_large()
  skip_on_os("windows")
  n <- 1e9 # 4 GB of F32 zeros, sparse
  path <- local_sparse_file(obj(entry("x", "F32", n, 0, 4 * n)), 4 * n)
  dir <- withr::local_tempdir()
  rs <- local_session()
  convert <- function(p, out) safetensors::safe_convert(p, out, dtype = "BF16", max_shard_size = "500MB")
  res <- interrupt_call(rs, convert, list(path, dir), after = 1)
  expect_interrupted(res)
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), character())
  # The folder is free again: a save to it works.
  expect_identical(rs$run(function(d) basename(safetensors::safe_save_file(list(a = 1), d)), list(dir)), "model.safetensors")
  unlink(file.path(dir, "model.safetensors"))
  # A write interrupted counts nothing; the writer goes on.
  rs$run(function(d) {
    lay <- data.frame(name = "x", dtype = "F16")
    lay$shape <- list(c(2e8, 4))
    w <<- safetensors::safe_writer(d, lay)
    block <<- matrix(0.5, 1e8, 4)
    NULL
  }, list(dir))
  write <- function() w$write("x", block, rows = 1:1e8)
  res <- interrupt_call(rs, write, list(), after = 0.3)
  # The engine polls between blocks of 4 MiB, but a write waits for the
  # disk when the system throttles dirty pages: 2.1 s on a loaded machine.
  expect_true(res$class %in% c("safetensors_error_interrupted", "interrupt"), label = res$class)
  expect_lt(res$seconds, 5)
  expect_identical(rs$run(function() { w$write("x", block[1:10, ], rows = 1:10); "ok" }), "ok")
  rs$run(function() { w$abort(); NULL })
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), character())
})
