# Live round trips with Python's safetensors, the reference implementation
# (interop.py is Python's half). Skipped when Python, safetensors or numpy
# is missing; BF16, F8 and F4 also need ml_dtypes.

numpy_dtypes <- c("BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16", "F32", "F64", "C64")
ml_dtypes_dtypes <- c("BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F4")

interop <- function(...) run_python(readLines(test_path("interop.py")), c(...))

has_ml_dtypes <- function() {
  if (is.null(python_cache$ml_dtypes)) {
    python_cache$ml_dtypes <- identical(
      python_system2(python_exe(), c("-c", shQuote("import ml_dtypes")), stdout = FALSE, stderr = FALSE),
      0L
    )
  }
  python_cache$ml_dtypes
}

# R tensors of dtype `d`: a scalar, a matrix, a 3-D array, zero-size ones,
# and the extremes and special values the dtype has.
r_tensors <- function(d) {
  withr::local_seed(match(d, c(numpy_dtypes, ml_dtypes_dtypes)))
  vals <- function(n) {
    switch(d,
      BOOL = runif(n) < 0.5,
      U8 = sample(0:255, n, TRUE), I8 = sample(-128:127, n, TRUE),
      U16 = sample(0:65535, n, TRUE), I16 = sample(-32768:32767, n, TRUE),
      I32 = sample(c(-.Machine$integer.max, .Machine$integer.max, -5:5), n, TRUE),
      U32 = round(runif(n, 0, 2^32 - 1)), I64 = round(rnorm(n) * 2^40), U64 = round(runif(n) * 2^50),
      C64 = complex(real = rnorm(n), imaginary = rnorm(n)),
      F8_E8M0 = 2^sample(-20:20, n, TRUE),
      F4 = sample(c(0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -6), n, TRUE),
      rnorm(n) * 4
    )
  }
  special <- switch(d,
    BOOL = c(TRUE, FALSE), U8 = c(0, 255), I8 = c(-128, 127), U16 = c(0, 65535), I16 = c(-32768, 32767),
    I32 = c(-2147483647L, 2147483647L, NA)[1:2], U32 = c(0, 2^32 - 1),
    I64 = c(-2^53, 2^53), U64 = c(0, 2^53),
    C64 = complex(real = c(NaN, -0, Inf), imaginary = c(1, -0, -Inf)),
    F16 = , F32 = , F64 = , BF16 = c(NaN, Inf, -Inf, -0, 0),
    F8_E4M3 = , F8_E4M3FNUZ = , F8_E5M2FNUZ = c(NaN, 0, 0.5, -1),
    F8_E5M2 = c(NaN, Inf, -Inf, -0),
    F8_E8M0 = c(NaN, 2^-127, 2^127, 1),
    F4 = c(-0, 6, -6, 0.5)
  )
  x <- list(
    m = matrix(vals(12), 3, 4), a = array(vals(24), c(2, 3, 4)),
    e = vals(0), e3 = array(vals(0), if (d == "F4") c(2, 0, 4) else c(2, 0, 3)),
    special = special
  )
  if (d != "F4") x$s <- structure(vals(1), shape = integer(0))
  if (d %in% c("U8", "U16", "I8", "I16")) x <- lapply(x, function(v) { storage.mode(v) <- "integer"; v })
  names(x) <- paste0(d, "_", names(x))
  x
}

# What Python must see in the tensors R read back from its own file: values
# row-major, numbers as hex.
expectations <- function(x, metadata) {
  hex <- function(v) sprintf("%a", as.numeric(v))
  tensors <- lapply(seq_along(x), function(i) {
    name <- names(x)[[i]]
    v <- x[[i]]
    rm <- if (is.null(dim(v))) as.vector(v) else as.vector(aperm(v, rev(seq_along(dim(v)))))
    t <- list(
      name = jsonlite::unbox(name), dtype = jsonlite::unbox(attr(v, "dtype")),
      shape = as.integer(dim(v) %||% attr(v, "shape") %||% length(v))
    )
    if (is.logical(rm)) {
      t$values <- rm
    } else if (is.complex(rm)) {
      t$values <- hex(Re(rm))
      t$imag <- hex(Im(rm))
    } else {
      t$values <- hex(rm)
    }
    t
  })
  list(metadata = lapply(metadata, jsonlite::unbox), tensors = tensors)
}

# R writes, Python reads and checks, Python writes back, R reads that and
# re-saves it byte for byte.
round_trip <- function(dtypes) {
  x <- do.call(c, lapply(dtypes, r_tensors))
  dtype <- unlist(lapply(dtypes, function(d) setNames(rep(d, length(r_tensors(d))), names(r_tensors(d)))))
  metadata <- list(format = "pt", "ünïcode ✓" = "välue", empty = "")
  dir <- withr::local_tempdir(.local_envir = parent.frame())
  from_r <- file.path(dir, "from-r.safetensors")
  safe_save_file(x, from_r, metadata = metadata, dtype = dtype)
  y <- suppressWarnings(safe_load_file(from_r))

  expect_path <- file.path(dir, "expect.json")
  jsonlite::write_json(expectations(y, metadata), expect_path, digits = NA)
  out <- interop("check", from_r, expect_path)
  expect_identical(out[length(out)], sprintf("checked %d tensors", length(x)))

  from_py <- file.path(dir, "from-py.safetensors")
  interop("resave", from_r, from_py, "source=python")
  z <- suppressWarnings(safe_load_file(from_py))
  expect_setequal(names(z), names(y))
  for (name in names(y)) {
    expect_identical(value_bits(z[[name]]), value_bits(y[[name]]), label = name)
    expect_identical(attributes(z[[name]]), attributes(y[[name]]), label = name)
  }
  expect_identical(attr(z, "metadata")[["__metadata__"]], list(source = "python"))
  expect_identical(safe_serialize(z, metadata = list(source = "python")), read_bytes(from_py))
}

test_that("Python reads what R writes, for every numpy dtype, and R reads it back", {
  skip_without_python()
  round_trip(numpy_dtypes)
})

test_that("Python reads what R writes, for BF16, F8 and F4 (with ml_dtypes)", {
  skip_without_python()
  skip_if_not(has_ml_dtypes(), "Python's ml_dtypes is not installed")
  round_trip(ml_dtypes_dtypes)
})

# Python writes random tensors; R reads them as numpy sees them and saving
# them again reproduces Python's file.
python_writes <- function(dtypes, seed) {
  dir <- withr::local_tempdir(.local_envir = parent.frame())
  path <- file.path(dir, "python.safetensors")
  expect_path <- file.path(dir, "expect.json")
  interop("write", path, expect_path, seed, dtypes)
  expect <- jsonlite::read_json(expect_path)
  res <- load_quietly(path)
  x <- res$value
  expect_setequal(names(x), vapply(expect$tensors, function(t) t$name, ""))
  for (t in expect$tensors) {
    expect_tensor(x[[t$name]], t)
  }
  expect_identical(res$warnings, character())
  expect_identical(safe_serialize(x, metadata = list(writer = "python")), read_bytes(path))
  out <- file.path(dir, "r.safetensors")
  safe_save_file(x, out, metadata = attr(x, "metadata")[["__metadata__"]])
  expect_identical(read_bytes(out), read_bytes(path))
}

test_that("R reads what Python writes, for every numpy dtype, and re-saves it byte for byte", {
  skip_without_python()
  python_writes(numpy_dtypes, 1)
  python_writes(numpy_dtypes, 2)
})

test_that("R reads what Python writes, for BF16, F8 and F4, and re-saves it byte for byte", {
  skip_without_python()
  skip_if_not(has_ml_dtypes(), "Python's ml_dtypes is not installed")
  python_writes(ml_dtypes_dtypes, 3)
})

test_that("Python reads R's header details: names, empty tensors, metadata only", {
  skip_without_python()
  dir <- withr::local_tempdir()
  # The empty name, which the format allows, as a list loaded from a file
  # holds it (a list built in R can't have it: see test-save.R).
  x <- structure(
    list(1:3, matrix(c(1.5, 2), 1), TRUE, numeric(), structure(7L, shape = integer(0))),
    names = c("日本語", "", 'q"uote\\', "tab\there", "z"),
    class = c("safetensors_tensors", "list")
  )
  path <- file.path(dir, "names.safetensors")
  metadata <- c(b = "2", a = "1", "é" = "ü")
  safe_save_file(x, path, metadata = metadata)
  y <- safe_load_file(path)
  jsonlite::write_json(expectations(y, as.list(metadata)), file.path(dir, "e.json"), digits = NA)
  out <- interop("check", path, file.path(dir, "e.json"))
  expect_identical(out[length(out)], "checked 5 tensors")

  empty <- file.path(dir, "empty.safetensors")
  safe_save_file(list(), empty, metadata = list(only = "metadata"))
  jsonlite::write_json(list(metadata = list(only = jsonlite::unbox("metadata")), tensors = list()), file.path(dir, "e2.json"))
  expect_identical(interop("check", empty, file.path(dir, "e2.json")), "checked 0 tensors")
})

test_that("Python reads names and metadata R had in Latin-1, and tensors stored by alignment", {
  skip_without_python()
  dir <- withr::local_tempdir()
  latin <- iconv(c("café", "naïve"), "UTF-8", "latin1")
  x <- setNames(list(TRUE, c(1.5, 2.5), 1:3, structure(c(0.5, 1), dtype = "F16")), c(latin[[1]], "w", latin[[2]], "h"))
  metadata <- setNames(latin[[2]], latin[[1]])
  path <- file.path(dir, "latin.safetensors")
  safe_save_file(x, path, metadata = metadata)
  y <- safe_load_file(path)
  expect_identical(names(y), c("café", "w", "naïve", "h"))
  jsonlite::write_json(expectations(y, list("café" = "naïve")), file.path(dir, "e.json"), digits = NA)
  out <- interop("check", path, file.path(dir, "e.json"))
  expect_identical(out[length(out)], "checked 4 tensors")
  # Python's own writer would store these tensors in the same order.
  again <- file.path(dir, "python.safetensors")
  interop("resave", path, again, "k=v")
  expect_identical(safe_info(again)$name[order(safe_info(again)$begin)], safe_info(path)$name[order(safe_info(path)$begin)])
})

test_that("int64 = \"character\" and \"integer64\" read Python's 64-bit integers exactly; Python reads integer64 back", {
  skip_without_python()
  dir <- withr::local_tempdir()
  path <- file.path(dir, "ints.safetensors")
  # Python writes the extremes and random values, and prints each tensor's
  # values in R's (column-major) order: t.flatten(order="F").
  out <- run_python(c(
    "import sys, numpy as np",
    "from safetensors.numpy import save_file",
    "rng = np.random.default_rng(7)",
    "i = rng.integers(-2**63, 2**63 - 1, size=(3, 4, 5), dtype=np.int64, endpoint=True)",
    "i.flat[:3] = [-2**63, 2**63 - 1, 2**53 + 1]",
    "u = rng.integers(0, 2**64 - 1, size=(6, 7), dtype=np.uint64, endpoint=True)",
    "u.flat[:3] = [2**64 - 1, 2**63, 2**63 - 1]",
    "save_file({'i': i, 'u': u}, sys.argv[1])",
    "for t in (i, u): print(' '.join(str(v) for v in t.flatten(order='F')))"
  ), path)
  want <- strsplit(out[length(out) - 1:0], " ")
  x <- safe_load_file(path, int64 = "character")
  expect_identical(dim(x$i), c(3L, 4L, 5L))
  expect_identical(as.vector(x$i), want[[1]])
  expect_identical(as.vector(x$u), want[[2]])
  expect_identical(x$i[1, 1, 1], "-9223372036854775808")
  expect_identical(x$u[1, 1], "18446744073709551615")
  skip_if_not_installed("bit64")
  y <- suppressWarnings(safe_load_file(path, int64 = "integer64"))
  expect_identical(as.character(y$i)[-1], want[[1]][-1])
  expect_true(is.na(y$i[1, 1, 1]))
  # R writes integer64 values back exactly: Python sees the numbers it wrote
  # (-2^63 aside, integer64's NA, which can't be written).
  y$i[1, 1, 1] <- bit64::as.integer64(0)
  back <- file.path(dir, "back.safetensors")
  safe_save_file(list(i = y$i), back)
  got <- run_python(c(
    "import sys, numpy as np",
    "from safetensors.numpy import load_file",
    "t = load_file(sys.argv[1])['i']",
    "print(t.dtype, list(t.shape))",
    "print(' '.join(str(v) for v in t.flatten(order='F')))"
  ), back)
  expect_identical(got[[1]], "int64 [3, 4, 5]")
  expect_identical(strsplit(got[[2]], " ")[[1]], c("0", want[[1]][-1]))
})

test_that("uint8 = \"raw\" reads Python's uint8 arrays with their dims; raw arrays go back as uint8", {
  skip_without_python()
  dir <- withr::local_tempdir()
  path <- file.path(dir, "img.safetensors")
  run_python(c(
    "import sys, numpy as np",
    "from safetensors.numpy import save_file",
    "img = np.random.default_rng(3).integers(0, 255, size=(33, 47, 3), dtype=np.uint8, endpoint=True)",
    "save_file({'img': img}, sys.argv[1])",
    "np.save(sys.argv[1] + '.npy', img)"
  ), path)
  x <- safe_load_file(path, uint8 = "raw")$img
  expect_type(x, "raw")
  expect_identical(dim(x), c(33L, 47L, 3L))
  # x[i, j, k] is t[i - 1, j - 1, k - 1].
  probe <- run_python(c(
    "import sys, numpy as np",
    "t = np.load(sys.argv[1] + '.npy')",
    "print(t[0, 0, 0], t[32, 46, 2], t[5, 17, 1], t[20, 3, 0])"
  ), path)
  expect_identical(as.integer(c(x[1, 1, 1], x[33, 47, 3], x[6, 18, 2], x[21, 4, 1])), as.integer(strsplit(probe, " ")[[1]]))
  expect_identical(as.integer(x), as.vector(safe_load_file(path)$img))
  # Written back from R, the raw array is Python's array, and the same file.
  back <- file.path(dir, "back.safetensors")
  safe_save_file(list(img = x), back)
  same <- run_python(c(
    "import sys, numpy as np",
    "from safetensors.numpy import load_file",
    "t = load_file(sys.argv[2])['img']",
    "print(t.dtype, list(t.shape), bool((t == np.load(sys.argv[1] + '.npy')).all()))"
  ), c(path, back))
  expect_identical(same, "uint8 [33, 47, 3] True")
  expect_identical(read_bytes(back), read_bytes(path))
})
