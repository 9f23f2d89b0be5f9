# Large reads and writes are split between threads (option
# `safetensors.threads`); the result must not depend on how many.

# Tensors big enough to be split into several jobs and blocks (more than
# 4 MiB in total, tensors of more than 1 MiB), of several dtypes, shapes
# and layouts, plus small ones read in spans.
thread_tensors <- function() withr::with_seed(42, {
  list(
    m64 = matrix(rnorm(700 * 513), 700, 513),
    m32 = as_loaded_dtype(array(rnorm(33 * 70 * 301), c(33, 70, 301)), "F32"),
    f16 = as_loaded_dtype(matrix(round(rnorm(1000 * 300), 2), 1000, 300), "BF16"),
    ints = array(sample.int(1e6, 17 * 3 * 40000, replace = TRUE), c(17, 3, 40000)),
    flat = runif(600000),
    lgl = matrix(rep_len(c(TRUE, FALSE, TRUE), 2000 * 700), 2000, 700),
    bytes = structure(matrix(as.raw(0:255), 1024, 2050), dtype = "U8"),
    small = matrix(1:6, 2, 3),
    scalar = structure(2.5, shape = integer(0))
  )
})

with_threads <- function(n, code) {
  old <- options(safetensors.threads = n)
  on.exit(options(old))
  force(code)
}

test_that("loading gives the same result on 1, 2 and 3 threads", {
  x <- thread_tensors()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  bytes <- readBin(path, "raw", file.size(path))
  ref <- with_threads(1, safe_load_file(path))
  expect_equal(unclass(ref$m64), x$m64, ignore_attr = TRUE)
  expect_identical(as.vector(ref$ints), as.vector(x$ints))
  expect_identical(dim(ref$m32), c(33L, 70L, 301L))
  for (n in c(2, 3)) {
    expect_identical(with_threads(n, safe_load_file(path)), ref)
    expect_identical(with_threads(n, safe_load_file(path, backend = "mmap")), ref)
    expect_identical(with_threads(n, safe_deserialize(bytes)), ref)
    expect_identical(
      with_threads(n, safe_load_file(path, framework = "raw")),
      with_threads(1, safe_load_file(path, framework = "raw"))
    )
    expect_identical(
      with_threads(n, safe_load_file(path, tensors = c("ints", "m64"))),
      with_threads(1, safe_load_file(path, tensors = c("ints", "m64")))
    )
  }
})

test_that("saving writes the same bytes on 1, 2 and 3 threads", {
  x <- thread_tensors()
  ref <- with_threads(1, safe_serialize(x))
  path <- withr::local_tempfile(fileext = ".safetensors")
  for (n in c(1, 2, 3)) {
    expect_identical(with_threads(n, safe_serialize(x)), ref)
    with_threads(n, safe_save_file(x, path))
    expect_identical(readBin(path, "raw", file.size(path)), ref)
    with_threads(n, safe_save_file(x, path, sync = FALSE))
    expect_identical(readBin(path, "raw", file.size(path)), ref)
  }
})

test_that("a value that can't be converted is the first in R's order, on any number of threads", {
  x <- matrix(as.double(seq_len(600 * 700) %% 100), 600, 700)
  x[599, 650] <- 300
  x[3, 700] <- -1
  x[500, 2] <- 1.5
  for (n in c(1, 2, 3)) {
    err <- with_threads(n, tryCatch(safe_serialize(list(x = x), dtype = "U8"), error = identity))
    expect_s3_class(err, "safetensors_error_conversion")
    # x[500, 2] is element 1100 in column-major order, before the others.
    expect_match(conditionMessage(err), "element 1100 ", fixed = TRUE)
  }
})

test_that("I32 holding NA's bit pattern comes back as double on any number of threads", {
  x <- array(as.double(1:(40 * 50 * 600)), c(40, 50, 600))
  x[7, 8, 500] <- -2147483648
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(x = x), path, dtype = "I32")
  for (n in c(1, 2)) {
    expect_warning(y <- with_threads(n, safe_load_file(path)), class = "safetensors_warning_type")
    expect_type(y$x, "double")
    expect_identical(as.vector(y$x), as.vector(x))
  }
})

test_that("the `safetensors.threads` option must be a positive whole number", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(a = 1:3), path)
  for (bad in list(0, -1, 1.5, NA, "2", c(1, 2))) {
    expect_error(
      with_threads(bad, safe_load_file(path)),
      class = "safetensors_error_invalid_argument"
    )
    expect_error(
      with_threads(bad, safe_save_file(list(a = 1), path)),
      class = "safetensors_error_invalid_argument"
    )
  }
  expect_identical(with_threads(NULL, safe_load_file(path))$a, structure(1:3, dim = 3L, dtype = "I32"))
})
