test_that("every lazy read equals the eager read, for every source and backend", {
  path <- local_lazy_file(metadata = list(format = "pt"))
  eager <- safe_load_file(path)
  attributes(eager) <- list(names = names(eager))
  sources <- list(
    mmap = function() safe_open(path),
    read = function() safe_open(path, backend = "read"),
    raw = function() safe_open(readBin(path, "raw", file.size(path))),
    con = function() safe_open(file(path))
  )
  for (src in names(sources)) {
    h <- sources[[src]]()
    expect_s3_class(h, "safetensors_file")
    expect_identical(names(h), names(eager))
    expect_identical(length(h), length(eager))
    for (nm in names(eager)) {
      expect_identical(h[[nm]], eager[[nm]], label = paste(src, nm))
    }
    expect_identical(h[[2]], eager[[2]])
    expect_identical(h$vec, eager$vec)
    expect_identical(h[c("int", "vec")], eager[c("int", "vec")])
    expect_identical(h[], eager)
    close(h)
  }
})

test_that("framework = 'raw' and registered frameworks read through handles", {
  path <- local_lazy_file()
  eager <- safe_load_file(path, framework = "raw")
  h <- safe_open(path, framework = "raw")
  expect_identical(h[["f16"]], eager[["f16"]])
  withr::defer(rm("capture", envir = safetensors_frameworks))
  safetensors_frameworks[["capture"]] <- list(
    constructor = function(raw, meta, ...) list(raw = raw, meta = meta, args = list(...)),
    packages = character()
  )
  h <- safe_open(path, framework = "capture", device = "cpu")
  got <- h[["mat"]]
  want <- eager[["mat"]]
  expect_identical(got$raw, as.vector(want))
  expect_identical(got$meta, attr(eager, "metadata")$mat)
  expect_identical(got$args, list(device = "cpu"))
  expect_error(safe_open(path, framework = "r", device = "cpu"), class = "safetensors_error_invalid_argument")
})

test_that("handles report unknown tensors, bad indices and closed files", {
  path <- local_lazy_file()
  h <- safe_open(path)
  expect_error(h[["nope"]], class = "safetensors_error_tensor_not_found")
  expect_error(h$nope, class = "safetensors_error_tensor_not_found")
  expect_error(h[[0]], class = "safetensors_error_invalid_argument")
  expect_error(h[[length(h) + 1]], class = "safetensors_error_invalid_argument")
  expect_error(h[[c("vec", "mat")]], class = "safetensors_error_invalid_argument")
  # `h$slice` is the method; a tensor called "slice" is read with [[.
  expect_type(h$slice, "closure")
  expect_identical(strip_dtype(h[["slice"]]), array(c(1, 2)))
  expect_null(close(h))
  expect_error(h[["vec"]], class = "safetensors_error_closed")
  expect_error(h$slice("vec")[1], class = "safetensors_error_closed")
  expect_error(safe_info(h), class = "safetensors_error_closed")
  expect_no_error(close(h))
  expect_match(format(h), "(closed)", fixed = TRUE)
})

test_that("a handle restored from saveRDS() is closed, not a crash", {
  path <- local_lazy_file()
  h <- safe_open(path)
  rds <- withr::local_tempfile(fileext = ".rds")
  saveRDS(h, rds)
  h2 <- readRDS(rds)
  expect_error(h2[["vec"]], class = "safetensors_error_closed")
  expect_identical(h[["vec"]], safe_load_file(path)[["vec"]])
})

test_that("raw vectors stay alive under a handle", {
  path <- local_lazy_file()
  h <- safe_open(readBin(path, "raw", file.size(path)))
  gc()
  gc()
  expect_identical(h$a4, safe_load_file(path)$a4)
  close(h)
  gc()
  expect_error(h$a4, class = "safetensors_error_closed")
})

test_that("backend \"auto\" reads R arrays and bytes with positioned reads and maps a local file for torch", {
  path <- local_lazy_file()
  kind <- function(h) {
    on.exit(close(h))
    c(safetensors:::part_kind(safetensors:::hget(h, "parts")[[1]]), format(h)[[2]])
  }
  expect_identical(kind(safe_open(path))[[1]], "read")
  expect_identical(kind(safe_open(path, framework = "raw"))[[1]], "read")
  expect_identical(kind(safe_open(path, framework = "raw", backend = "mmap")), c("mmap", "17 tensors, 2.1 kB, memory-mapped"))
  expect_identical(kind(safe_open(path, backend = "mmap"))[[1]], "mmap")
  expect_identical(kind(safe_open(read_bytes(path)))[[1]], "memory")
  skip_if_no_torch()
  expect_identical(kind(safe_open(path, framework = "torch"))[[1]], "mmap")
  expect_identical(kind(safe_open(path, framework = "torch", backend = "read"))[[1]], "read")
})

test_that("malformed files fail at open with the file's error class", {
  expect_error(safe_open(raw(3)), class = "safetensors_error_header_too_small")
  expect_error(safe_open(tempfile()), class = "safetensors_error_file_not_found")
  expect_error(safe_open(1), class = "safetensors_error_invalid_argument")
  expect_error(safe_open(raw(8), backend = "nope"), class = "safetensors_error_invalid_argument")
  # Exact matches only, as with the other choices.
  err <- expect_error(safe_open(raw(8), backend = "mm"), class = "safetensors_error_invalid_argument")
  expect_match(cli::ansi_strip(conditionMessage(err)), '`backend` must be one of "auto", "mmap" or "read", not "mm".', fixed = TRUE)
  expect_error(safe_open(raw(8), backend = c("read", "mmap")), class = "safetensors_error_invalid_argument")
  expect_error(safe_open(raw(8), backend = NA), class = "safetensors_error_invalid_argument")
})

test_that("print() shows tensors and metadata", {
  path <- local_lazy_file(
    lazy_tensors()[c("vec", "mat", "f16", "scalar", "with space")],
    metadata = list(format = "pt", note = "a \"quoted\" value")
  )
  h <- safe_open(path)
  label <- function(x) gsub(path, "<path>", x, fixed = TRUE)
  expect_snapshot(print(h), transform = label)
  expect_snapshot(print(h, n = 2), transform = label)
  expect_snapshot(print(safe_open(readBin(path, "raw", file.size(path)), backend = "read")))
  expect_snapshot(print(h$slice("f16")))
  close(h)
  expect_snapshot(print(h), transform = label)
  empty <- safe_open(safe_serialize(setNames(list(), character())))
  expect_snapshot(print(empty))
})

# ---- reading only what is asked for ------------------------------------------

read_bytes <- function() {
  io <- readLines("/proc/self/io")
  as.numeric(sub("rchar: ", "", grep("^rchar:", io, value = TRUE)))
}

test_that("reading one small tensor from a large file reads only its bytes", {
  skip_on_cran()
  skip_if_not(file.exists("/proc/self/io"), "needs /proc/self/io")
  path <- withr::local_tempfile(fileext = ".safetensors")
  big <- structure(raw(100e6), dtype = "U8")
  dim(big) <- c(100e3, 1000)
  safe_save_file(list(first = 1:10, big = big, last = c(2.5, 3.5)), path)
  rm(big)
  gc()
  # Warm up: load lazily loaded code and namespaces first.
  h <- safe_open(path, backend = "read")
  invisible(h[["first"]])
  invisible(h$slice("big")[1, 1:2])
  invisible(safe_load_file(path, tensors = "first"))
  invisible(safe_info(path))

  before <- read_bytes()
  x <- h[["last"]]
  expect_lt(read_bytes() - before, 64e3)
  expect_identical(strip_dtype(x), array(c(2.5, 3.5)))

  before <- read_bytes()
  rows <- h$slice("big")[1001:1010, ]
  expect_lt(read_bytes() - before, 10 * 1000 + 64e3)
  expect_identical(dim(rows), c(10L, 1000L))

  before <- read_bytes()
  sub <- safe_load_file(path, tensors = c("last", "first"))
  expect_lt(read_bytes() - before, 64e3)
  expect_named(sub, c("last", "first"))

  before <- read_bytes()
  h2 <- safe_open(path, backend = "read")
  info <- safe_info(path)
  expect_lt(read_bytes() - before, 64e3)
  expect_identical(info$bytes, c(40, 100e6, 16))
  close(h2)

  # A memory map faults in only the pages read.
  rss <- function() {
    status <- readLines("/proc/self/status")
    as.numeric(gsub("[^0-9]", "", grep("^VmRSS:", status, value = TRUE))) * 1024
  }
  m <- safe_open(path)
  before <- rss()
  x <- m[["last"]]
  rows <- m$slice("big")[1:10, ]
  expect_lt(rss() - before, 20e6)
  close(m)
  close(h)
})

test_that("a file truncated under an open handle is an error, not a crash", {
  skip_on_cran()
  skip_if_not_installed("callr")
  path <- local_lazy_file()
  res <- callr::r(function(path) {
    out <- list()
    for (backend in c("mmap", "read")) {
      safetensors::safe_save_file(list(a = as.numeric(1:1000), b = as.numeric(1:1000)), path)
      h <- safetensors::safe_open(path, backend = backend)
      first <- h[["a"]]
      con <- file(path, "r+b")
      truncate(con)
      close(con)
      out[[backend]] <- tryCatch(h[["b"]], error = function(e) class(e))
    }
    out
  }, args = list(path = path))
  expect_true("safetensors_error_file_changed" %in% res$mmap)
  expect_true("safetensors_error_file_changed" %in% res$read)
})

test_that("a file rewritten in place under a memory map is an error", {
  path <- local_lazy_file()
  h <- safe_open(path)
  before <- h[["mat"]]
  bytes <- readBin(path, "raw", file.size(path))
  con <- file(path, "r+b")
  writeBin(rev(bytes), con)
  close(con)
  Sys.setFileTime(path, Sys.time() + 5)
  expect_error(h[["mat"]], class = "safetensors_error_file_changed")
  expect_error(h$slice("mat")[1, ], class = "safetensors_error_file_changed")
})

test_that("handles complete names after $ and have a one-line str()", {
  path <- system.file("extdata", "example.safetensors", package = "safetensors")
  h <- safe_open(path)
  expect_identical(utils::.DollarNames(h, ""), c("slice", "keys", "get_tensor", "get_slice", "metadata", names(h)))
  expect_identical(utils::.DollarNames(h, "^b"), "bias")
  expect_identical(utils::.DollarNames(h, "^get"), c("get_tensor", "get_slice"))
  expect_output(str(h), "<safetensors_file> .*: 3 tensors$")
  close(h)
  expect_output(str(h), "3 tensors (closed)", fixed = TRUE)
})

test_that("handles keep their int64 and uint8 choices for reads and slices", {
  skip_if_not_installed("bit64")
  withr::local_seed(5)
  x <- list(
    i64 = structure(matrix(c(-3, 5, 2^60, 7, 8, -2^62), 3, 2), dtype = "I64"),
    u64 = structure(array(c(0, 2^63 + 2^12, 2^53, seq_len(21)), c(2, 3, 4)), dtype = "U64"),
    u8 = array(as.raw(sample(0:255, 60, TRUE)), c(3, 4, 5)),
    f = c(1.5, 2.5)
  )
  path <- local_lazy_file(x)
  cases <- list(
    i64 = expression(x[2, ], x[c(3, 1), 1], x[, ], x[3, 2], x[-1, , drop = FALSE]),
    u64 = expression(x[2, , ], x[, 3, 2:4], x[1, 2, 1], x[, , c(TRUE, FALSE)]),
    u8 = expression(x[2, , ], x[, 3, 2:4], x[1, 2, 1], x[c(3, 1), -1, seq(1, 5, by = 2)], x[, , ]),
    f = expression(x[2])
  )
  for (choices in list(c("character", "raw"), c("integer64", "raw"), c("double", "integer"))) {
    for (backend in c("mmap", "read")) {
      h <- safe_open(path, backend = backend, int64 = choices[[1]], uint8 = choices[[2]])
      eager <- suppressWarnings(safe_load_file(path, int64 = choices[[1]], uint8 = choices[[2]]))
      expect_identical(suppressWarnings(h[names(x)]), strip_loaded(eager))
      expect_identical(suppressWarnings(h$u64), eager$u64)
      for (nm in names(cases)) {
        full <- eager[[nm]]
        for (e in cases[[nm]]) {
          want <- eval(e, list(x = strip_dtype(full)))
          attr(want, "dtype") <- attr(full, "dtype")
          got <- suppressWarnings(eval(e, list(x = h$slice(nm))))
          expect_identical(got, want, label = paste(choices[[1]], choices[[2]], backend, nm, deparse(e)))
        }
      }
      close(h)
    }
  }
  expect_type(safe_open(path, uint8 = "raw")$u8, "raw")
  expect_warning(safe_open(path, int64 = "integer64")$u64, class = "safetensors_warning_range")
  expect_warning(safe_open(path, int64 = "integer64")$slice("u64")[, 1, 1], class = "safetensors_warning_range")
  expect_no_warning(safe_open(path, int64 = "integer64")$slice("u64")[, 2, 1])
})

test_that("sharded checkpoints open with the choices", {
  x <- list(a = structure(c(2^60, 3), dtype = "I64"), b = as.raw(1:4), c = as.raw(5:8))
  dir <- withr::local_tempdir()
  index <- safe_save_file(x, file.path(dir, "model.safetensors"), max_shard_size = 10)
  h <- safe_open(index, int64 = "character", uint8 = "raw")
  expect_identical(h$a, structure(c("1152921504606846976", "3"), dim = 2L, dtype = "I64"))
  expect_identical(h[["c"]], structure(as.raw(5:8), dim = 4L, dtype = "U8"))
  expect_identical(h$slice("b")[3:4], structure(as.raw(3:4), dim = 2L, dtype = "U8"))
})

test_that("handles speak Python's safe_open(): keys(), get_tensor(), get_slice(), metadata()", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- list(zeta = c(1, 2), Alpha = 1:3, beta = matrix(1:6, 2), "\u00e9t\u00e9" = 1)
  safe_save_file(x, path, metadata = list(format = "pt", b = "2"))
  h <- safe_open(path)
  withr::defer(close(h))
  # Python sorts by code point; names() keeps the header's order.
  expect_identical(h$keys(), c("Alpha", "beta", "zeta", "\u00e9t\u00e9"))
  expect_identical(names(h), names(x))
  expect_identical(h$get_tensor("beta"), h[["beta"]])
  expect_identical(h$get_tensor(2), h[[2]])
  expect_identical(h$get_slice("beta")[2, ], h$slice("beta")[2, ])
  expect_identical(h$get_slice("beta")$get_shape(), c(2L, 3L))
  expect_identical(h$get_slice("beta")$get_dtype(), "I32")
  expect_identical(h$get_slice("beta")$name, "beta")
  expect_identical(h$metadata(), c(b = "2", format = "pt"))
  expect_identical(h$metadata(), safe_metadata(path))
  # The same answers as Python's own reader.
  skip_without_python()
  out <- run_python(c(
    "import json, sys",
    "from safetensors import safe_open",
    "with safe_open(sys.argv[1], 'np') as f:",
    "    print(json.dumps({'keys': list(f.keys()), 'metadata': f.metadata()}))"
  ), path)
  py <- jsonlite::fromJSON(out)
  expect_identical(h$keys(), enc2utf8(py$keys))
  expect_identical(as.list(h$metadata()), py$metadata[names(h$metadata())])
})

test_that("a tensor named like a method is read with [[; $ gives the method", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(keys = 1:2, metadata = 3, get_tensor = 4, w = 5), path, metadata = list(k = "v"))
  h <- safe_open(path)
  withr::defer(close(h))
  expect_type(h$keys, "closure")
  expect_identical(h$keys(), c("get_tensor", "keys", "metadata", "w"))
  expect_identical(h$metadata(), c(k = "v"))
  expect_identical(as.vector(h[["keys"]]), 1:2)
  expect_identical(as.vector(h[["metadata"]]), 3)
  expect_identical(h$get_tensor("keys"), h[["keys"]])
  expect_identical(as.vector(h$w), 5)
  # Closed: the header's answers stay, reads are errors.
  close(h)
  expect_identical(h$keys(), c("get_tensor", "keys", "metadata", "w"))
  expect_identical(h$metadata(), c(k = "v"))
  expect_error(h$get_tensor("w"), class = "safetensors_error_closed")
})

test_that("as.list() of a handle reads every tensor, as safe_load_file() does", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(a = 1:3, b = matrix(c(0.5, 1), 1)), path, metadata = list(k = "v"))
  h <- safe_open(path)
  expect_identical(as.list(h), safe_load_file(path))
  close(h)
  h <- safe_open(path, framework = "raw")
  expect_identical(as.list(h), safe_load_file(path, framework = "raw"))
  close(h)
  dir <- withr::local_tempdir()
  index <- safe_save_file(list(a = 1:3, b = 4:6), dir, max_shard_size = 12)
  h <- safe_open(index)
  expect_identical(as.list(h), safe_load_file(index))
  close(h)
  expect_error(as.list(h), class = "safetensors_error_closed")
})

test_that("the handle methods' errors cite them", {
  path <- system.file("extdata", "example.safetensors", package = "safetensors")
  h <- safe_open(path)
  withr::defer(close(h))
  expect_snapshot(error = TRUE, transform = function(x) gsub(path, "<path>", x, fixed = TRUE), {
    h$get_tensor("nope")
    h$get_tensor()
    h$keys("extra")
    h$get_slice("bias", 1)
    h[1, 2]
    h[["bias", "weight"]]
  })
  expect_identical(h[["bias", exact = FALSE]], h[["bias"]])
  for (cl in alist(h$get_tensor("nope"), h$get_tensor(), h$keys("extra"), h$get_slice("bias", 1), h[1, 2])) {
    e <- expect_error(eval(cl), class = "safetensors_error")
    expect_identical(conditionCall(e), cl)
  }
})

test_that("print() of a handle fits the width, cutting long names in the middle", {
  index <- local_long_names()
  h <- safe_open(index)
  withr::defer(close(h))
  expect_fits_widths(h)
  expect_snapshot({
    print(h, width = 40)
    print(h, width = 80)
    print(h, width = 120)
  })
  close(h)
  expect_snapshot(print(h, width = 40))
})
