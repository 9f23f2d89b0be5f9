# The tensors users see: framework constructors, warnings, and the loaded
# list with its 0.2.x attributes (R/tensors.R).

test_that("str() and print() of a loaded list sum up the header in one line", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(
    list(w = matrix(c(0.5, 1, 1.5, 2), 2), b = c(1L, 2L), s = structure(3, shape = integer(0))),
    path,
    metadata = list(format = "pt", note = "x")
  )
  x <- safe_load_file(path)
  expect_s3_class(x, c("safetensors_tensors", "list"), exact = TRUE)
  expect_snapshot({
    str(x)
    str(list(model = x, step = 1L))
    x
  })
  expect_snapshot(str(safe_load_file(safe_serialize(list(a = 1)))))
  # The helpers degrade gracefully on lists that lost their attributes.
  y <- x
  attr(y, "metadata") <- NULL
  attr(y, "max_offset") <- NULL
  expect_snapshot(str(y))
})

test_that("a loaded list works as the plain named list of 0.2.x", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(w = matrix(as.numeric(1:6), 2), b = 1:3), path, metadata = list(format = "pt"))
  x <- safe_load_file(path)
  expect_true(is.list(x))
  expect_identical(names(x), c("w", "b"))
  expect_identical(length(x), 2L)
  expect_identical(attr(x, "metadata")[["__metadata__"]], list(format = "pt"))
  expect_identical(x[[2]], structure(array(1:3), dtype = "I32"))
  expect_identical(x$w, x[["w"]])
  seen <- character()
  for (nm in names(x)) seen <- c(seen, class(x[[nm]])[[1]])
  expect_identical(seen, c("matrix", "array"))
  # Subsetting and combining give plain lists, as they dropped the
  # attributes in 0.2.x.
  expect_identical(class(x[1]), "list")
  expect_identical(names(x["b"]), "b")
  expect_identical(class(c(x, list(z = 1))), "list")
  expect_identical(class(lapply(x, dim)), "list")
  expect_identical(class(Map(function(a, b) a, x, x)), "list")
  expect_identical(vapply(x, length, 1L), c(w = 6L, b = 3L))
  expect_identical(unclass(x)[["b"]], x$b)
  expect_identical(as.list(x), x)
  expect_true(inherits(x, "list"))
  # Modifying keeps the list and its attributes, as before.
  y <- modifyList(x, list(b = 4:6))
  expect_identical(y$b, 4:6)
  expect_identical(attr(y, "metadata"), attr(x, "metadata"))
  y$extra <- 1
  expect_identical(names(y), c("w", "b", "extra"))
  y[["w"]] <- NULL
  expect_identical(names(y), c("b", "extra"))
  # It saves back, and jsonlite sees a list.
  again <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, again, metadata = attr(x, "metadata")[["__metadata__"]])
  expect_identical(readBin(again, "raw", 1e4), readBin(path, "raw", 1e4))
  expect_identical(as.character(jsonlite::toJSON(x["b"])), "{\"b\":[1,2,3]}")
  expect_identical(as.character(jsonlite::toJSON(x)), as.character(jsonlite::toJSON(unclass(x))))
})


test_that("print() of a loaded list shows one line per tensor, fitting the width", {
  x <- safe_load_file(safe_serialize(
    list(
      big = matrix(seq(0, 1, length.out = 50000 * 16), 50000, 16),
      ids = 1:10,
      mask = c(TRUE, FALSE, TRUE),
      z = complex(real = 1:2, imaginary = -1),
      bytes = as.raw(0:255),
      half = c(0.1, 1 / 3, 1e4),
      s = structure(3, shape = integer(0)),
      empty = numeric(0)
    ),
    dtype = c(half = "F16"),
    metadata = list(format = "pt")
  ))
  out <- capture.output(print(x))
  expect_length(out, 2 + length(x) + 2)
  expect_true(all(nchar(out, "width") <= getOption("width")))
  expect_snapshot({
    x
    print(x, n = 2)
    print(x, n = 0)
  })
  withr::local_options(width = 40)
  out <- capture.output(print(x))
  expect_true(all(nchar(out[3:10], "width") <= 40))
  expect_snapshot(x)
})

test_that("print() of a loaded list shows raw bytes, framework tensors and other values", {
  bytes <- safe_serialize(list(w = matrix(c(1, 2, 3, 4), 2), s = structure(1L, shape = integer(0))))
  expect_snapshot(safe_deserialize(bytes, framework = "raw"))
  x <- safe_deserialize(bytes)
  x$note <- "a string"
  x$more <- list(1, 2)
  x[["it's"]] <- c(x = 1.5)
  names(x)[[1]] <- ""
  expect_snapshot(x)
  expect_snapshot(safe_deserialize(safe_serialize(list())))
  # Framework tensors show their meta and class.
  registerS3method("safe_tensor_meta", "meta_only", function(x) list(shape = list(2, 3), dtype = "BF16"))
  y <- as_loaded(list(t = structure(list(), class = "meta_only"), u = structure(list(), class = "no_meta")), NULL, 0)
  expect_snapshot(y)
})

test_that("read_mode() and read_choices() describe what the Rust reader makes", {
  expect_identical(read_mode("r"), c("array", "double", "integer"))
  expect_identical(read_mode("r", "character", "raw"), c("array", "character", "raw"))
  expect_identical(read_mode("torch", "character", "raw"), "raw")
  expect_identical(read_mode("raw"), "raw")
  defaults <- read_choices(c("double", "integer64", "character"), c("integer", "raw"), "torch")
  expect_identical(defaults, list(int64 = "double", uint8 = "integer"))
  expect_identical(read_choices("character", "raw", "r"), list(int64 = "character", uint8 = "raw"))
  expect_error(read_choices("character", "integer", "torch"), class = "safetensors_error_invalid_argument")
})

test_that("loads with the int64 and uint8 choices don't load rlang or cli", {
  skip_on_cran()
  skip_if_not_installed("bit64")
  loaded <- callr::r(function() {
    library(safetensors)
    f <- tempfile(fileext = ".safetensors")
    x <- list(i = bit64::as.integer64(c(1, 2^60)), u = array(as.raw(1:24), 2:4), m = matrix(1:4, 2))
    safe_save_file(x, f, dtype = c(m = "uint8"))
    safe_load_file(f, int64 = "integer64", uint8 = "raw")
    safe_load_file(f, int64 = "character")
    h <- safe_open(f, int64 = "character", uint8 = "raw")
    h$slice("u")[2, , ]
    safe_slice(h, "i", 2, int64 = "integer64")
    close(h)
    safetensors$new(f, uint8 = "raw")$get_tensor("m")
    c(rlang = isNamespaceLoaded("rlang"), cli = isNamespaceLoaded("cli"))
  }, libpath = .libPaths())
  expect_identical(loaded, c(rlang = FALSE, cli = FALSE))
})

test_that("print() of a loaded list with long names fits the width", {
  index <- local_long_names()
  x <- safe_load_file(index)
  expect_fits_widths(x)
  expect_snapshot({
    print(x, width = 40)
    print(x, width = 80)
    print(x, width = 120)
  })
})
