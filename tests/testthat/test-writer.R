# safe_writer(): files written block by block. A writer's file is compared
# with what safe_save_file() writes of the same tensors (the same bytes),
# and with what Python's safetensors reads; errors leave the writer usable
# and nothing at the path.

# The files of folder `dir`, hidden ones included.
dir_listing <- function(dir) sort(list.files(dir, all.files = TRUE, no.. = TRUE))

layout_of <- function(tensors, dtypes) {
  df <- data.frame(name = names(tensors), dtype = unname(dtypes))
  df$shape <- lapply(tensors, function(x) as.numeric(dim(x) %||% length(x)))
  df
}

test_tensors <- function() {
  withr::with_seed(1, list(
    m = matrix(rnorm(60), 20, 3),
    a = array(rnorm(4 * 3 * 2), c(4, 3, 2)),
    i = 1:7,
    s = structure(2.5, shape = integer(0))
  ))
}

test_that("blocks in any order make the file safe_save_file() makes of the whole tensors", {
  dir <- withr::local_tempdir()
  x <- test_tensors()
  dtypes <- c(m = "BF16", a = "F32", i = "I16", s = "F64")
  ref <- file.path(dir, "ref.safetensors")
  safe_save_file(x, ref, dtype = dtypes, metadata = c(k = "v"))
  path <- file.path(dir, "blocks.safetensors")
  lay <- layout_of(x, dtypes)
  lay$shape[[4]] <- numeric(0)
  w <- safe_writer(path, lay, metadata = c(k = "v"))
  w$write("a", x$a[3:4, , ], rows = 3:4)
  w$write("m", x$m[11:20, ], rows = 11:20)
  w$write("s", 2.5)
  w$write("a", x$a[1:2, , , drop = FALSE], rows = 1:2)
  w$write("i", x$i)
  expect_identical(dir_listing(dir), "ref.safetensors")
  w$write("m", x$m[1:10, ], rows = 1:10)
  expect_identical(close(w), path)
  expect_identical(read_bytes(path), read_bytes(ref))
  # Closing again does nothing.
  expect_identical(close(w), path)
  expect_error(w$write("m", x$m), class = "safetensors_error_closed")
})

test_that("values, raw bytes, raw bytes of another dtype and vectors without dim all write", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  lay <- data.frame(name = c("x", "y"), dtype = c("F32", "F16"))
  lay$shape <- list(c(2, 3), 4)
  w <- safe_writer(path, lay)
  v <- matrix(1:6 / 4, 2, 3)
  # A vector of the block's length, read as array(x, dim).
  w$write("x", as.vector(v[2, , drop = FALSE]), rows = 2)
  # The bytes as stored: row 1 of x, F32 little-endian.
  w$write("x", writeBin(v[1, ], raw(), size = 4, endian = "little"), rows = 1)
  # Raw bytes in another dtype (as framework = "raw" gives them) convert.
  y <- safe_load_file(safe_serialize(list(y = c(1, 2.5, -3, 1e4)), dtype = "F64"), framework = "raw")$y
  w$write("y", y)
  close(w)
  got <- safe_load_file(path)
  expect_equal(unclass(got$x), v, ignore_attr = TRUE)
  expect_equal(as.vector(got$y), c(1, 2.5, -3, 1e4))
})

test_that("a writer writes the shard set safe_save_file() writes", {
  root <- withr::local_tempdir()
  x <- withr::with_seed(2, lapply(c(a = 30, b = 50, c = 20, d = 40), function(n) matrix(runif(n * 4), n, 4)))
  a <- file.path(root, "a")
  b <- file.path(root, "b")
  dir.create(a)
  dir.create(b)
  safe_save_file(x, a, dtype = "F32", max_shard_size = 1000)
  w <- safe_writer(b, layout_of(x, rep("F32", 4)), max_shard_size = 1000)
  for (nm in rev(names(x))) {
    n <- nrow(x[[nm]])
    w$write(nm, x[[nm]][seq(11, n), ], rows = seq(11, n))
    w$write(nm, x[[nm]][1:10, ], rows = 1:10)
  }
  # Nothing but hidden temporary files until closed.
  expect_false(any(grepl("^model", dir_listing(b))))
  expect_identical(close(w), file.path(b, "model.safetensors.index.json"))
  expect_identical(dir_listing(b), dir_listing(a))
  for (f in dir_listing(a)) {
    expect_identical(read_bytes(file.path(b, f)), read_bytes(file.path(a, f)), label = f)
  }
})

test_that("a layout from safe_info() of another file is accepted as it is", {
  src <- system.file("extdata", "example.safetensors", package = "safetensors")
  path <- withr::local_tempfile(fileext = ".safetensors")
  info <- safe_info(src)
  w <- safe_writer(path, info, metadata = safe_metadata(src))
  for (name in info$name) w$write(name, safe_load_file(src, tensors = name)[[1]])
  close(w)
  expect_identical(read_bytes(path), read_bytes(src))
})

test_that("errors of write() leave the writer usable", {
  dir <- withr::local_tempdir()
  withr::local_dir(dir)
  lay <- data.frame(name = c("m", "q", "u"), dtype = c("F32", "F4", "U8"))
  lay$shape <- list(c(4, 2), c(6, 1), 3)
  w <- safe_writer("model.safetensors", lay)
  w$write("m", matrix(1, 2, 2), rows = 2:3)
  expect_snapshot(error = TRUE, {
    w$write("n", 1)
    w$write("m", matrix(1, 2, 2), rows = 3:4)
    w$write("m", matrix(1, 4, 2))
    w$write("m", matrix(1, 2, 3), rows = 1:2)
    w$write("m", 1:3, rows = 1)
    w$write("m", raw(7), rows = 1)
    w$write("m", 1, rows = c(1, 3))
    w$write("m", 1, rows = 5)
    w$write("m", "a", rows = 1)
    w$write("q", c(1, 1, 1), rows = 2:4)
    w$write("u", c(1, 2, 300))
  })
  expect_error(w$write("n", 1), class = "safetensors_error_tensor_not_found")
  expect_error(w$write("m", matrix(1, 2, 2), rows = 3:4), class = "safetensors_error_already_written")
  expect_error(w$write("m", matrix(1, 2, 2), rows = 1:2), class = "safetensors_error_already_written")
  expect_error(w$write("m", matrix(1, 2, 3), rows = 1), class = "safetensors_error_shape_mismatch")
  expect_error(w$write("m", raw(7), rows = 1), class = "safetensors_error_shape_mismatch")
  expect_error(w$write("m", 1, rows = 5), class = "safetensors_error_invalid_argument")
  expect_error(w$write("m", list(1, 2), rows = 1), class = "safetensors_error_invalid_argument")
  expect_error(w$write("q", c(1, 1, 1), rows = 2:4), class = "safetensors_error_misaligned")
  expect_error(w$write("u", c(1, 2, 300)), class = "safetensors_error_conversion")
  # All of that counted nothing: the rest is written and the file is right.
  w$write("m", matrix(0, 1, 2), rows = 1)
  w$write("m", matrix(4, 1, 2), rows = 4)
  w$write("q", c(0.5, 1, 1.5, 2, 3, 4))
  w$write("u", c(1, 2, 255))
  expect_snapshot(print(w))
  close(w)
  got <- safe_load_file("model.safetensors")
  expect_equal(unclass(got$m), matrix(c(0, 1, 1, 4), 4, 2), ignore_attr = TRUE)
  expect_equal(as.vector(got$u), c(1, 2, 255))
})

test_that("closing with rows missing is an error that leaves nothing and keeps the writer open", {
  dir <- withr::local_tempdir()
  withr::local_dir(dir)
  writeLines("old", "model.safetensors")
  lay <- data.frame(name = c("a", "b", "c"), dtype = "F32")
  lay$shape <- list(c(10, 2), 3, c(0, 4))
  w <- safe_writer("model.safetensors", lay)
  w$write("a", matrix(1, 4, 2), rows = 1:4)
  expect_snapshot(error = TRUE, close(w))
  cnd <- expect_error(close(w), class = "safetensors_error_incomplete_write")
  expect_identical(cnd$tensors, c("a", "b"))
  expect_identical(readLines("model.safetensors"), "old")
  expect_identical(dir_listing("."), "model.safetensors")
  expect_snapshot(print(w))
  w$write("a", matrix(2, 6, 2), rows = 5:10)
  w$write("b", 1:3)
  close(w)
  expect_equal(safe_load_file("model.safetensors")$a[, 1], rep(c(1, 2), c(4, 6)))
})

test_that("an aborted, failed or garbage-collected writer leaves nothing and releases the folder", {
  dir <- withr::local_tempdir()
  lay <- data.frame(name = "a", dtype = "F32")
  lay$shape <- list(c(1000, 10))
  w <- safe_writer(dir, lay, max_shard_size = 1000)
  w$write("a", matrix(1, 10, 10), rows = 1:10)
  # The folder is held: a save to it from this session is an error.
  expect_snapshot(error = TRUE, safe_save_file(list(x = 1), file.path(dir, "other.safetensors")), transform = function(x) gsub(dir, "<dir>", x, fixed = TRUE))
  w$abort()
  expect_identical(dir_listing(dir), character())
  expect_error(w$write("a", 1), class = "safetensors_error_closed")
  expect_invisible(close(w))
  # Garbage-collected: nothing left, and the folder free again.
  local({
    w <- safe_writer(dir, lay)
    w$write("a", matrix(1, 10, 10), rows = 1:10)
    NULL
  })
  safe_save_file(list(x = 1), file.path(dir, "other.safetensors"))
  expect_identical(dir_listing(dir), "other.safetensors")
})

test_that("a killed process writing leaves nothing, and the next save cleans up", {
  skip_on_cran()
  skip_on_os("windows")
  skip_if_not_installed("callr")
  dir <- withr::local_tempdir()
  flag <- file.path(tempdir(), paste0("started-", basename(dir)))
  child <- callr::r_bg(function(dir, flag) {
    lay <- data.frame(name = "a", dtype = "F32")
    lay$shape <- list(c(1000, 100))
    w <- safetensors::safe_writer(dir, lay, max_shard_size = 100000)
    w$write("a", matrix(1, 500, 100), rows = 1:500)
    file.create(flag)
    Sys.sleep(60)
  }, list(dir, flag), libpath = .libPaths())
  on.exit(child$kill(), add = TRUE)
  for (i in 1:300) if (file.exists(flag) || !child$is_alive()) break else Sys.sleep(0.1)
  expect_true(file.exists(flag), label = paste(child$read_all_error(), collapse = "\n"))
  child$kill()
  unlink(flag)
  leftover <- dir_listing(dir)
  expect_false(any(grepl("^model", leftover)))
  safe_save_file(list(x = 1), dir)
  expect_identical(dir_listing(dir), "model.safetensors")
})

test_that("layouts are checked", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  lay <- data.frame(name = c("a", "b"), dtype = c("F32", "F32"))
  lay$shape <- list(2, 3)
  expect_snapshot(error = TRUE, {
    safe_writer(path, lay[c("name", "dtype")])
    safe_writer(path, transform(lay, name = c("a", "a")))
    safe_writer(path, transform(lay, dtype = c("F32", "F33")))
    safe_writer(path, `$<-`(lay, "shape", list(2, -1)))
    safe_writer(path, lay, max_shard_size = "1 parsec")
    safe_writer("hf://owner/name/model.safetensors", lay)
  })
  expect_error(safe_writer(path, lay[c("name", "dtype")]), class = "safetensors_error_invalid_argument")
  expect_error(safe_writer(path, transform(lay, name = c("a", "a"))), class = "safetensors_error_duplicate_name")
  expect_error(safe_writer(path, transform(lay, dtype = c("F32", "F33"))), class = "safetensors_error_invalid_argument")
  expect_error(safe_writer(path, `$<-`(lay, "shape", list(2, -1))), class = "safetensors_error_invalid_argument")
  expect_error(safe_writer(file.path(path, "no", "such"), lay), class = "safetensors_error_file_not_found")
  # A writer of no tensors writes a file of none.
  w <- safe_writer(path, lay[0, ])
  close(w)
  expect_length(safe_load_file(path), 0)
})

test_that("Python's safetensors reads a writer's file exactly", {
  skip_without_python()
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- withr::with_seed(3, array(rnorm(5 * 4 * 3), c(5, 4, 3)))
  lay <- data.frame(name = "x", dtype = "F64")
  lay$shape <- list(c(5, 4, 3))
  w <- safe_writer(path, lay)
  w$write("x", x[4:5, , ], rows = 4:5)
  w$write("x", x[1:3, , ], rows = 1:3)
  close(w)
  out <- run_python(c(
    "import sys, numpy as np",
    "from safetensors.numpy import load_file",
    "t = load_file(sys.argv[1])['x']",
    "print(t.shape)",
    "print(repr(float(t[3, 2, 1])), repr(float(t[0, 1, 2])))"
  ), path)
  expect_identical(out[[1]], "(5, 4, 3)")
  vals <- as.numeric(strsplit(out[[2]], " ")[[1]])
  expect_identical(vals, c(x[4, 3, 2], x[1, 2, 3]))
})

test_that("writing a 256 MiB tensor in blocks keeps memory to about one block", {
  skip_on_cran()
  skip_if_not(file.exists("/proc/self/status"), "needs /proc/self/status")
  dir <- withr::local_tempdir()
  out <- run_limited_r("true", c(
    "hwm <- function() as.numeric(sub('[^0-9]*([0-9]+).*', '\\\\1', grep('^VmHWM', readLines('/proc/self/status'), value = TRUE))) / 1024",
    "library(safetensors)",
    sprintf("path <- %s", deparse(file.path(dir, "big.safetensors"))),
    "lay <- data.frame(name = 'w', dtype = 'F32'); lay$shape <- list(c(65536, 1024))",
    "block <- matrix(0.5, 4096, 1024)",
    "w <- safe_writer(path, lay, sync = FALSE)",
    "w$write('w', block, rows = 1:4096)",
    "before <- hwm()",
    "for (k in 2:16) w$write('w', block, rows = (k - 1) * 4096 + 1:4096)",
    "close(w)",
    "cat('growth', hwm() - before, '\\n')",
    "cat('size', file.size(path), '\\n')"
  ))
  growth <- as.numeric(sub("growth ", "", grep("^growth", out, value = TRUE)))
  expect_length(growth, 1)
  # The block is 32 MiB of doubles (16 MiB as F32), made before `before`;
  # the whole tensor is 256 MiB. The writer's own buffers are a few MiB.
  expect_lt(growth, 32)
  expect_identical(safe_info(file.path(dir, "big.safetensors"))$bytes, 256 * 2^20)
})

test_that("framework tensors are written through the registry", {
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed(), "LibTorch is not installed")
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- torch::torch_randn(6, 3)
  lay <- data.frame(name = c("x", "h"), dtype = c("F32", "BF16"))
  lay$shape <- list(c(6, 3), c(6, 3))
  w <- safe_writer(path, lay)
  w$write("x", x[4:6, ], rows = 4:6)
  w$write("x", x[1:3, ], rows = 1:3)
  w$write("h", x)
  expect_error(w$write("h", x[1:3, ], rows = 1:3), class = "safetensors_error_already_written")
  close(w)
  got <- safe_load_file(path, framework = "torch")
  expect_true(torch::torch_equal(got$x, x))
  expect_true(torch::torch_equal(got$h, x$to(dtype = torch::torch_bfloat16())))
})
