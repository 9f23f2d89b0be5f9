# The tensors' description for the write engine, and the writer driven
# from R (R/write.R, src/rust/src/write.rs).

test_that("tensors are described by name, in the engine's named form", {
  spec <- tensor_spec(
    list(a = matrix(1:6, 2), b = structure(as.raw(1:4), dtype = "F16", shape = 2L), s = structure(2, shape = integer(0))),
    dtype = c(s = "F32"), metadata = list(k = "v")
  )
  expect_named(spec, c("tensors", "names", "dtypes", "shapes", "kinds", "exact", "metadata", "from"))
  expect_identical(spec$names, c("a", "b", "s"))
  expect_identical(spec$dtypes, c("I32", "F16", "F32"))
  expect_identical(spec$shapes, list(c(2L, 3L), 2, integer(0)))
  expect_identical(spec$kinds, c("values", "bytes", "values"))
  # The dtype of the bytes given, which the engine converts from.
  expect_identical(spec$from, c("", "F16", ""))
  expect_identical(tensor_spec(list(b = structure(as.raw(1:4), dtype = "F16", shape = 2L)), "F32", NULL)$from, "F16")
  expect_identical(spec$metadata, c(k = "v"))
  expect_identical(spec_sizes(spec), c(24, 4, 4))
  sub <- spec_subset(spec, c(3, 1))
  expect_identical(sub$names, c("s", "a"))
  expect_identical(sub$metadata, spec$metadata)
  expect_null(tensor_spec(list(), NULL, NULL)$metadata)
})

test_that("the writer checks its use and cleans up after itself", {
  dir <- withr::local_tempdir()
  path <- file.path(dir, "w.safetensors")
  spec <- tensor_spec(list(a = 1:3, b = c(0.5, 1)), NULL, NULL)
  open_writer <- function() writer_open_(spec, "file", path, TRUE, 0L)
  w <- open_writer()
  # The target appears only on commit (the data go to a temporary file,
  # which may be anonymous).
  expect_false(file.exists(path))
  # Bytes for a tensor whose values the writer converts itself.
  expect_identical(writer_put_(w, raw(12), 12)$kind, "invalid_argument")
  # An error abandons the save: its temporary file is gone.
  expect_length(list.files(dir, all.files = TRUE, no.. = TRUE), 0)
  expect_identical(writer_commit_(w)$kind, "closed")
  expect_false(writer_abort_(w))

  # A commit before every tensor was written.
  w <- open_writer()
  state <- writer_write_(w, 0)
  # The F64 tensor's bytes come first (they have the larger alignment).
  expect_identical(state$current, 2)
  expect_identical(writer_commit_(w)$kind, "invalid_argument")
  expect_length(list.files(dir, all.files = TRUE, no.. = TRUE), 0)

  w <- open_writer()
  header <- writer_write_(w, 0)$written
  state <- writer_write_(w, Inf)
  expect_identical(state$current, 0)
  size <- writer_commit_(w)
  expect_identical(size, file.size(path))
  expect_identical(state$written, size)
  expect_identical(size - header, 12 + 16)
  expect_identical(as.vector(safe_load_file(path)$b), c(0.5, 1))
  expect_false(writer_abort_(w))
  expect_identical(writer_commit_(w)$kind, "closed")
  expect_false(writer_abort_(list()))

  # The same tensors into a raw vector.
  w <- writer_open_(spec, "raw", "", FALSE, 0L)
  writer_write_(w, 1)
  writer_write_(w, Inf)
  expect_identical(writer_commit_(w), read_bytes(path))

  # A writer dropped without a commit removes its temporary file when
  # garbage-collected, and the target keeps its old content.
  before <- readBin(path, "raw", 1e4)
  w <- open_writer()
  writer_write_(w, 1)
  rm(w)
  gc()
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), "w.safetensors")
  expect_identical(readBin(path, "raw", 1e4), before)
})

test_that("a connection gets nothing when a value can't be converted", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  writeLines("keep", path)
  con <- file(path)
  withr::defer(close(con))
  expect_error(
    write_spec(tensor_spec(list(a = c(1, 300)), "I8", NULL), "connection", con),
    class = "safetensors_error_conversion"
  )
  # Not opened, so not emptied.
  expect_identical(readLines(path), "keep")
})

test_that("a save's progress bar moves within one large tensor", {
  withr::local_options(
    rlang_interactive = TRUE, safetensors.progress = TRUE, safetensors.progress_group_bytes = 2^20,
    cli.progress_show_after = 0, cli.dynamic = TRUE
  )
  withr::local_message_sink(withr::local_tempfile())
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- list(w = matrix(runif(2^20), 1024)) # 8 MiB, one tensor
  updates <- 0
  bump <- function() updates <<- updates + 1
  suppressMessages(trace("cli_progress_update", call("(", as.call(list(bump))), print = FALSE, where = asNamespace("cli")))
  withr::defer(suppressMessages(untrace("cli_progress_update", where = asNamespace("cli"))))
  safe_save_file(x, path)
  expect_gte(updates, 4)
  expect_identical(safe_load_file(path)$w, structure(x$w, dtype = "F64"))
})

test_that("NA and NaN in doubles are named as such when a dtype has no code for them", {
  expect_snapshot(error = TRUE, {
    safe_serialize(list(x = c(1, NA)), dtype = "I32")
    safe_serialize(list(x = matrix(c(1, 2, NaN, 4), 2)), dtype = "I16")
    safe_serialize(list(x = c(0.5, NA)), dtype = "F4")
    safe_serialize(list(x = c(1, NA)), dtype = "BOOL")
    safe_serialize(list(x = c(1L, NA)), dtype = "I32")
    safe_serialize(list(x = c(1, 300)), dtype = "U8")
  })
})
