# Size limits: headers at the 100,000,000-byte limit, files over 4 GiB,
# tensors over 2^31 elements, dimensions R can't hold, and tensors larger
# than memory. The sparse files cost no disk; tests that allocate gigabytes
# are opt-in (SAFETENSORS_TEST_LARGE=true).

test_that("a header of exactly 100,000,000 bytes is accepted, one more is not", {
  skip_on_cran()
  for (n in c(1e8, 1e8 + 1)) {
    path <- withr::local_tempfile(fileext = ".safetensors")
    con <- file(path, "wb")
    writeBin(c(u64_le(n), charToRaw("{}")), con)
    writeBin(rep(charToRaw(" "), n - 2), con)
    close(con)
    expect_identical(file.size(path), 8 + n)
    if (n == 1e8) {
      expect_length(safe_load_file(path), 0)
    } else {
      expect_error(safe_load_file(path), class = "safetensors_error_header_too_large")
    }
  }
})

test_that("a dimension over .Machine$integer.max is a clear error; raw reads it", {
  # A zero-size tensor with a huge first dimension: valid, and free.
  big <- 2^31
  bytes <- st_bytes(obj(entry("w", "U8", c(big, 0), 0, 0)))
  err <- expect_error(safe_deserialize(bytes), class = "safetensors_error_unsupported")
  expect_match(conditionMessage(err), "integer.max")
  expect_identical(err$tensor, "w")
  x <- safe_deserialize(bytes, framework = "raw")$w
  expect_identical(attr(x, "shape"), c(big, 0))
  expect_length(x, 0)
})

test_that("files over 4 GiB work (sparse file)", {
  skip_on_cran()
  skip_on_os("windows")
  big <- 4.5 * 2^30
  json <- obj(entry("big", "U8", big, 0, big), entry("tail", "I32", 4, big, big + 16))
  path <- local_sparse_file(json, big + 16, tail = writeBin(c(1L, -2L, 3L, .Machine$integer.max), raw()))
  for (backend in c("read", "mmap")) {
    x <- safe_load_file(path, tensors = "tail", backend = backend)
    expect_identical(x$tail, structure(c(1L, -2L, 3L, .Machine$integer.max), dim = 4L, dtype = "I32"))
    expect_identical(attr(x, "metadata")$tail$data_offsets, c(big, big + 16))
    expect_identical(attr(x, "max_offset"), file.size(path))
  }
})

test_that("a tensor larger than memory fails before anything is allocated", {
  skip_on_cran()
  skip_on_os("windows")
  # 1 TiB of F64, a sparse file: no machine running these tests has that
  # much memory free.
  shape <- c(2^20, 2^17)
  n <- prod(shape)
  path <- local_sparse_file(obj(entry("huge", "F64", shape, 0, 8 * n)), 8 * n)
  used <- gc(reset = TRUE)["Vcells", "used"]
  for (backend in c("read", "mmap")) {
    expect_error(safe_load_file(path, backend = backend), class = "safetensors_error_memory")
    expect_error(safe_load_file(path, backend = backend, framework = "raw"), class = "safetensors_error_memory")
  }
  # R's heap never held more than a few MB beyond what it did before (a
  # Vcell is 8 bytes).
  expect_lt(gc()["Vcells", "max used"] - used, 2^20)
})

test_that("an allocation R refuses is an R error, not an abort", {
  skip_on_cran()
  skip_if_not(Sys.info()[["sysname"]] == "Linux", "uses ulimit -v")
  # 4 GiB of doubles: within the free memory the check reads from
  # /proc/meminfo (if the machine has it), beyond the process's address
  # space limit of 3 GiB, so R's own allocation fails.
  n <- 2^29
  path <- local_sparse_file(obj(entry("x", "F64", n, 0, 8 * n)), 8 * n)
  out <- run_limited_r("ulimit -v 3145728", c(
    "library(safetensors)",
    sprintf("res <- tryCatch(safe_load_file(%s), error = function(e) e)", deparse1(path)),
    "cat('CLASS', class(res), '\\n')",
    "cat('MESSAGE', conditionMessage(res), '\\n')",
    "cat('ALIVE', sum(1:10), '\\n')"
  ))
  class_line <- grep("^CLASS", out, value = TRUE)
  expect_length(class_line, 1)
  expect_match(class_line, "safetensors_error_memory")
  expect_true(any(grepl("^ALIVE 55", out)), info = paste(out, collapse = "\n"))
})

test_that("a tensor over 2^31 elements loads as a long raw vector", {
  skip_if_not_large()
  skip_if_memory_below(4)
  n <- 2^31 + 8
  path <- local_sparse_file(obj(entry("x", "U8", n, 0, n)), n, tail = as.raw(1:8))
  for (backend in c("read", "mmap")) {
    x <- safe_load_file(path, framework = "raw", backend = backend)$x
    expect_identical(length(x), n)
    expect_identical(x[c(1, n - 7, n)], as.raw(c(0, 1, 8)))
    expect_identical(attr(x, "shape"), n)
    rm(x)
    gc()
  }
  # A 1-D tensor that long can't have an R `dim`.
  expect_error(safe_load_file(path), class = "safetensors_error_unsupported")
})

test_that("a tensor over 2^31 elements loads as an R integer array", {
  skip_if_not_large()
  skip_if_memory_below(12)
  shape <- c(2, 2^30 + 4)
  n <- prod(shape)
  path <- local_sparse_file(obj(entry("x", "U8", shape, 0, n)), n, tail = as.raw(1:8))
  x <- safe_load_file(path)$x
  expect_identical(dim(x), as.integer(shape))
  expect_identical(length(x), n)
  expect_type(x, "integer")
  # The last row-major bytes are the end of row 2.
  expect_identical(x[2, shape[[2]] - 0:7], 8:1)
  expect_identical(x[1, shape[[2]]], 0L)
  rm(x)
  gc()
})

test_that("a long vector saves and loads back", {
  skip_if_not_large()
  skip_if_memory_below(10)
  n <- 2^31 + 8
  x <- raw(n)
  x[n - 0:7] <- as.raw(1:8)
  attr(x, "dtype") <- "U8"
  attr(x, "shape") <- n
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(x = x), path)
  rm(x)
  gc()
  expect_gt(file.size(path), 2^31)
  y <- safe_load_file(path, framework = "raw")$x
  expect_identical(length(y), n)
  expect_identical(y[n - 0:7], as.raw(1:8))
})
