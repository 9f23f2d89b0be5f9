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

test_that("a session that only loads and saves doesn't load rlang or cli", {
  skip_on_cran()
  # They load with the first error, warning or progress bar; until then
  # they would only make R's full collections slower.
  loaded <- callr::r(function() {
    library(safetensors)
    f <- tempfile(fileext = ".safetensors")
    x <- list(a = matrix(runif(6), 2), b = 1:5, r = as.raw(1:3))
    safe_save_file(x, f, metadata = list(k = "v"))
    safe_load_file(f)
    safe_load_file(f, backend = "mmap", framework = "raw")
    safe_load_file(safe_serialize(x))
    h <- safe_open(f)
    h[["a"]]
    h$slice("a")[2, ]
    safe_slice(h, "a", , 1:2, drop = FALSE)
    close(h)
    st <- safetensors$new(f)
    st$get_tensor("b")
    st$metadata
    safe_info(f)
    c(rlang = isNamespaceLoaded("rlang"), cli = isNamespaceLoaded("cli"))
  }, libpath = .libPaths())
  expect_identical(loaded, c(rlang = FALSE, cli = FALSE))
})

test_that("arg_choice() takes exact choices and the default's first", {
  f <- function(backend = c("mmap", "read")) arg_choice(backend, c("mmap", "read"))
  expect_identical(f(), "mmap")
  expect_identical(f("read"), "read")
  for (bad in list("Read", "r", "", NA_character_, 1, c("read", "read"), NULL)) {
    expect_error(f(bad), class = "safetensors_error_invalid_argument")
  }
  err <- expect_error(f("x"))
  expect_identical(conditionCall(err), quote(f("x")))
})

test_that("check_string() and check_bool() name the caller's argument and call", {
  f <- function(name, flag) {
    check_string(name)
    check_bool(flag)
  }
  err <- expect_error(f(1, TRUE), class = "safetensors_error_invalid_argument")
  expect_match(cli::ansi_strip(conditionMessage(err)), "`name` must be a single string, not a number.", fixed = TRUE)
  expect_identical(conditionCall(err), quote(f(1, TRUE)))
  err <- expect_error(f("a", NA), class = "safetensors_error_invalid_argument")
  expect_match(cli::ansi_strip(conditionMessage(err)), "`flag` must be `TRUE` or `FALSE`, not `NA`.", fixed = TRUE)
  expect_null(f("a", FALSE))
  # Through the exported functions.
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(m = matrix(1, 2, 2)), path)
  err <- expect_error(safe_slice(path, "m", 1, , drop = "no"), class = "safetensors_error_invalid_argument")
  expect_match(cli::ansi_strip(conditionMessage(err)), "`drop` must be `TRUE` or `FALSE`", fixed = TRUE)
})
