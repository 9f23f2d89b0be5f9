# Atomic writes: a save goes to a temporary file in the target's directory
# and is renamed over the target only when complete, so no failure leaves a
# partial file or damages an existing one.

# Everything in `dir`, dot files included.
dir_entries <- function(dir) {
  sort(list.files(dir, all.files = TRUE, no.. = TRUE))
}

# A directory holding `target.safetensors` with known old contents.
local_target <- function(env = parent.frame()) {
  dir <- withr::local_tempdir(.local_envir = env)
  path <- file.path(dir, "target.safetensors")
  safe_save_file(list(old = 1:3), path)
  list(dir = dir, path = path, old = readBin(path, "raw", file.size(path)))
}

expect_untouched <- function(t) {
  expect_identical(readBin(t$path, "raw", file.size(t$path) + 1), t$old)
  expect_identical(dir_entries(t$dir), "target.safetensors")
}

test_that("new files get the mode the umask allows, not 0600", {
  dir <- withr::local_tempdir()
  old <- Sys.umask()
  withr::defer(Sys.umask(old))
  for (umask in c("022", "077", "002")) {
    Sys.umask(umask)
    path <- file.path(dir, paste0("u", umask, ".safetensors"))
    safe_save_file(list(x = 1), path)
    # A replacement is a new file too.
    safe_save_file(list(x = 2), path)
    Sys.umask(old)
    want <- as.octmode(bitwAnd(0x1b6, bitwNot(strtoi(umask, 8L))))
    expect_identical(format(file.info(path)$mode), format(want))
  }
})

test_that("a value that can't be converted in the last tensor leaves the target untouched", {
  t <- local_target()
  x <- list(big = matrix(runif(3e5), 300), last = c(1, 2, 2.5))
  expect_error(
    safe_save_file(x, t$path, dtype = c(last = "I32")),
    class = "safetensors_error_conversion"
  )
  expect_untouched(t)
  # The same failure without an existing target leaves no file at all.
  fresh <- file.path(t$dir, "fresh.safetensors")
  expect_error(safe_save_file(x, fresh, dtype = c(last = "I32")), class = "safetensors_error_conversion")
  expect_untouched(t)
})

test_that("NA in an integer tensor written as an integer dtype fails cleanly", {
  t <- local_target()
  expect_error(safe_save_file(list(a = 1:3, b = c(1L, NA)), t$path), class = "safetensors_error_conversion")
  expect_untouched(t)
})

test_that("a failing connection leaves its file and the session intact", {
  t <- local_target()
  x <- list(x = runif(10))
  open_before <- rownames(showConnections())
  # Opened for reading only: refused before anything is written.
  con <- file(t$path, "rb")
  expect_error(safe_save_file(x, con), class = "safetensors_error_invalid_argument")
  close(con)
  expect_untouched(t)
  # Not yet opened: a conversion error comes before the file is opened
  # (opening it for writing would truncate it).
  con <- file(t$path)
  expect_error(safe_save_file(list(x = 0.5), con, dtype = "I8"), class = "safetensors_error_conversion")
  expect_false(isOpen(con))
  close(con)
  expect_untouched(t)
  # A destroyed connection.
  con <- file(t$path)
  close(con)
  expect_error(safe_save_file(x, con), class = "safetensors_error_closed")
  expect_untouched(t)
  # A read-only in-memory connection.
  con <- rawConnection(raw(0), "rb")
  expect_error(safe_save_file(x, con), class = "safetensors_error_invalid_argument")
  close(con)
  # No connection was left open, and saving through one still works.
  expect_identical(rownames(showConnections()), open_before)
  con <- rawConnection(raw(0), "wb")
  safe_save_file(x, con)
  bytes <- rawConnectionValue(con)
  close(con)
  expect_identical(safe_deserialize(bytes)$x, structure(array(x$x), dtype = "F64"))
})

test_that("a path in a missing directory is a classed error", {
  dir <- withr::local_tempdir()
  path <- file.path(dir, "no", "such", "dir", "x.safetensors")
  expect_error(safe_save_file(list(x = 1), path), class = "safetensors_error_file_not_found")
  expect_identical(dir_entries(dir), character())
})

test_that("a process killed while saving leaves the target untouched", {
  skip_on_cran()
  skip_on_os("windows")
  skip_if_not_installed("callr")
  t <- local_target()
  flags <- withr::local_tempdir()
  n <- if (identical(Sys.getenv("SAFETENSORS_TEST_LARGE"), "true")) 2.5e8 else 5e7
  child <- callr::r_bg(
    function(path, flags, n) {
      x <- list(x = runif(n))
      file.create(file.path(flags, "started"))
      safetensors::safe_save_file(x, path)
      file.create(file.path(flags, "finished"))
    },
    args = list(path = t$path, flags = flags, n = n),
    libpath = .libPaths()
  )
  on.exit(child$kill(), add = TRUE)
  deadline <- Sys.time() + 60
  while (!file.exists(file.path(flags, "started")) && child$is_alive() && Sys.time() < deadline) {
    Sys.sleep(0.01)
  }
  expect_true(file.exists(file.path(flags, "started")))
  Sys.sleep(0.1)
  during <- dir_entries(t$dir)
  child$kill() # SIGKILL: no cleanup code runs
  child$wait(5000)
  if (file.exists(file.path(flags, "finished"))) {
    skip("the save finished before the kill")
  }
  expect_identical(readBin(t$path, "raw", file.size(t$path) + 1), t$old)
  # What a killed writer can leave: nothing on Linux (the new file has no
  # name until it is complete), at most a `.target.safetensors.*.tmp`
  # elsewhere.
  left <- setdiff(dir_entries(t$dir), "target.safetensors")
  expect_true(all(grepl("^\\.target\\.safetensors\\.[0-9]+-[0-9]+\\.tmp$", left)))
  if (Sys.info()[["sysname"]] == "Linux") {
    expect_identical(left, character())
    expect_identical(during, "target.safetensors")
  }
  # The next save works and replaces the target.
  safe_save_file(list(new = 1), t$path)
  expect_named(safe_load_file(t$path), "new")
})

test_that("a full disk fails the save and leaves the target untouched", {
  skip_on_cran()
  skip_if_not(Sys.info()[["sysname"]] == "Linux" && Sys.info()[["effective_user"]] == "root", "needs root on Linux")
  dir <- withr::local_tempdir()
  ok <- suppressWarnings(system2("mount", c("-t", "tmpfs", "-o", "size=1m", "tmpfs", shQuote(dir)), stdout = FALSE, stderr = FALSE))
  skip_if(ok != 0, "can't mount a tmpfs here")
  withr::defer(system2("umount", shQuote(dir)))
  t <- list(dir = dir, path = file.path(dir, "target.safetensors"))
  safe_save_file(list(old = 1:3), t$path)
  t$old <- readBin(t$path, "raw", file.size(t$path))
  expect_error(safe_save_file(list(x = runif(3e5)), t$path), class = "safetensors_error_io")
  expect_untouched(t)
  # Without sync the error still comes (at write or close), never a short file.
  expect_error(safe_save_file(list(x = runif(3e5)), t$path, sync = FALSE), class = "safetensors_error_io")
  expect_untouched(t)
  # Space is still free afterwards: a small save succeeds.
  safe_save_file(list(small = 1:10), t$path)
  expect_identical(safe_load_file(t$path)$small, structure(1:10, dim = 10L, dtype = "I32"))
})
