test_that("safe_info() describes every tensor with absolute offsets", {
  bytes <- hand_made()
  info <- safe_info(bytes)
  expect_s3_class(info, "data.frame")
  expect_named(info, c("name", "dtype", "shape", "numel", "bytes", "begin", "end"))
  # In the order the header lists them (its data come in another order).
  expect_identical(info$name, c("b", "a"))
  expect_identical(info$dtype, c("I32", "F64"))
  expect_identical(unclass(info$shape), list(2L, integer(0)))
  expect_identical(info$numel, c(2, 1))
  expect_identical(info$bytes, c(8, 8))
  n <- readBin(bytes[1:4], "integer", size = 4, endian = "little")
  expect_identical(info$begin, 8 + n + c(8, 0))
  expect_identical(info$end, 8 + n + c(16, 8))
  # The offsets address the tensors' bytes in the file.
  expect_identical(readBin(bytes[(info$begin[[1]] + 1):info$end[[1]]], "integer", 2, size = 4), c(7L, -7L))
})

test_that("safe_info() agrees across paths, raw vectors, connections and handles", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- list(w = matrix(as.numeric(1:6), 2), b = structure(1:3, dtype = "I16"), s = structure(2, shape = integer(0)))
  safe_save_file(x, path, metadata = list(k = "v"))
  bytes <- readBin(path, "raw", file.size(path))
  want <- safe_info(path)
  expect_identical(safe_info(bytes), want)
  expect_identical(safe_info(file(path)), want)
  h <- safe_open(path)
  expect_identical(safe_info(h), want)
  expect_identical(safe_metadata(h), c(k = "v"))
  # data_offsets in the 0.2.x header are relative to the data section.
  offs <- t(vapply(attr(safe_load_file(path), "metadata")[want$name], function(e) as.numeric(e$data_offsets), numeric(2)))
  start <- 8 + readBin(bytes[1:4], "integer", size = 4, endian = "little")
  expect_identical(unname(offs[, 1]) + start, want$begin)
  expect_identical(unname(offs[, 2]) + start, want$end)
})

test_that("a connection is read up to the end of the header only", {
  bytes <- hand_made()
  con <- rawConnection(bytes, "rb")
  withr::defer(close(con))
  info <- safe_info(con)
  expect_identical(info$name, c("b", "a"))
  # What is left in the connection is exactly the data section.
  rest <- readBin(con, "raw", 1000)
  expect_identical(rest, utils::tail(bytes, 16))
})

test_that("safe_metadata() returns a named character vector, or NULL", {
  expect_identical(safe_metadata(hand_made()), c(format = "pt"))
  expect_null(safe_metadata(hand_made(NULL)))
  expect_null(safe_metadata(hand_made("null")))
  empty <- safe_metadata(hand_made("{}"))
  expect_identical(empty, stats::setNames(character(0), character(0)))
  two <- safe_metadata(hand_made("{\"z\":\"1\",\"a\":\"x y\"}"))
  expect_identical(two, c(z = "1", a = "x y"))
})

test_that("safe_info() and safe_metadata() read no tensor data", {
  # A header that promises more data than there is: the eager reader
  # rejects it, the header readers only see the header.
  bytes <- hand_made()
  truncated <- bytes[seq_len(length(bytes) - 16)]
  expect_error(safe_info(truncated), class = "safetensors_error_incomplete_buffer")
  con <- rawConnection(truncated, "rb")
  withr::defer(close(con))
  expect_identical(safe_info(con)$name, c("b", "a"))
})

test_that("malformed headers are classed errors", {
  expect_error(safe_info(raw(3)), class = "safetensors_error_header_too_small")
  expect_error(safe_info(raw(3)), class = "safetensors_error_format")
  expect_error(safe_info(tempfile()), class = "safetensors_error_file_not_found")
  big <- c(writeBin(2e8, raw(), size = 8, endian = "little"))
  con <- rawConnection(big, "rb")
  withr::defer(close(con))
  expect_error(safe_info(con), class = "safetensors_error_header_too_large")
  short_bytes <- c(writeBin(100L, raw(), size = 4, endian = "little"), raw(4), charToRaw("{}"))
  short <- rawConnection(short_bytes, "rb")
  withr::defer(close(short))
  expect_error(safe_info(short), class = "safetensors_error_invalid_header_length")
  bad_bytes <- c(writeBin(2L, raw(), size = 4, endian = "little"), raw(4), charToRaw("[]"))
  bad <- rawConnection(bad_bytes, "rb")
  withr::defer(close(bad))
  expect_error(safe_metadata(bad), class = "safetensors_error_invalid_header")
  expect_error(safe_info(list()), class = "safetensors_error_invalid_argument")
  expect_snapshot(safe_info(raw(3)), error = TRUE)
})

test_that("safe_info() agrees with Python's header", {
  skip_without_python()
  path <- withr::local_tempfile(fileext = ".safetensors")
  run_python(c(
    "import sys, numpy as np",
    "from safetensors.numpy import save_file",
    "save_file({'x': np.zeros((3, 2), np.float32), 'y': np.arange(5, dtype=np.int64),",
    "           'z': np.array(1.5, np.float16)}, sys.argv[1], metadata={'m': 'n'})"
  ), path)
  info <- safe_info(path)
  out <- run_python(c(
    "import sys, json",
    "from safetensors import safe_open",
    "with safe_open(sys.argv[1], 'np') as f:",
    "    for k in f.offset_keys():",
    "        s = f.get_slice(k)",
    "        print(k, s.get_dtype(), json.dumps(s.get_shape()), sep='\\t')",
    "    print(json.dumps(f.metadata()))"
  ), path)
  py <- strsplit(out[seq_len(nrow(info))], "\t", fixed = TRUE)
  expect_identical(info$name, vapply(py, `[[`, "", 1))
  expect_identical(info$dtype, vapply(py, `[[`, "", 2))
  expect_identical(unclass(info$shape), lapply(py, function(p) as.integer(jsonlite::fromJSON(p[[3]]))))
  expect_identical(safe_metadata(path), unlist(jsonlite::fromJSON(out[[nrow(info) + 1]])))
})

test_that("safe_info() prints shapes and sizes in a table", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- list(
    embed.weight = matrix(0, 4, 3),
    embed.bias = numeric(3),
    head = structure(1L, shape = integer(0)),
    none = numeric(0)
  )
  safe_save_file(x, path, dtype = c(embed.weight = "BF16", head = "I64"))
  info <- safe_info(path)
  expect_s3_class(info, c("safetensors_info", "data.frame"), exact = TRUE)
  expect_snapshot({
    info
    print(info, n = 2)
    info[info$dtype == "F64", ]
    info[0, ]
  })
  # Without the columns the table needs, it prints as a data frame.
  expect_snapshot(info[, c("name", "numel")])
  expect_identical(format(info[, c("name", "numel")]), format.data.frame(info[, c("name", "numel")]))
  expect_identical(nrow(as.data.frame(info)), 4L)
})

test_that("safe_info() of a sharded checkpoint names each tensor's shard", {
  dir <- withr::local_tempdir()
  index <- safe_save_file(list(a = 1:10, b = 1:10, c = 1:10), file.path(dir, "model.safetensors"), max_shard_size = 80)
  info <- safe_info(index)
  expect_identical(info$file, sprintf("model-0000%d-of-00002.safetensors", c(1, 1, 2)))
  expect_snapshot(info)
})

test_that("safe_summary() counts parameters and bytes by dtype and module", {
  path <- file.path(withr::local_tempdir(), "model.safetensors")
  x <- list(
    encoder.layer.0.weight = matrix(0, 300, 40),
    encoder.layer.0.bias = numeric(40),
    encoder.layer.1.weight = matrix(0, 40, 40),
    decoder.weight = matrix(0L, 40, 2),
    step = 1L
  )
  safe_save_file(x, path, dtype = c(encoder.layer.0.weight = "F16", decoder.weight = "I64"), metadata = list(format = "pt"))
  s <- safe_summary(path)
  expect_s3_class(s, "safetensors_summary")
  expect_identical(s$tensors, 5L)
  expect_identical(s$parameters, 12000 + 40 + 1600 + 80 + 1)
  expect_identical(s$bytes, 12000 * 2 + 40 * 8 + 1600 * 8 + 80 * 8 + 4)
  expect_identical(s$by_dtype$dtype, c("F16", "F64", "I64", "I32"))
  expect_identical(s$by_dtype$tensors, c(1L, 2L, 1L, 1L))
  expect_identical(s$by_module$module, c("encoder", "decoder", "step"))
  expect_identical(s$by_module$parameters, c(13640, 80, 1))
  expect_identical(sum(s$by_module$bytes), s$bytes)
  expect_identical(safe_summary(path, depth = 3)$by_module$module, c("encoder.layer.0", "encoder.layer.1", "decoder.weight", "step"))
  expect_snapshot({
    s
    safe_summary(path, depth = 2)
    print(s, n = 1)
  })
  h <- safe_open(path)
  withr::defer(close(h))
  expect_identical(summary(h), s)
  expect_identical(summary(h, depth = 2), safe_summary(path, depth = 2))
  expect_identical(safe_summary(readBin(path, "raw", file.size(path)))$by_module, s$by_module)
})

test_that("safe_summary() of an empty file and its argument errors", {
  empty <- safe_summary(safe_serialize(list()))
  expect_identical(empty$tensors, 0L)
  expect_identical(empty$parameters, 0)
  expect_snapshot(empty)
  expect_snapshot(error = TRUE, {
    safe_summary(safe_serialize(list()), depth = 0)
    safe_summary(safe_serialize(list()), depth = "a")
  })
})

test_that("safe_info() and safe_summary() print to fit the width", {
  index <- local_long_names()
  info <- safe_info(index)
  s <- safe_summary(index, depth = 4)
  expect_fits_widths(info)
  expect_fits_widths(s)
  expect_snapshot({
    print(info, width = 40)
    print(info, width = 80)
    print(info, width = 120)
  })
  expect_snapshot({
    print(s, width = 40)
    print(s, width = 120)
  })
})
