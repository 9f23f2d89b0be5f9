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
  err <- expect_error(f("x"), class = "safetensors_error_invalid_argument")
  expect_identical(conditionCall(err), quote(f("x")))
})

test_that("check_string() and check_bool() name the caller's argument and call", {
  f <- function(name, flag) {
    check_string(name)
    check_bool(flag)
  }
  err <- expect_error(f(1, TRUE), class = "safetensors_error_invalid_argument")
  expect_match(cli::ansi_strip(conditionMessage(err)), "`name` must be a single string, not the number 1.", fixed = TRUE)
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

test_that("value_friendly() quotes short values and names the type of others", {
  expect_identical(value_friendly(0), "the number 0")
  expect_identical(value_friendly(-1L), "the number -1")
  expect_identical(value_friendly(1.5), "the number 1.5")
  expect_identical(value_friendly(NaN), "the number NaN")
  expect_identical(value_friendly("bogus"), "the string \"bogus\"")
  expect_identical(value_friendly(""), "the string \"\"")
  expect_identical(value_friendly(TRUE), "`TRUE`")
  expect_identical(value_friendly(NA), "`NA`")
  expect_identical(value_friendly(NA_real_), "`NA`")
  expect_identical(value_friendly(NA_character_), "`NA`")
  expect_identical(value_friendly(NULL), "`NULL`")
  expect_identical(value_friendly(c(1, 2)), "a double vector")
  expect_identical(value_friendly(strrep("x", 100)), "a string")
  expect_identical(value_friendly(matrix(1)), "a double matrix")
  expect_identical(value_friendly(list(1)), "a list")
  expect_identical(value_friendly(factor("a")), "a <factor> object")
})

test_that("closest_name() finds the choice a value was probably meant to be", {
  choices <- c("read", "mmap")
  expect_identical(closest_name("Read", choices), "read")
  expect_identical(closest_name("m", choices), "mmap")
  expect_identical(closest_name("mmp", choices), "mmap")
  expect_null(closest_name("mmpa", choices))
  expect_null(closest_name("bogus", choices))
  expect_null(closest_name("x", c("r", "raw")))
  expect_null(closest_name("", choices))
  expect_null(closest_name(1, choices))
  expect_identical(closest_name("tensor", c("path", "framework", "tensors", "backend")), "tensors")
  expect_identical(closest_name("Torch", c("r", "raw", "torch")), "torch")
  expect_identical(or_list(c("a", "b", "c")), "a, b or c")
  expect_identical(or_list("a"), "a")
})

test_that("argument errors quote the value given and suggest the choice meant", {
  f <- function(backend = c("read", "mmap")) arg_choice(backend, c("read", "mmap"))
  expect_snapshot(error = TRUE, {
    f("bogus")
    f("Read")
    f("m")
    f("{x}")
    f(1)
    f(c("read", "x"))
    safe_load_file(raw(8), backend = "bogus")
    safe_open(raw(8), backend = "Read")
  })
})

test_that("a bad option safetensors.threads is quoted, with what to set instead", {
  x <- list(a = 1)
  withr::local_options(safetensors.threads = 0)
  expect_snapshot(safe_serialize(x), error = TRUE)
  withr::local_options(safetensors.threads = "2")
  expect_snapshot(safe_serialize(x), error = TRUE)
})

test_that("check_string() and check_bool() quote short values", {
  f <- function(name, flag) {
    check_string(name)
    check_bool(flag)
  }
  expect_snapshot(error = TRUE, {
    f(1, TRUE)
    f(c("a", "b"), TRUE)
    f("a", "yes")
    f("a", NA)
  })
})

test_that("an argument too many or one left out is a classed error citing the function", {
  p <- system.file("extdata", "example.safetensors", package = "safetensors")
  expect_snapshot(error = TRUE, {
    safe_info(p, "extra")
    safe_info(p, tensors = "bias")
    safe_metadata(p, "extra", 2)
    safe_summary(p, 1, "extra")
    safe_info()
    safe_save_file(list(a = 1))
    safe_slice(p)
  })
  for (cl in alist(safe_info(p, "extra"), safe_metadata(p, x = 1), safe_summary(p, 1, 2), safe_info(), safe_slice(p))) {
    e <- expect_error(eval(cl), class = "safetensors_error_invalid_argument")
    expect_identical(conditionCall(e), cl)
  }
  # Arguments named in `.allow` pass.
  f <- function(...) check_dots_empty(..., .allow = "framework")
  expect_null(f(framework = "torch"))
  expect_error(f("torch"), class = "safetensors_error_invalid_argument")
  g <- function(x) check_required(x)
  expect_null(g(1))
})

