test_that("option safetensors.threads sets the thread count, and is checked", {
  expect_identical(st_threads(), 0L)
  withr::local_options(safetensors.threads = 1)
  expect_identical(st_threads(), 1L)
  x <- list(a = matrix(as.numeric(1:6), 2), b = 1:3)
  expect_identical(safe_deserialize(safe_serialize(x))$b, structure(array(1:3), dtype = "I32"))
  withr::local_options(safetensors.threads = 1e6)
  expect_identical(st_threads(), 256L)
  for (bad in list(0, 1.5, NA_real_, "2", c(1, 2))) {
    withr::local_options(safetensors.threads = bad)
    expect_error(safe_serialize(x), class = "safetensors_error_invalid_argument")
  }
})
