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
  expect_identical(writer_put_(w, raw(12), 12, FALSE)$kind, "invalid_argument")
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

# Two framework tensors (written with writer_put_()) around an R vector.
later_spec <- function() {
  registerS3method("safe_tensor_meta", "st_test_later", function(x) list(shape = list(length(x$bytes)), dtype = "U8"))
  registerS3method("safe_tensor_buffer", "st_test_later", function(x) x$bytes)
  later <- function(bytes) structure(list(bytes = bytes), class = "st_test_later")
  x <- list(a = later(as.raw(1:5)), v = c(1.5, 2), b = later(as.raw(11:13)))
  list(x = x, spec = tensor_spec(x, NULL, NULL), bytes = safe_serialize(x))
}

# Drives writer `w` to the end, putting each framework tensor's bytes in
# pieces of `piece` bytes (detached or not); returns what commit returns.
drive_writer <- function(w, x, detach, piece = 2) {
  repeat {
    i <- writer_write_(w, Inf)$current
    if (i == 0) break
    b <- x[[i]]$bytes
    for (s in seq(1, length(b), by = piece)) {
      # A new vector each time: the detached put keeps it referenced.
      state <- writer_put_(w, b[s:min(length(b), s + piece - 1)], min(piece, length(b) - s + 1), detach)
      expect_false(inherits(state, "safetensors_rust_error"))
      if (detach) expect_identical(state$current, NA_real_)
    }
  }
  writer_commit_(w)
}

test_that("puts on a helper thread write the same file, and their errors come with the next call", {
  t <- later_spec()
  dir <- withr::local_tempdir()
  path <- file.path(dir, "d.safetensors")
  for (detach in c(FALSE, TRUE)) {
    expect_identical(drive_writer(writer_open_(t$spec, "file", path, FALSE, 0L), t$x, detach), as.numeric(length(t$bytes)))
    expect_identical(read_bytes(path), t$bytes)
    expect_identical(drive_writer(writer_open_(t$spec, "raw", "", FALSE, 0L), t$x, detach), t$bytes)
  }
  # More bytes than the tensor has: the detached put fails on its thread,
  # and the next call says so and abandons the save.
  w <- writer_open_(t$spec, "file", file.path(dir, "e.safetensors"), FALSE, 0L)
  writer_write_(w, Inf)
  expect_false(inherits(writer_put_(w, as.raw(1:9), 9, TRUE), "safetensors_rust_error"))
  expect_identical(writer_write_(w, Inf)$kind, "invalid_argument")
  expect_identical(writer_commit_(w)$kind, "closed")
  expect_identical(list.files(dir), "d.safetensors")
  # A save dropped with a put in flight waits for it.
  w <- writer_open_(t$spec, "file", file.path(dir, "f.safetensors"), FALSE, 0L)
  writer_write_(w, Inf)
  writer_put_(w, as.raw(1:5), 5, TRUE)
  rm(w)
  gc()
  expect_identical(list.files(dir), "d.safetensors")
})

test_that("a stream writer goes on in place in its file", {
  t <- later_spec()
  path <- withr::local_tempfile(fileext = ".safetensors")
  w <- writer_open_(t$spec, "stream", "", FALSE, 0L)
  header <- writer_take_(w)
  writeBin(c(charToRaw("before"), header), path)
  at <- 6 + length(header)
  # Not a regular file of that size: an error, and the writer stays a stream.
  expect_identical(writer_place_(w, path, at + 1, FALSE)$kind, "io")
  expect_identical(writer_place_(w, dirname(path), 0, FALSE)$kind, "io")
  expect_null(writer_place_(w, path, at, TRUE))
  expect_identical(writer_place_(w, path, at, FALSE)$kind, "invalid_argument")
  expect_identical(drive_writer(w, t$x, TRUE), as.numeric(length(t$bytes)))
  expect_identical(read_bytes(path), c(charToRaw("before"), t$bytes))
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
