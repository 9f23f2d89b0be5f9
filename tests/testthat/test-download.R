# Whole-file downloads (R/download.R): parallel ranges written at their
# offsets, one request for a server that ignores ranges, retries that
# resume where a transfer stopped, a record that lets the next attempt (or
# session) resume, the checks of what servers send, and the lock shared
# with Python, against range-server.py (helper-http.R) and hub-server.py
# (helper-hub.R).

random_file <- function(path, n, seed = 1) {
  set.seed(seed)
  writeBin(as.raw(sample(0:255, n, replace = TRUE)), path)
  path
}

same_file <- function(a, b) {
  expect_identical(unname(tools::md5sum(a)), unname(tools::md5sum(b)))
}

leftovers <- function(dest) {
  file.exists(c(download_partial(dest), download_record(dest)))
}

test_that("downloads are split into ranges of at least a minimum size", {
  expect_identical(download_plan(NA, 4), list(start = 0, end = NA_real_))
  expect_identical(download_plan(0, 4), list(start = numeric(), end = numeric()))
  expect_identical(download_plan(10, 4, min_part = 100), list(start = 0, end = 9))
  p <- download_plan(1000, 4, min_part = 100)
  expect_identical(p, list(start = c(0, 250, 500, 750), end = c(249, 499, 749, 999)))
  p <- download_plan(1001, 3, min_part = 400)
  expect_identical(p, list(start = c(0, 500), end = c(499, 1000)))
  expect_length(download_plan(2^40, 8)$start, 8)
})

test_that("records of progress are trusted only when they fit the file", {
  dir <- withr::local_tempdir()
  dest <- file.path(dir, "blob")
  partial <- download_partial(dest)
  record <- download_record(dest)
  writeBin(as.raw(rep(1, 600)), partial)
  st <- list(start = c(0, 500), end = c(499, 999), done = c(120, 40))
  download_save(record, 1000, st)
  expect_identical(download_resume(record, partial, 1000), st)
  # Another size, a missing partial file, a partial file shorter than the
  # bytes recorded, a record that does not tile the file: none.
  expect_null(download_resume(record, partial, 999))
  expect_null(download_resume(record, file.path(dir, "none"), 1000))
  writeBin(as.raw(1:200), partial)
  download_save(record, 1000, list(start = c(0, 500), end = c(499, 999), done = c(120, 300)))
  expect_null(download_resume(record, partial, 1000))
  writeLines(c("safetensors-r download 1", "size 1000", "range 0 499 1", "range 501 999 0"), record)
  expect_null(download_resume(record, partial, 1000))
  writeLines(c("safetensors-r download 1", "size 1000", "range 0 999 x"), record)
  expect_null(download_resume(record, partial, 1000))
  writeLines("garbage", record)
  expect_null(download_resume(record, partial, 1000))
  expect_null(download_resume(record, partial, NA))
})

test_that("a file arrives in parallel ranges, each written at its offset", {
  srv <- local_http_server()
  # A server on this machine gets one connection unless told otherwise.
  expect_identical(download_connections(srv$url("f.bin"), NULL), 1)
  expect_identical(download_connections("https://cdn.example.org/f", NULL), 4)
  withr::local_options(safetensors.http_connections = 4)
  src <- random_file(file.path(srv$dir, "f.bin"), 1e6)
  dest <- file.path(withr::local_tempdir(), "f.bin")
  origin <- url_origin(url_parse(srv$url("f.bin")))
  download_file(srv$url("f.bin"), dest, 1e6, "f.bin", origin, min_part = 1e5)
  same_file(dest, src)
  expect_identical(leftovers(dest), c(FALSE, FALSE))
  log <- srv$log()
  expect_setequal(log$range, c("bytes=0-249999", "bytes=250000-499999", "bytes=500000-749999", "bytes=750000-999999"))
  expect_identical(log$status, rep(206L, 4))
  # One connection: one range.
  withr::local_options(safetensors.http_connections = 1)
  srv$clear()
  unlink(dest)
  download_file(srv$url("f.bin"), dest, 1e6, "f.bin", origin, min_part = 1e5)
  same_file(dest, src)
  expect_identical(srv$log()$range, "bytes=0-999999")
  withr::local_options(safetensors.http_connections = 0)
  expect_error(download_file(srv$url("f.bin"), dest, 1e6, "f.bin", origin), class = "safetensors_error_invalid_argument")
})

test_that("a server that ignores ranges sends the file once", {
  srv <- local_http_server()
  withr::local_options(safetensors.http_connections = 4)
  src <- random_file(file.path(srv$dir, "f.bin"), 1e6)
  dest <- file.path(withr::local_tempdir(), "f.bin")
  origin <- url_origin(url_parse(srv$url("f.bin")))
  download_file(srv$url("f.bin", "norange"), dest, 1e6, "f.bin", origin, min_part = 1e5)
  same_file(dest, src)
  expect_identical(leftovers(dest), c(FALSE, FALSE))
  # Of the four requests, the first is read to its end; the others stop at
  # their first bytes.
  log <- srv$log()
  expect_identical(log$status, rep(200L, 4))
})

test_that("files of unknown length and empty files", {
  srv <- local_http_server()
  src <- random_file(file.path(srv$dir, "f.bin"), 5e5)
  dir <- withr::local_tempdir()
  origin <- url_origin(url_parse(srv$url("f.bin")))
  download_file(srv$url("f.bin"), file.path(dir, "a"), NA, "f.bin", origin)
  same_file(file.path(dir, "a"), src)
  expect_identical(srv$log()$range, NA_character_)
  srv$clear()
  download_file(srv$url("f.bin"), file.path(dir, "b"), 0, "f.bin", origin)
  expect_identical(file.size(file.path(dir, "b")), 0)
  expect_identical(nrow(srv$log()), 0L)
})

test_that("dropped transfers resume where they stopped; server errors are retried", {
  srv <- local_http_server()
  withr::local_options(safetensors.http_connections = 4)
  src <- random_file(file.path(srv$dir, "f.bin"), 1e6)
  dest <- file.path(withr::local_tempdir(), "f.bin")
  origin <- url_origin(url_parse(srv$url("f.bin")))
  # Each of the first four answers sends half its range, then drops.
  download_file(srv$url("f.bin", "drop4"), dest, 1e6, "f.bin", origin, min_part = 1e5)
  same_file(dest, src)
  log <- srv$log()
  expect_identical(nrow(log), 8L)
  expect_setequal(log$range[5:8], c("bytes=125000-249999", "bytes=375000-499999", "bytes=625000-749999", "bytes=875000-999999"))
  srv$clear()
  unlink(dest)
  download_file(srv$url("f.bin", "flaky2"), dest, 1e6, "f.bin", origin)
  same_file(dest, src)
  expect_identical(srv$log()$status, c(503L, 503L, 206L))
})

test_that("a download that fails resumes from its record, in a later attempt", {
  srv <- local_http_server()
  src <- random_file(file.path(srv$dir, "f.bin"), 1e6)
  dest <- file.path(withr::local_tempdir(), "f.bin")
  origin <- url_origin(url_parse(srv$url("f.bin")))
  withr::local_options(safetensors.http_retries = 0, safetensors.http_connections = 2)
  expect_snapshot(
    download_file(srv$url("f.bin", "drop2"), dest, 1e6, "f.bin", origin, min_part = 5e5),
    error = TRUE, transform = function(x) gsub("127.0.0.1:[0-9]+", "127.0.0.1:PORT", x)
  )
  expect_identical(leftovers(dest), c(TRUE, TRUE))
  expect_false(file.exists(dest))
  rec <- download_resume(download_record(dest), download_partial(dest), 1e6)
  expect_identical(rec$done, c(250000, 250000))
  srv$clear()
  download_file(srv$url("f.bin"), dest, 1e6, "f.bin", origin, min_part = 5e5)
  same_file(dest, src)
  expect_setequal(srv$log()$range, c("bytes=250000-499999", "bytes=750000-999999"))
  expect_identical(leftovers(dest), c(FALSE, FALSE))
})

test_that("answers with other bytes than those asked for are errors", {
  srv <- local_http_server()
  random_file(file.path(srv$dir, "f.bin"), 1e5)
  dir <- withr::local_tempdir()
  origin <- url_origin(url_parse(srv$url("f.bin")))
  get <- function(modes, size = 1e5) {
    download_file(srv$url("f.bin", modes), file.path(dir, paste(modes, collapse = "")), size, "f.bin", origin)
  }
  expect_error(get("shift"), class = "safetensors_error_incomplete_buffer")
  expect_error(get("total99"), class = "safetensors_error_incomplete_buffer")
  expect_error(get("long"), class = "safetensors_error_incomplete_buffer")
  cnd <- expect_error(get("status404"), class = "safetensors_error_http")
  expect_identical(cnd$status, 404L)
  expect_snapshot(get("shift"), error = TRUE, transform = function(x) gsub("127.0.0.1:[0-9]+", "127.0.0.1:PORT", x))
  expect_snapshot(get("long"), error = TRUE, transform = function(x) gsub("127.0.0.1:[0-9]+", "127.0.0.1:PORT", x))
  # A file that is shorter than the size given.
  expect_error(get(character(), size = 2e5), class = "safetensors_error_incomplete_buffer")
})

test_that("a signed URL that expired is replaced by a fresh one, once", {
  hub <- local_hub()
  hub$commit("org/exp", list("model.safetensors" = list(x = runif(1e4))))
  p <- hf_parse("hf://org/exp/model.safetensors")
  meta <- hf_meta(p, "main", "model.safetensors", TRUE, NULL)
  dest <- file.path(withr::local_tempdir(), "blob")
  origin <- url_origin(url_parse(hub$endpoint))
  asked <- 0
  relocate <- function() {
    asked <<- asked + 1
    hf_meta(p, "main", "model.safetensors", TRUE, NULL)$location
  }
  hub$modes(cdn_expire = 1)
  download_file(meta$location, dest, meta$size, "model.safetensors", origin, relocate = relocate)
  expect_identical(asked, 1)
  expect_identical(safe_load_file(dest)$x, safe_load_file("hf://org/exp/model.safetensors")$x)
  # Expired again after the fresh URL: an error.
  hub$modes(cdn_expire = 10)
  unlink(dest)
  cnd <- expect_error(
    download_file(meta$location, dest, meta$size, "model.safetensors", origin, relocate = relocate),
    class = "safetensors_error_http"
  )
  expect_identical(cnd$status, 403L)
})

test_that("a progress bar moves over the bytes", {
  srv <- local_http_server()
  src <- random_file(file.path(srv$dir, "f.bin"), 2e6)
  dest <- file.path(withr::local_tempdir(), "f.bin")
  withr::local_options(
    rlang_interactive = TRUE, safetensors.progress = TRUE, safetensors.progress_group_bytes = 1,
    cli.progress_show_after = 0, cli.dynamic = TRUE
  )
  sink <- withr::local_tempfile()
  withr::with_message_sink(sink, {
    download_file(srv$url("f.bin", "slow"), dest, 2e6, "f.bin", url_origin(url_parse(srv$url("f.bin"))))
  })
  same_file(dest, src)
  expect_match(paste(readLines(sink, warn = FALSE), collapse = "\n"), "Downloading")
  # In parallel ranges, the bar moves every 4 MiB (cli draws a second bar
  # so soon after the first only when its timer ticks: the values given to
  # it are checked instead).
  withr::local_options(safetensors.http_connections = 4)
  big <- random_file(file.path(srv$dir, "g.bin"), 1e7)
  rec <- new.env()
  rec$sets <- numeric()
  suppressMessages(trace(
    "cli_progress_update", bquote(assign("sets", c(get("sets", envir = .(rec)), set), envir = .(rec))),
    print = FALSE, where = asNamespace("cli")
  ))
  withr::defer(suppressMessages(untrace("cli_progress_update", where = asNamespace("cli"))))
  withr::with_message_sink(withr::local_tempfile(), {
    download_file(srv$url("g.bin"), dest, 1e7, "g.bin", url_origin(url_parse(srv$url("g.bin"))), min_part = 1e6)
  })
  same_file(dest, big)
  expect_true(any(rec$sets > 0 & rec$sets < 1e7))
  expect_identical(rec$sets[[length(rec$sets)]], 1e7)
  expect_false(is.unsorted(rec$sets))
})

test_that("a lock excludes every other holder until released", {
  path <- file.path(withr::local_tempdir(), "locks", "x.lock")
  first <- download_lock(path, "x")
  expect_false(lock_try_(path))
  lock_release_(first)
  second <- lock_try_(path)
  expect_false(isFALSE(second))
  lock_release_(second)
  lock_release_(second)
})

test_that("Ctrl-C during a download keeps what arrived; the next session resumes", {
  skip_on_os("windows")
  skip_if_not_installed("callr")
  hub <- local_hub()
  set.seed(3)
  x <- list(w = runif(1e6))
  commit <- hub$commit("org/big", list("model.safetensors" = x))
  size <- file.size(file.path(hub$root, "models", "org", "big", "commits", commit, "model.safetensors"))
  hub$modes(cdn_slow = 0.05)
  rs <- callr::r_session$new(options = callr::r_session_options(libpath = .libPaths()))
  withr::defer(rs$close())
  rs$call(function() {
    tryCatch(
      {
        safetensors::safe_load_file("hf://org/big/model.safetensors")
        "finished"
      },
      error = function(e) class(e)[[1]],
      interrupt = function(e) "interrupt"
    )
  })
  Sys.sleep(1.5)
  rs$interrupt()
  expect_identical(rs$poll_process(30000), "ready")
  expect_true(rs$read()$result %in% c("interrupt", "safetensors_error_interrupted"))
  blobs <- file.path(hub$cache, "models--org--big", "blobs")
  partial <- list.files(blobs, pattern = "\\.safetensors-r\\.incomplete$", full.names = TRUE)
  expect_length(partial, 1)
  dest <- sub("\\.safetensors-r\\.incomplete$", "", partial)
  rec <- download_resume(download_record(dest), partial, size)
  expect_gt(sum(rec$done), 0)
  open <- rec$done < rec$end - rec$start + 1
  hub$modes()
  hub$clear()
  expect_identical(as.vector(safe_load_file("hf://org/big/model.safetensors")$w), x$w)
  cdn <- hub$log()
  cdn <- cdn[cdn$server == "cdn", ]
  starts <- as.numeric(sub("^bytes=([0-9]+)-.*$", "\\1", cdn$range))
  expect_identical(sort(starts), sort(rec$start[open] + rec$done[open]))
  expect_identical(list.files(blobs), basename(dest))
})
