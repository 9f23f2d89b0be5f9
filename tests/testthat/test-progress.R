# Progress bars: the load in pieces and the streaming save must give
# exactly what the one-call paths give. Tests are not interactive and their
# output can't redraw a line, so each test that wants the bar path forces
# it with rlang's `rlang_interactive` option, cli's `cli.dynamic` and a
# tiny group size.

local_progress <- function(group = 100, .env = parent.frame()) {
  withr::local_options(
    list(
      rlang_interactive = TRUE,
      safetensors.progress = TRUE,
      safetensors.progress_group_bytes = group,
      cli.progress_show_after = 0,
      cli.dynamic = TRUE
    ),
    .local_envir = .env
  )
  # cli draws the bar on stderr: keep it out of the test output.
  withr::local_message_sink(withr::local_tempfile(.local_envir = .env), .local_envir = .env)
}


progress_tensors <- function() {
  list(
    a = matrix(seq(0, 1, length.out = 60), 6),
    b = 1:50,
    c = c(TRUE, FALSE, TRUE),
    d = seq(-2, 2, length.out = 100),
    e = structure(3, shape = integer(0)),
    f = as.raw(0:9)
  )
}

test_that("the bar is off in tests, in knitr, when not interactive, where it can't be redrawn and by option", {
  expect_false(progress_enabled())
  withr::local_options(rlang_interactive = TRUE, cli.dynamic = TRUE)
  expect_true(progress_enabled())
  expect_true(progress_wanted(65 * 2^20))
  # Output to a file or a pipe would keep every update as a line.
  withr::with_options(list(cli.dynamic = FALSE), expect_false(progress_wanted(65 * 2^20)))
  expect_false(progress_wanted(c(32, 31) * 2^20))
  withr::local_options(safetensors.progress = FALSE)
  expect_false(progress_enabled())
  expect_false(progress_wanted(1e12))
  withr::local_options(safetensors.progress = TRUE, rlang_interactive = FALSE)
  expect_false(progress_wanted(1e12))
})

test_that("is_interactive() decides as rlang::is_interactive() does", {
  cases <- expand.grid(
    opt = c(NA, TRUE, FALSE), knitr = c(FALSE, TRUE), notebook = c(FALSE, TRUE), testthat = c("", "true"),
    stringsAsFactors = FALSE
  )
  for (k in seq_len(nrow(cases))) {
    cs <- cases[k, ]
    withr::local_options(
      rlang_interactive = if (is.na(cs$opt)) NULL else cs$opt,
      knitr.in.progress = cs$knitr,
      rstudio.notebook.executing = cs$notebook
    )
    withr::local_envvar(TESTTHAT = cs$testthat)
    expect_identical(is_interactive(), rlang::is_interactive(), label = paste(unlist(cs), collapse = " "))
    if (is.na(cs$opt) && !cs$knitr && !cs$notebook && cs$testthat == "") {
      expect_identical(is_interactive(), interactive())
    }
  }
})

test_that("a load in pieces returns what the one-call load returns", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(progress_tensors(), path, metadata = list(k = "v"), dtype = c(d = "BF16", b = "I16"))
  fast <- safe_load_file(path)
  fast_sub <- safe_load_file(path, tensors = c("d", "a", "e"))
  fast_raw <- safe_load_file(path, framework = "raw", backend = "mmap")
  local_progress()
  n <- count_calls("handle_read_piece_", slow <- safe_load_file(path))
  expect_gt(n, 2)
  expect_identical(slow, fast)
  expect_identical(safe_load_file(path, tensors = c("d", "a", "e")), fast_sub)
  expect_identical(safe_load_file(path, framework = "raw", backend = "mmap"), fast_raw)
  # Every dtype and layout, read in pieces of rows.
  all <- list(
    f64 = array(seq(-1, 1, length.out = 120), c(4, 5, 6)), i64 = as.numeric(-20:20),
    u8 = array(as.raw(0:59), c(3, 20)), b = rep(c(TRUE, FALSE, TRUE), 30), c = complex(real = 1:40, imaginary = -1),
    i32 = matrix(c(1L, -2147483647L, 3:60), 6)
  )
  path2 <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(all, path2, dtype = c(i64 = "I64", b = "BOOL"))
  withr::with_options(list(safetensors.progress = FALSE), want <- suppressWarnings(safe_load_file(path2, int64 = "character")))
  expect_gt(count_calls("handle_read_piece_", got <- suppressWarnings(safe_load_file(path2, int64 = "character"))), 10)
  expect_identical(got, want)
})

test_that("the bar moves within a tensor larger than a group", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  # Two tensors of 8000 bytes each, in groups of 1000 bytes: rows of them.
  x <- list(a = matrix(as.numeric(1:1000), 100), b = matrix(as.numeric(1:1000), 10))
  safe_save_file(x, path)
  local_progress(group = 1000)
  updates <- count_calls("cli_progress_update", y <- safe_load_file(path), ns = "cli")
  expect_gte(updates, 16)
  expect_identical(lapply(y, as.vector), lapply(x, as.vector))
  h <- safe_open(path)
  on.exit(close(h), add = TRUE)
  expect_gte(count_calls("cli_progress_update", as.list(h), ns = "cli"), 16)
})

test_that("a small load takes the one-call path even when a bar may be shown", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(progress_tensors(), path)
  local_progress(group = 1e6)
  expect_equal(count_calls("handle_read_piece_", safe_load_file(path)), 0)
  expect_equal(count_calls("load_file_", safe_load_file(path)), 1)
})

test_that("loads in pieces report errors as the one-call load does", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(progress_tensors(), path)
  local_progress()
  expect_error(safe_load_file(path, tensors = "nope"), class = "safetensors_error_tensor_not_found")
  expect_error(safe_load_file(path, device = "cpu"), class = "safetensors_error_invalid_argument")
  bytes <- readBin(path, "raw", file.size(path))
  writeBin(bytes[seq_len(length(bytes) - 1)], path)
  expect_error(safe_load_file(path), class = "safetensors_error_incomplete_buffer")
})

test_that("a sharded checkpoint loads the same with a bar", {
  dir <- withr::local_tempdir()
  index <- safe_save_file(progress_tensors(), file.path(dir, "model.safetensors"), max_shard_size = 300)
  fast <- safe_load_file(index)
  local_progress()
  n <- count_calls("handle_read_piece_", slow <- safe_load_file(index))
  expect_gt(n, length(list.files(dir, "-of-")))
  expect_identical(slow, fast)
})

test_that("a streaming save writes the bytes of the one-call save", {
  x <- progress_tensors()
  path <- withr::local_tempfile(fileext = ".safetensors")
  fast <- withr::local_tempfile(fileext = ".safetensors")
  raw_tensor <- safe_load_file(fixture("multi.safetensors"), framework = "raw")[[1]]
  x$r <- raw_tensor
  safe_save_file(x, fast, metadata = list(b = "2", a = "1"), dtype = c(a = "F16"))
  local_progress()
  # The writer takes about progress_group_bytes() per call.
  n <- count_calls("writer_write_", safe_save_file(x, path, metadata = list(b = "2", a = "1"), dtype = c(a = "F16")))
  expect_gt(n, 2)
  expect_identical(readBin(path, "raw", 1e5), readBin(fast, "raw", 1e5))
  # What was loaded saves back to the same bytes.
  again <- withr::local_tempfile(fileext = ".safetensors")
  loaded <- safe_load_file(path)
  safe_save_file(loaded, again, metadata = attr(loaded, "metadata")[["__metadata__"]])
  expect_identical(readBin(again, "raw", 1e5), readBin(fast, "raw", 1e5))
})

test_that("a streaming save of shards writes what the one-call save writes", {
  fast <- withr::local_tempdir()
  slow <- withr::local_tempdir()
  safe_save_file(progress_tensors(), fast, max_shard_size = 300, metadata = list(k = "v"))
  local_progress()
  safe_save_file(progress_tensors(), slow, max_shard_size = 300, metadata = list(k = "v"))
  files <- list.files(fast)
  expect_identical(list.files(slow), files)
  for (f in files) {
    expect_identical(
      readBin(file.path(slow, f), "raw", 1e5), readBin(file.path(fast, f), "raw", 1e5),
      label = f
    )
  }
})

test_that("a streaming save that fails leaves no file and keeps the old one", {
  dir <- withr::local_tempdir()
  path <- file.path(dir, "x.safetensors")
  safe_save_file(list(old = 1:3), path)
  before <- readBin(path, "raw", 1e4)
  local_progress()
  # The second tensor fails to convert after the first was written.
  x <- list(a = seq(0, 1, length.out = 100), b = c(1, 300, 2))
  expect_error(safe_save_file(x, path, dtype = c(b = "I8")), class = "safetensors_error_conversion")
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), "x.safetensors")
  expect_identical(readBin(path, "raw", 1e4), before)
  # Errors found before writing come before any file is created.
  expect_error(
    safe_save_file(list(a = 1:200, b = "x"), file.path(dir, "y.safetensors")),
    class = "safetensors_error_invalid_argument"
  )
  expect_error(
    safe_save_file(list(a = 1:200), file.path(dir, "no", "such", "dir.safetensors")),
    class = "safetensors_error"
  )
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), "x.safetensors")
})

test_that("the bar moves per group of bytes saved and per piece loaded", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  local_progress()
  n <- count_calls("cli_progress_update", safe_save_file(progress_tensors(), path), ns = "cli")
  expect_equal(n, count_calls("writer_write_", safe_save_file(progress_tensors(), path)) - 1)
  n <- count_calls("cli_progress_update", safe_load_file(path), ns = "cli")
  expect_equal(n, count_calls("handle_read_piece_", safe_load_file(path)))
})

test_that("framework tensors save tensor by tensor with the bar, and torch loads with it", {
  registerS3method("safe_tensor_meta", "st_progress_tensor", function(x) list(shape = as.list(x$shape), dtype = x$dtype))
  registerS3method("safe_tensor_buffer", "st_progress_tensor", function(x) x$bytes)
  tensors <- progress_tensors()
  raws <- safe_deserialize(safe_serialize(tensors), framework = "raw")
  objs <- lapply(raws, function(r) {
    structure(list(bytes = as.vector(r), dtype = attr(r, "dtype"), shape = attr(r, "shape")), class = "st_progress_tensor")
  })
  want <- safe_serialize(tensors)
  path <- withr::local_tempfile(fileext = ".safetensors")
  local_progress()
  safe_save_file(objs, path)
  expect_identical(read_bytes(path), want)

  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed(), "LibTorch is not installed")
  got <- safe_load_file(path, framework = "torch", tensors = c("a", "b", "e"))
  withr::local_options(safetensors.progress = FALSE)
  ref <- safe_load_file(path, framework = "torch", tensors = c("a", "b", "e"))
  for (n in names(ref)) {
    expect_identical(safe_tensor_buffer(got[[n]]), safe_tensor_buffer(ref[[n]]), label = n)
  }
  expect_identical(attributes(got), attributes(ref))
})

test_that("option safetensors.progress_group_bytes sets the group size, and is checked", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- progress_tensors()
  safe_save_file(x, path)
  local_progress(group = 200)
  expect_identical(progress_group_bytes(), 200)
  expect_identical(safe_load_file(path), safe_load_file(path, tensors = names(x)))
  for (bad in list(0, -1, NA_real_, "64MB", c(1, 2), TRUE)) {
    withr::local_options(safetensors.progress_group_bytes = bad)
    expect_error(safe_load_file(path), class = "safetensors_error_invalid_argument")
    expect_error(safe_save_file(x, path), class = "safetensors_error_invalid_argument")
  }
  withr::local_options(safetensors.progress_group_bytes = "64MB")
  expect_snapshot(error = TRUE, progress_group_bytes())
  # Unset, it is 64 MiB; without a bar it is never read.
  withr::local_options(safetensors.progress_group_bytes = NULL)
  expect_identical(progress_group_bytes(), 64 * 2^20)
  withr::local_options(safetensors.progress = FALSE, safetensors.progress_group_bytes = "64MB")
  expect_no_error(safe_load_file(path))
})
