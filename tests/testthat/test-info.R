test_that("safe_info() describes every tensor with absolute offsets", {
  bytes <- hand_made()
  info <- safe_info(bytes)
  expect_s3_class(info, "data.frame")
  expect_named(info, c("name", "dtype", "shape", "numel", "bytes", "begin", "end"))
  expect_identical(info$name, c("a", "b"))
  expect_identical(info$dtype, c("F64", "I32"))
  expect_identical(unclass(info$shape), list(integer(0), 2L))
  expect_identical(info$numel, c(1, 2))
  expect_identical(info$bytes, c(8, 8))
  n <- readBin(bytes[1:4], "integer", size = 4, endian = "little")
  expect_identical(info$begin, 8 + n + c(0, 8))
  expect_identical(info$end, 8 + n + c(8, 16))
  # The offsets address the tensors' bytes in the file.
  expect_identical(readBin(bytes[(info$begin[[2]] + 1):info$end[[2]]], "integer", 2, size = 4), c(7L, -7L))
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
  expect_identical(info$name, c("a", "b"))
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
  expect_identical(safe_info(con)$name, c("a", "b"))
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
