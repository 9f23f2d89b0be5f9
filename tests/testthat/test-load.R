# Reading: every fixture that Python's safetensors wrote (fixtures/), checked
# against what numpy sees in it (fixtures/expected.json), without Python.

fixture_files <- function() names(expected_fixtures())
tensor_names <- function(e) vapply(e$tensors, function(t) t$name, "")
# The tensor names of a file in the order its header lists them.
header_names <- function(file) {
  nms <- names(jsonlite::parse_json(header_text(read_bytes(fixture(file)))))
  nms[nms != "__metadata__"]
}

test_that("every fixture loads as numpy sees it, in the order its header lists them", {
  for (file in fixture_files()) {
    e <- expected_fixtures()[[file]]
    res <- load_quietly(fixture(file))
    x <- res$value
    expect_identical(names(x), header_names(file), label = file)
    for (t in e$tensors) {
      expect_tensor(x[[match(t$name, names(x))]], t, label = paste0(file, ": ", t$name))
    }
    # A warning per tensor that can't be held exactly, none otherwise.
    want <- unlist(lapply(e$tensors, function(t) {
      c(if (isTRUE(t$inexact)) "safetensors_warning_precision", if (isTRUE(t$int_min)) "safetensors_warning_type")
    }))
    expect_identical(sort(res$warnings), sort(as.character(want)), label = file)
  }
})

test_that("x[i, j, k] is Python's t[i - 1, j - 1, k - 1]", {
  # Independent of the helpers' aperm(): element [1, 2, 3] (0-based) of a [2, 3, 4]
  # tensor is row-major element 1 * 12 + 2 * 4 + 3 = 23 (0-based).
  e <- expected_fixtures()[["dtype-F64.safetensors"]]
  t <- e$tensors[[which(tensor_names(e) == "array3")]]
  x <- safe_load_file(fixture("dtype-F64.safetensors"))$array3
  expect_identical(dim(x), c(2L, 3L, 4L))
  expect_identical(x[2, 3, 4], as.numeric(t$values[[24]]))
  expect_identical(x[1, 2, 3], as.numeric(t$values[[7]]))
  expect_identical(x[2, 1, 1], as.numeric(t$values[[13]]))
})

test_that("scalars have no dim and zero-size tensors keep their shape", {
  x <- safe_load_file(fixture("dtype-I16.safetensors"))
  expect_null(dim(x$scalar))
  expect_length(x$scalar, 1)
  expect_identical(attr(x$scalar, "shape"), integer(0))
  expect_identical(dim(x$empty), 0L)
  expect_identical(dim(x$empty3), c(2L, 0L, 3L))
  expect_type(x$empty3, "integer")
})

test_that("the mmap backend, raw vectors and safe_deserialize() agree with reading the file", {
  for (file in fixture_files()) {
    path <- fixture(file)
    ref <- suppressWarnings(safe_load_file(path))
    bytes <- read_bytes(path)
    expect_identical(suppressWarnings(safe_load_file(path, backend = "mmap")), ref, label = file)
    expect_identical(suppressWarnings(safe_load_file(bytes)), ref, label = file)
    expect_identical(suppressWarnings(safe_deserialize(bytes)), ref, label = file)
  }
})

test_that("connections are read whole, opened or not, seekable or not", {
  path <- fixture("multi.safetensors")
  ref <- safe_load_file(path)

  expect_identical(safe_load_file(file(path)), ref)

  con <- file(path, "rb")
  on.exit(close(con), add = TRUE)
  expect_identical(safe_load_file(con), ref)
  expect_true(isOpen(con)) # a connection the caller opened stays open

  rc <- rawConnection(read_bytes(path))
  on.exit(close(rc), add = TRUE)
  expect_identical(safe_load_file(rc), ref)

  gz <- withr::local_tempfile(fileext = ".gz")
  out <- gzfile(gz, "wb")
  writeBin(read_bytes(path), out)
  close(out)
  gzc <- gzcon(file(gz, "rb"))
  on.exit(close(gzc), add = TRUE)
  expect_false(isSeekable(gzc))
  expect_identical(safe_load_file(gzc), ref)
})

test_that("framework = \"raw\" gives each tensor's bytes with dtype and shape", {
  for (file in fixture_files()) {
    e <- expected_fixtures()[[file]]
    bytes <- read_bytes(fixture(file))
    x <- safe_load_file(fixture(file), framework = "raw")
    start <- 8 + sum(as.numeric(bytes[1:8]) * 256^(0:7))
    want <- lapply(e$tensors, function(t) {
      off <- unlist(t$data_offsets)
      structure(bytes[start + seq_len(off[2] - off[1]) + off[1]], dtype = t$dtype, shape = as.integer(unlist(t$shape)))
    })
    expect_identical(x[match(tensor_names(e), names(x))], setNames(want, tensor_names(e)), label = file)
  }
})

test_that("the \"metadata\" attribute is the header as safetensors 0.2.x parsed it", {
  # 0.2.x: jsonlite::parse_json(header, simplifyVector = TRUE), unchanged.
  for (file in fixture_files()) {
    x <- suppressWarnings(safe_load_file(fixture(file)))
    want <- jsonlite::parse_json(header_text(read_bytes(fixture(file))), simplifyVector = TRUE)
    expect_identical(attr(x, "metadata"), want, label = file)
  }

  meta <- attr(safe_load_file(fixture("multi.safetensors")), "metadata")
  expect_identical(names(meta)[[1]], "__metadata__")
  expect_identical(meta[["__metadata__"]], list(format = "pt"))
  expect_identical(meta$a, list(dtype = "F64", shape = list(), data_offsets = c(32L, 40L)))
  expect_identical(meta[[which(names(meta) == "")]]$shape, c(2L, 2L))
})

test_that("the result and the attribute follow the header's order, not the data's", {
  x <- safe_load_file(fixture("hand-order.safetensors"))
  expect_named(x, c("c", "b", "a"))
  expect_named(attr(x, "metadata"), c("c", "b", "__metadata__", "a"))
  expect_identical(attr(x, "metadata")[["__metadata__"]], list(k = "v"))
  expect_identical(x$c, structure(matrix(1:3, 1), dtype = "U8"))
})

test_that("\"max_offset\" is the file offset just past the last tensor read", {
  path <- fixture("multi.safetensors")
  e <- expected_fixtures()[["multi.safetensors"]]
  expect_identical(attr(safe_load_file(path), "max_offset"), file.size(path))
  start <- file.size(path) - e$tensors[[length(e$tensors)]]$data_offsets[[2]]
  first <- e$tensors[[1]]
  expect_identical(
    attr(safe_load_file(path, tensors = first$name), "max_offset"),
    start + first$data_offsets[[2]]
  )
  expect_identical(attr(safe_load_file(path, tensors = character()), "max_offset"), 0)
})

test_that("`tensors` reads a subset in the order asked", {
  path <- fixture("multi.safetensors")
  all <- safe_load_file(path)
  x <- safe_load_file(path, tensors = c("B", "", "日本語.weight"))
  expect_identical(names(x), c("B", "", "日本語.weight"))
  expect_identical(x[["B"]], all[["B"]])
  expect_identical(x[[2]], all[[which(names(all) == "")]])
  expect_identical(attr(x, "metadata"), attr(all, "metadata"))
  expect_length(safe_load_file(path, tensors = character()), 0)

  expect_error(safe_load_file(path, tensors = c("a", "nope")), class = "safetensors_error_tensor_not_found")
  expect_error(safe_deserialize(read_bytes(path), tensors = "nope"), class = "safetensors_error_tensor_not_found")
  expect_error(safe_load_file(path, tensors = 1), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(path, tensors = NA_character_), class = "safetensors_error_invalid_argument")
})

test_that("64-bit integers beyond 2^53 warn that they were rounded", {
  path <- fixture("dtype-I64.safetensors")
  expect_warning(
    x <- safe_load_file(path, tensors = "special"),
    class = "safetensors_warning_precision"
  )
  expect_identical(x$special[[1]], -2^63)
  expect_no_warning(safe_load_file(path, tensors = "matrix"))
  expect_warning(safe_load_file(fixture("dtype-U64.safetensors"), tensors = "special"), class = "safetensors_warning_precision")
})

test_that("an I32 tensor holding -2147483648 comes back double, with a warning", {
  path <- fixture("dtype-I32.safetensors")
  expect_warning(x <- safe_load_file(path), class = "safetensors_warning_type")
  expect_type(x$special, "double")
  expect_identical(x$special[[1]], -2^31)
  expect_identical(attr(x$special, "dtype"), "I32")
  expect_type(x$matrix, "integer")
  expect_warning(y <- safe_load_file(path, backend = "mmap", tensors = "special"), class = "safetensors_warning_type")
  expect_identical(y$special, x$special)
})

test_that("a vector memory limit below the heap reserve still loads, silently", {
  # Before allocating many large vectors the loader grows R's vector heap
  # with one throwaway allocation of 1.25 times their size; under a limit
  # that allows the result but not that, the load must go on as usual.
  skip_on_cran()
  skip_if_not_installed("callr")
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- lapply(1:20, function(i) matrix(as.numeric(i) + seq_len(128 * 1024), 128, 1024))
  names(x) <- sprintf("t%02d", 1:20)
  safe_save_file(x, path)
  out <- withr::local_tempfile()
  res <- callr::r(function(path) {
    used <- gc()[2, 2]
    mem.maxVSize(used + 24) # MB: room for the 20 MiB result, not the reserve
    y <- safetensors::safe_load_file(path)
    list(sums = vapply(y, sum, 0), dim = dim(y[[20]]), last = y[[20]][128, 1024])
  }, args = list(path = path), stdout = out, stderr = "2>&1")
  expect_equal(readLines(out), character(0))
  expect_equal(unname(res$sums), vapply(x, sum, 0, USE.NAMES = FALSE))
  expect_equal(res$dim, c(128L, 1024L))
  expect_equal(res$last, 20 + 128 * 1024)
})

test_that("bad sources and arguments are classed errors", {
  missing <- file.path(withr::local_tempdir(), "nope.safetensors")
  expect_error(safe_load_file(missing), class = "safetensors_error_file_not_found")
  expect_error(safe_load_file(missing, backend = "mmap"), class = "safetensors_error_file_not_found")
  # Braces in a path are text, not cli markup.
  expect_error(safe_load_file(file.path(dirname(missing), "{x}.safetensors")), class = "safetensors_error_file_not_found")

  bytes <- read_bytes(fixture("multi.safetensors"))
  short <- withr::local_tempfile(fileext = ".safetensors")
  writeBin(bytes[-length(bytes)], short)
  expect_error(safe_load_file(short), class = "safetensors_error_format")
  expect_error(safe_deserialize(bytes[-length(bytes)]), class = "safetensors_error_incomplete_buffer")

  expect_error(safe_load_file(1), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(c("a", "b")), class = "safetensors_error_invalid_argument")
  expect_error(safe_deserialize("x"), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(bytes, device = "cpu"), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(bytes, framework = "nope"), class = "safetensors_error_unknown_framework")
  expect_error(safe_load_file(bytes, framework = "nope"), class = "safetensors_error")
})

test_that("a connection must end where the file's data end", {
  a <- safe_serialize(list(x = 1:3, y = matrix(as.numeric(1:6), 2)), metadata = list(part = "a"))
  for (framework in c("r", "raw")) {
    con <- rawConnection(a)
    expect_identical(safe_load_file(con, framework = framework), safe_deserialize(a, framework = framework), label = framework)
    close(con)
    con <- rawConnection(c(a, as.raw(1:5)))
    err <- expect_error(safe_load_file(con, framework = framework), class = "safetensors_error_incomplete_buffer")
    expect_s3_class(err, "safetensors_error_format")
    close(con)
  }
  # Tensors not asked for are read past.
  con <- rawConnection(a)
  withr::defer(close(con))
  expect_identical(safe_load_file(con, framework = "raw", tensors = "y")$y, safe_deserialize(a, framework = "raw")$y)
})

test_that("non-seekable connections are read with every framework", {
  path <- fixture("multi.safetensors")
  for (framework in c("r", "raw")) {
    ref <- safe_load_file(path, framework = framework)
    gz <- withr::local_tempfile(fileext = ".gz")
    out <- gzfile(gz, "wb")
    writeBin(read_bytes(path), out)
    close(out)
    con <- gzcon(file(gz, "rb"))
    expect_false(isSeekable(con))
    expect_identical(safe_load_file(con, framework = framework), ref, label = framework)
    close(con)
    skip_on_os("windows")
    con <- pipe(paste("cat", shQuote(path)), "rb")
    expect_false(isSeekable(con))
    expect_identical(safe_load_file(con, framework = framework), ref, label = framework)
    close(con)
    # url() of a file, not yet opened: opened, and closed again.
    con <- url(paste0("file://", normalizePath(path)))
    expect_identical(safe_load_file(con, framework = framework), ref, label = framework)
  }
})

test_that("a connection that ends early is an incomplete_buffer error", {
  bytes <- safe_serialize(list(x = as.numeric(1:100), y = 1:5))
  for (framework in c("r", "raw")) {
    for (cut in c(length(bytes) - 1, length(bytes) - 25)) {
      con <- rawConnection(bytes[seq_len(cut)])
      expect_error(safe_load_file(con, framework = framework), class = "safetensors_error_incomplete_buffer")
      close(con)
    }
  }
  con <- rawConnection(bytes[1:20])
  withr::defer(close(con))
  expect_error(safe_load_file(con, framework = "raw"), class = "safetensors_error_format")
})

test_that("a connection that ends inside a skipped tensor says how far it got", {
  bytes <- safe_serialize(list(x = as.numeric(1:100), y = 1:5))
  x <- safe_info(bytes)[1, ]
  con <- rawConnection(bytes[seq_len(x$begin + 300)])
  withr::defer(close(con))
  cnd <- expect_error(safe_load_file(con, framework = "raw", tensors = "y"), class = "safetensors_error_incomplete_buffer")
  expect_identical(cnd$tensor, "x")
  expect_match(conditionMessage(cnd), "after 300 of the 800 bytes", fixed = TRUE)
})

test_that("a tensor not in a connection's file is tensor_not_found", {
  con <- rawConnection(safe_serialize(list(x = 1)))
  withr::defer(close(con))
  expect_error(safe_load_file(con, framework = "raw", tensors = "nope"), class = "safetensors_error_tensor_not_found")
})

test_that("a framework must be a registered name whose packages are installed", {
  bytes <- safe_serialize(list(a = 1:3))
  expect_error(safe_load_file(bytes, framework = 1), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(bytes, framework = c("r", "raw")), class = "safetensors_error_invalid_argument")
  safetensors_frameworks[["needs_nothing_installed"]] <- list(
    constructor = function(raw, meta, ...) meta$dtype,
    packages = "a.package.that.does.not.exist"
  )
  withr::defer(rm("needs_nothing_installed", envir = safetensors_frameworks))
  err <- expect_error(
    safe_load_file(bytes, framework = "needs_nothing_installed"),
    class = "safetensors_error_framework_not_installed"
  )
  expect_identical(err$package, "a.package.that.does.not.exist")
  safetensors_frameworks[["needs_nothing_installed"]]$packages <- character()
  expect_identical(safe_load_file(bytes, framework = "needs_nothing_installed")$a, "I32")
})
