# A file whose header lists tensors in another order than their bytes, with
# the metadata in the middle, as other writers may produce.
unsorted_file <- function() {
  json <- paste0(
    "{\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[8,16]},",
    "\"__metadata__\":{\"format\":\"pt\"},",
    "\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}"
  )
  header <- charToRaw(json)
  c(
    writeBin(length(header), raw(), size = 4, endian = "little"), raw(4),
    header,
    writeBin(1.5, raw(), endian = "little"),
    writeBin(c(7L, -7L), raw(), size = 4, endian = "little")
  )
}

test_that("the 0.2.x fields and methods work as before", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- list(w = matrix(as.numeric(1:6), 2), b = 1:3)
  safe_save_file(x, path, metadata = list(format = "pt"))
  eager <- safe_load_file(path)
  f <- safetensors$new(path, framework = "r")
  expect_s3_class(f, c("safetensors", "R6"))
  expect_identical(f$keys(), c("w", "b"))
  expect_identical(setdiff(f$keys(), "__metadata__"), c("w", "b"))
  expect_identical(f$metadata, attr(eager, "metadata"))
  expect_identical(f$metadata[["__metadata__"]], list(format = "pt"))
  expect_identical(f$framework, "r")
  expect_identical(f$args, list())
  expect_null(f$con)
  expect_identical(f$max_offset, 0L)
  expect_identical(f$get_tensor("b"), eager$b)
  expect_identical(f$max_offset, attr(safe_load_file(path, tensors = "b"), "max_offset"))
  expect_identical(f$get_tensor("w"), eager$w)
  expect_identical(f$max_offset, file.size(path))
  expect_error(f$get_tensor("nope"), class = "safetensors_error_tensor_not_found")
  expect_error(f$get_tensor(1), class = "safetensors_error_invalid_argument")
  # framework defaults to "r"
  expect_identical(safetensors$new(path)$get_tensor("w"), eager$w)
})

test_that("keys() follow the header's order; metadata is the whole header", {
  bytes <- unsorted_file()
  f <- safetensors$new(bytes, framework = "r")
  expect_identical(f$keys(), c("b", "a"))
  expect_identical(names(f$metadata), c("b", "__metadata__", "a"))
  expect_identical(f$metadata$a, list(dtype = "F64", shape = list(), data_offsets = c(0L, 8L)))
  expect_identical(as.vector(f$get_tensor("a")), 1.5)
  expect_identical(as.vector(f$get_tensor("b")), c(7L, -7L))
})

test_that("raw vectors and open connections are accepted, and connections kept", {
  bytes <- unsorted_file()
  con <- rawConnection(bytes, "rb")
  withr::defer(close(con))
  f <- safetensors$new(con, framework = "raw")
  expect_identical(f$con, con)
  expect_true(isOpen(con))
  b <- f$get_tensor("b")
  expect_identical(as.vector(b), bytes[(length(bytes) - 7):length(bytes)])
  expect_identical(attr(b, "dtype"), "I32")
})

test_that("framework constructors get (raw, meta, !!!args) as in 0.2.x", {
  withr::defer(rm("capture", envir = safetensors_frameworks))
  safetensors_frameworks[["capture"]] <- list(
    constructor = function(raw, meta, ...) list(raw = raw, meta = meta, args = list(...)),
    packages = character()
  )
  bytes <- unsorted_file()
  f <- safetensors$new(bytes, device = "cpu", framework = "capture")
  expect_identical(f$args, list(device = "cpu"))
  got <- f$get_tensor("b")
  expect_identical(got$raw, writeBin(c(7L, -7L), raw(), size = 4, endian = "little"))
  expect_identical(got$meta, f$metadata$b)
  expect_identical(got$args, list(device = "cpu"))
  expect_error(safetensors$new(bytes, framework = "nope"), class = "safetensors_error_unknown_framework")
  expect_error(safetensors$new(bytes, device = "cpu", framework = "r"), class = "safetensors_error_invalid_argument")
})

test_that("torch tensors come back through the 0.2.x class", {
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed())
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(x = structure(matrix(as.numeric(1:6), 2), dtype = "F32")), path)
  f <- safetensors$new(path, framework = "torch")
  x <- f$get_tensor("x")
  expect_true(inherits(x, "torch_tensor"))
  expect_identical(as.array(x), matrix(as.numeric(1:6), 2))
})
