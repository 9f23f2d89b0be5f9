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

test_that("large tensors are read into memory not marked for huge pages", {
  skip_without_huge_pages()
  # Marked memory took a VM whose balloon takes back free 2 MiB blocks
  # (free page reporting) far longer to fill: each huge page is one the
  # host backs anew (bench/README.md). The mapping 20 MiB into a vector's
  # memory, over 32 MiB each, so that the C library maps new memory for
  # them rather than reusing its heap's: 40 and 36 MiB.
  middle <- function(v) {
    at <- vector_address(v)
    skip_if(is.null(at), "R can't tell a vector's address (no memory profiling)")
    smaps_mapping(at + 20 * 1024^2)
  }
  x <- list(
    d = matrix(seq_len(5 * 1024^2) / 7, 1024),
    b = structure(as.raw(seq_len(36 * 1024^2) %% 251), dim = c(9216, 4096))
  )
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  for (backend in c("read", "mmap")) {
    y <- safe_load_file(path, backend = backend)
    expect_false(middle(y$d)$advised, label = backend)
    expect_equal(y$d, x$d, ignore_attr = "dtype")
    y <- safe_load_file(path, framework = "raw", backend = backend)
    expect_false(middle(y$b)$advised, label = backend)
    expect_identical(as.vector(y$b), as.vector(t(x$b)))
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

# ---- int64 = and uint8 = ------------------------------------------------------

# The expected.json entry `t` with its values kept exact: the decimal strings
# in R's order and the tensor's shape, each turned into a value by `as`.
expected_exact <- function(t, as = identity) {
  values <- as(as.character(unlist(t$values)))
  shape <- as.integer(unlist(t$shape))
  if (length(shape) == 0) {
    return(structure(values, shape = integer(0)))
  }
  x <- array(values, dim = rev(shape))
  if (length(shape) > 1) x <- aperm(x, rev(seq_along(shape)))
  x
}

test_that("int64 = \"character\" reads every I64 and U64 value exactly, silently", {
  for (file in c("dtype-I64.safetensors", "dtype-U64.safetensors")) {
    e <- expected_fixtures()[[file]]
    bytes <- read_bytes(fixture(file))
    for (x in list(
      safe_load_file(fixture(file), int64 = "character"),
      safe_load_file(fixture(file), int64 = "character", backend = "mmap"),
      safe_deserialize(bytes, int64 = "character")
    )) {
      for (t in e$tensors) {
        want <- expected_exact(t)
        attr(want, "dtype") <- t$dtype
        expect_identical(x[[t$name]], want, label = paste(file, t$name))
      }
    }
  }
  x <- safe_load_file(fixture("dtype-U64.safetensors"), int64 = "character", tensors = "special")$special
  expect_identical(as.vector(x[5:6]), c("18446744073709551614", "18446744073709551615"))
  # Other dtypes are not affected.
  expect_identical(
    safe_load_file(fixture("dtype-U32.safetensors"), int64 = "character"),
    safe_load_file(fixture("dtype-U32.safetensors"))
  )
})

test_that("int64 = \"integer64\" reads bit64 vectors, NA where integer64 can't hold a value", {
  skip_if_not_installed("bit64")
  for (file in c("dtype-I64.safetensors", "dtype-U64.safetensors")) {
    e <- expected_fixtures()[[file]]
    res <- load_quietly(fixture(file), int64 = "integer64")
    for (t in e$tensors) {
      x <- res$value[[t$name]]
      want <- expected_exact(t)
      # integer64 holds -2^63 + 1 to 2^63 - 1 (-2^63 is its NA): magnitudes
      # of at most 19 digits, up to 9223372036854775807.
      digits <- sub("^-", "", want)
      want[nchar(digits) > 19 | (nchar(digits) == 19 & digits > "9223372036854775807")] <- NA
      expect_s3_class(x, "integer64")
      expect_identical(attr(x, "dtype"), t$dtype)
      expect_identical(dim(x), dim(want), label = paste(file, t$name))
      expect_identical(as.character(x), as.vector(want), label = paste(file, t$name))
    }
    # One warning, for the tensor with the values integer64 can't hold.
    expect_identical(res$warnings, "safetensors_warning_range", label = file)
  }
  expect_snapshot(x <- safe_load_file(fixture("dtype-U64.safetensors"), tensors = "special", int64 = "integer64"))
})

test_that("uint8 = \"raw\" reads U8 tensors as raw arrays, one byte per value", {
  e <- expected_fixtures()[["dtype-U8.safetensors"]]
  path <- fixture("dtype-U8.safetensors")
  for (x in list(
    safe_load_file(path, uint8 = "raw"),
    safe_load_file(path, uint8 = "raw", backend = "mmap"),
    safe_deserialize(read_bytes(path), uint8 = "raw")
  )) {
    for (t in e$tensors) {
      want <- expected_exact(t, function(v) as.raw(as.integer(v)))
      attr(want, "dtype") <- "U8"
      expect_identical(x[[t$name]], want, label = t$name)
    }
  }
  # x[i, j, k] is Python's t[i - 1, j - 1, k - 1]: row-major element 23 of [2, 3, 4].
  t <- e$tensors[[which(tensor_names(e) == "array3")]]
  expect_identical(x$array3[2, 3, 4], as.raw(as.integer(t$values[[24]])))
  # Other dtypes are not affected.
  expect_identical(safe_load_file(fixture("dtype-I8.safetensors"), uint8 = "raw"), safe_load_file(fixture("dtype-I8.safetensors")))
})

test_that("large U8 tensors read as raw equal the integer read, on every path of the engine", {
  withr::local_seed(16)
  # 4.5 MB each: read in blocks of rows, on two threads; a matrix (tiled
  # transposition), a 3-D array with odd extents, and a vector (a copy).
  x <- list(
    m = matrix(as.raw(sample(0:255, 1500 * 3000, TRUE)), 1500, 3000),
    a = array(as.raw(sample(0:255, 37 * 1021 * 119, TRUE)), c(37, 1021, 119)),
    v = as.raw(sample(0:255, 4.5e6, TRUE))
  )
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  for (threads in c(1, 2)) {
    withr::local_options(safetensors.threads = threads)
    for (backend in c("read", "mmap")) {
      r <- safe_load_file(path, uint8 = "raw", backend = backend)
      i <- safe_load_file(path, backend = backend)
      for (nm in names(x)) {
        expect_identical(r[[nm]], structure(x[[nm]], dim = dim(x[[nm]]) %||% length(x[[nm]]), dtype = "U8"))
        expect_identical(as.integer(r[[nm]]), as.vector(i[[nm]]))
      }
    }
  }
  # Saving them writes the same file.
  expect_identical(safe_serialize(safe_load_file(path, uint8 = "raw")), read_bytes(path))
})

test_that("the int64 and uint8 choices reach every load path", {
  skip_if_not_installed("bit64")
  x <- list(
    big = matrix(c(2^60, -2^60, 3, 2^53 + 2, 5, 6), 2),
    img = array(as.raw(1:24), c(2, 3, 4)),
    f = c(0.5, 1.5)
  )
  dir <- withr::local_tempdir()
  path <- file.path(dir, "model.safetensors")
  safe_save_file(x, path, dtype = c(big = "int64"))
  index <- safe_save_file(x, file.path(dir, "sharded.safetensors"), dtype = c(big = "int64"), max_shard_size = 40)
  expect_match(index, "index.json$")
  bytes <- read_bytes(path)
  for (int64 in c("integer64", "character")) {
    ref <- safe_load_file(path, int64 = int64, uint8 = "raw")
    expect_true(if (int64 == "integer64") inherits(ref$big, "integer64") else is.character(ref$big))
    expect_identical(as.character(ref$big), c("1152921504606846976", "-1152921504606846976", "3", "9007199254740994", "5", "6"))
    expect_identical(dim(ref$big), c(2L, 3L))
    expect_identical(ref$img, structure(x$img, dtype = "U8"))
    same <- function(y, label) {
      expect_identical(strip_loaded(y), strip_loaded(ref), label = label)
    }
    same(safe_load_file(path, int64 = int64, uint8 = "raw", backend = "mmap"), "mmap")
    same(safe_load_file(bytes, int64 = int64, uint8 = "raw"), "raw vector")
    same(safe_deserialize(bytes, int64 = int64, uint8 = "raw"), "safe_deserialize()")
    same(safe_load_file(file(path), int64 = int64, uint8 = "raw"), "connection")
    same(safe_load_file(index, int64 = int64, uint8 = "raw")[names(x)], "index")
    local({
      # The progress bar's path reads through a handle.
      withr::local_options(
        rlang_interactive = TRUE, safetensors.progress = TRUE, safetensors.progress_group_bytes = 10,
        cli.progress_show_after = 0, cli.dynamic = TRUE
      )
      withr::local_message_sink(withr::local_tempfile())
      same(safe_load_file(path, int64 = int64, uint8 = "raw"), "progress")
    })
  }
  # The defaults are today's: doubles and integers.
  y <- suppressWarnings(safe_load_file(path))
  expect_type(y$big, "double")
  expect_type(y$img, "integer")
})

test_that("integer64 tensors save back as the same bytes; character ones can't be saved", {
  skip_if_not_installed("bit64")
  for (file in c("dtype-I64.safetensors", "dtype-U64.safetensors")) {
    bytes <- read_bytes(fixture(file))
    x <- safe_deserialize(bytes, int64 = "integer64", tensors = c("matrix", "array3", "scalar"))
    stored <- safe_deserialize(bytes, framework = "raw", tensors = c("matrix", "array3", "scalar"))
    expect_identical(safe_serialize(x), safe_serialize(stored), label = file)
    # integer64's NA can't be written.
    y <- suppressWarnings(safe_deserialize(bytes, int64 = "integer64", tensors = "special"))
    expect_error(safe_serialize(y), class = "safetensors_error_conversion")
  }
  x <- safe_load_file(fixture("dtype-I64.safetensors"), int64 = "character", tensors = "matrix")
  expect_error(safe_serialize(x), class = "safetensors_error_invalid_argument")
})

test_that("int64 and uint8 must be one of their choices, for framework \"r\"", {
  path <- fixture("dtype-U8.safetensors")
  expect_error(safe_load_file(path, int64 = "int64"), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(path, uint8 = c("raw", "integer")), class = "safetensors_error_invalid_argument")
  expect_error(safe_deserialize(read_bytes(path), uint8 = NA), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(path, framework = "raw", uint8 = "raw"), class = "safetensors_error_invalid_argument")
  # The defaults, given explicitly, are fine with any framework.
  expect_no_error(safe_load_file(path, framework = "raw", int64 = "double", uint8 = "integer"))
  expect_snapshot(error = TRUE, {
    safe_load_file(path, framework = "raw", int64 = "character")
  })
})

test_that("int64 = \"integer64\" without bit64 is a classed error saying how to install it", {
  local_package_function("bit64_installed", function() FALSE)
  path <- fixture("dtype-I64.safetensors")
  expect_error(safe_load_file(path, int64 = "integer64"), class = "safetensors_error_package_not_installed")
  err <- tryCatch(safe_deserialize(read_bytes(path), int64 = "integer64"), error = identity)
  expect_identical(err$package, "bit64")
  expect_snapshot(error = TRUE, safe_load_file(path, int64 = "integer64"))
  # The other choices don't need it.
  expect_no_error(safe_load_file(path, int64 = "character"))
})

test_that("a file truncated while a load runs gives its values or a classed error, never a crash", {
  # R arrays and torch tensors, through a map and through positioned reads
  # (and the default, which picks one of them per target).
  for (backend in c("mmap", "read", "auto")) {
    res <- race_truncation(function(path) {
      vapply(safetensors::safe_load_file(path, backend = backend), sum, numeric(1))
    })
    expect_race_safe(res)
  }
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed(), "LibTorch is not installed")
  for (backend in c("mmap", "read", "auto")) {
    res <- race_truncation(
      function(path) {
        x <- safetensors::safe_load_file(path, framework = "torch", backend = backend)
        vapply(x, function(t) torch::as_array(t$sum()), numeric(1))
      },
      setup = function() invisible(torch::torch_zeros(1))
    )
    expect_race_safe(res)
  }
})

test_that("a shard truncated while its set loads gives the values or a classed error, never a crash", {
  for (backend in c("mmap", "read")) {
    res <- race_truncation(
      function(path) {
        vapply(safetensors::safe_load_file(path, backend = backend), sum, numeric(1))
      },
      shards = 3
    )
    expect_race_safe(res)
  }
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed(), "LibTorch is not installed")
  for (backend in c("mmap", "read")) {
    res <- race_truncation(
      function(path) {
        x <- safetensors::safe_load_file(path, framework = "torch", backend = backend)
        vapply(x, function(t) torch::as_array(t$sum()), numeric(1))
      },
      setup = function() invisible(torch::torch_zeros(1)),
      shards = 3
    )
    expect_race_safe(res)
  }
})

test_that("`tensors` must name each tensor once", {
  p <- system.file("extdata", "example.safetensors", package = "safetensors")
  expect_error(safe_load_file(p, tensors = c("bias", "bias")), class = "safetensors_error_invalid_argument")
  expect_error(safe_deserialize(read_bytes(p), tensors = c("bias", "step", "bias")), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(p, tensors = c("bias", "bias"), framework = "raw"), class = "safetensors_error_invalid_argument")
  expect_snapshot(error = TRUE, safe_load_file(p, tensors = c("bias", "step", "bias", "step", "weight")))
})
