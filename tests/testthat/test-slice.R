test_that("index_dots() keeps empty indices where they are, and evaluates the rest once", {
  f <- function(...) index_dots(...)
  w <- whole_index
  expect_identical(f(), list())
  expect_identical(f(, 2), list(w, 2))
  expect_identical(f(1:3, , NULL), list(1:3, w, NULL))
  expect_identical(f(, ), list(w, w))
  # Forwarded dots and a missing formal passed on.
  g <- function(x, ...) f(...)
  expect_identical(g(0, , 5), list(w, 5))
  h <- function(a, b) f(a, b)
  expect_identical(h(1), list(1, w))
  # Evaluated in the caller's frame, once.
  n <- 0
  y <- 7
  k <- function(...) {
    y <- 1
    f(...)
  }
  expect_identical(k(y, {
    n <- n + 1
    2
  }), list(7, 2))
  expect_identical(n, 1)
  expect_true(is_whole_index(w))
  expect_false(is_whole_index(list()))
})

# Index expressions evaluated on the full array `x` and on the slice object;
# `x` is the tensor of the name given with each group.
slice_cases <- list(
  vec = expression(
    x[], x[3], x[2:5], x[seq(1, 7, by = 3)], x[7:1], x[c(2, 2, 5)], x[-1],
    x[-(2:3)], x[c(TRUE, FALSE)], x[integer(0)], x[0], x[c(0, 4)], x[2.9],
    x[3, drop = FALSE], x[NULL], x[7]
  ),
  mat = expression(
    x[], x[1:3, ], x[, 2], x[2, 3], x[2, , drop = FALSE], x[, 2, drop = FALSE],
    x[seq(1, 5, by = 2), seq(2, 6, by = 2)], x[5:1, ], x[c(1, 1, 3), c(6, 1)],
    x[-1, -6], x[c(TRUE, FALSE), ], x[, c(FALSE, TRUE, TRUE)], x[0, ],
    x[, integer(0)], x[2:4, 3:5], x[1, 1, drop = FALSE], x[, ], x[5, 6]
  ),
  arr = expression(
    x[1, , ], x[, 2, ], x[, , 3], x[1:2, 2:3, 4:5], x[3, 4, 5], x[, , 1:2],
    x[2, , , drop = FALSE], x[c(3, 1), -2, seq(1, 5, by = 4)], x[, 1, 1],
    x[-1, , c(TRUE, FALSE, TRUE, FALSE, TRUE)], x[, , ]
  ),
  a4 = expression(
    x[2, 3, 4, 5], x[, , 1, ], x[1, 2:3, , seq(1, 5, by = 2)], x[, , , 5],
    x[1:2, 1, 1:4, 1], x[2, , 3, , drop = FALSE]
  ),
  f32 = expression(x[2:3, ], x[, 6], x[4, c(1, 3, 5)]),
  f16 = expression(x[2, , ], x[, 3, 2:4]),
  bf16 = expression(x[, 2], x[2, ]),
  i64 = expression(x[2, ], x[c(3, 1), 1]),
  u8 = expression(x[2:3, 4:5], x[, 1]),
  int = expression(x[, 4], x[3:2, ]),
  lgl = expression(x[2, ], x[, c(1, 3)]),
  cplx = expression(x[2:3, 2], x[, 1]),
  f4 = expression(x[1, 3:4], x[, 1:2], x[2, ], x[, ]),
  empty = expression(x[0, ], x[, 2], x[integer(0), 1:2]),
  scalar = expression(x[])
)

test_that("slices equal subsetting the eager array, for many index forms", {
  path <- local_lazy_file()
  for (backend in c("mmap", "read")) {
    h <- safe_open(path, backend = backend)
    for (nm in names(slice_cases)) {
      full <- h[[nm]]
      dtype <- attr(full, "dtype")
      sl <- h$slice(nm)
      for (e in slice_cases[[nm]]) {
        want <- eval(e, list(x = strip_dtype(full)))
        if (nm == "scalar") {
          want <- full
        } else {
          attr(want, "dtype") <- dtype
        }
        got <- eval(e, list(x = sl))
        expect_identical(got, want, label = paste(backend, nm, deparse(e)))
      }
    }
    close(h)
  }
})

test_that("slices of a 1-D tensor stay 1-D arrays as R keeps them", {
  path <- local_lazy_file()
  h <- safe_open(path)
  expect_identical(dim(h$slice("vec")[2:4]), 3L)
  expect_null(dim(h$slice("vec")[2]))
  expect_identical(dim(h$slice("vec")[2, drop = FALSE]), 1L)
  expect_identical(dim(h$slice("mat")), c(5L, 6L))
  expect_null(dim(h$slice("scalar")))
})

test_that("safe_slice() is the function form and accepts paths", {
  path <- local_lazy_file()
  h <- safe_open(path)
  full <- strip_dtype(h[["arr"]])
  expect_identical(strip_dtype(safe_slice(h, "arr", 2, , 3:4)), full[2, , 3:4])
  expect_identical(strip_dtype(safe_slice(path, "arr", , 1, , drop = FALSE)), full[, 1, , drop = FALSE])
  expect_identical(strip_dtype(safe_slice(h, 3, 1, 1, 1)), full[1, 1, 1])
  expect_error(safe_slice(h, "nope", 1), class = "safetensors_error_tensor_not_found")
  expect_error(safe_slice(h, "arr", 1, 1, 1, drop = NA), class = "safetensors_error_invalid_argument")
})

test_that("safe_slice() takes `path` first, as the other readers do, and `x =` as 0.4.0 named it", {
  expect_identical(names(formals(safe_slice))[1], names(formals(safe_open))[1])
  expect_identical(names(formals(safe_slice))[1], names(formals(safe_info))[1])
  path <- local_lazy_file()
  h <- safe_open(path)
  withr::defer(close(h))
  want <- safe_slice(h, "arr", 2, , 3:4)
  expect_identical(safe_slice(path = h, name = "arr", 2, , 3:4), want)
  # `x =` in any position, with the other arguments by name or position.
  expect_identical(safe_slice(x = h, "arr", 2, , 3:4), want)
  expect_identical(safe_slice("arr", x = h, 2, , 3:4), want)
  expect_identical(safe_slice(x = h, name = "arr", 2, , 3:4), want)
  expect_identical(safe_slice(2, x = path, name = "arr", , 3:4), want)
  expect_identical(safe_slice(x = h, "arr", 2, , 3:4, drop = FALSE), safe_slice(h, "arr", 2, , 3:4, drop = FALSE))
  expect_identical(do.call(safe_slice, list(x = h, name = "arr", 2, quote(expr = ), 3:4)), want)
  # Arguments are evaluated once.
  n <- 0
  expect_identical(safe_slice(x = h, "arr", {
    n <- n + 1
    2
  }, , 3:4), want)
  expect_identical(n, 1)
  # An `x` that came through another function's `...` can't be told apart.
  f <- function(...) safe_slice(...)
  expect_snapshot(error = TRUE, f(x = h, "arr", 2, , 3:4))
  expect_error(safe_slice(path = h, x = 1, "arr"), class = "safetensors_error_invalid_argument")
})

test_that("slice errors are classed and nothing wraps around", {
  path <- local_lazy_file()
  h <- safe_open(path)
  sl <- h$slice("mat")
  expect_error(sl[6, ], class = "safetensors_error_invalid_slice")
  expect_error(sl[, 7], class = "safetensors_error_invalid_slice")
  expect_error(sl[1:6, ], class = "safetensors_error_invalid_slice")
  expect_error(sl[-6, ], class = "safetensors_error_invalid_slice")
  expect_error(sl[c(-1, 2), ], class = "safetensors_error_invalid_slice")
  expect_error(sl[NA, ], class = "safetensors_error_invalid_slice")
  expect_error(sl[NA_real_, 1], class = "safetensors_error_invalid_slice")
  expect_error(sl[Inf, 1], class = "safetensors_error_invalid_slice")
  expect_error(sl["a", ], class = "safetensors_error_invalid_slice")
  expect_error(sl[factor("a"), ], class = "safetensors_error_invalid_slice")
  expect_error(sl[list(1), ], class = "safetensors_error_invalid_slice")
  expect_error(sl[rep(TRUE, 6), ], class = "safetensors_error_invalid_slice")
  expect_error(sl[1], class = "safetensors_error_invalid_slice")
  expect_error(sl[1, 1, 1], class = "safetensors_error_invalid_slice")
  expect_error(h$slice("scalar")[1], class = "safetensors_error_invalid_slice")
  expect_error(h$slice("vec")[8], class = "safetensors_error_invalid_slice")
  expect_error(sl[1, 1, drop = "no"], class = "safetensors_error_invalid_argument")
  # Half a byte of F4 is not addressable.
  expect_error(h$slice("f4")[1, 1], class = "safetensors_error_misaligned")
  expect_error(h$slice("f4")[, 1], class = "safetensors_error_misaligned")
  expect_snapshot(error = TRUE, transform = function(x) gsub(path, "<path>", x, fixed = TRUE), {
    sl[6, ]
    sl[1]
    h$slice("f4")[1, 1]
  })
})

test_that("slices of I32 holding NA_integer_ bits come back as double, with a warning", {
  bytes <- safe_serialize(list(x = structure(matrix(c(1, -2147483648, 3, 4), 2), dtype = "I32")))
  h <- safe_open(bytes)
  expect_warning(got <- h$slice("x")[2, ], class = "safetensors_warning_type")
  expect_identical(strip_dtype(got), c(-2147483648, 4))
  expect_silent(got <- h$slice("x")[1, ])
  expect_identical(strip_dtype(got), c(1L, 3L))
})

test_that("framework slices get the bytes and shape of the selection", {
  path <- local_lazy_file()
  h <- safe_open(path, framework = "raw")
  r <- safe_open(path)
  cases <- list(
    mat = list(2:4, c(1, 3, 5)),
    f16 = list(1:2, 2:3, 1:4),
    f4 = list(1:2, 1:2),
    bf16 = list(2, 1:3),
    cplx = list(c(3, 1), 2),
    scalar = list()
  )
  for (nm in names(cases)) {
    full <- r[[nm]]
    idx <- cases[[nm]]
    got <- do.call(`[`, c(list(h$slice(nm)), idx, list(drop = FALSE)))
    want_r <- if (length(idx) == 0) full else do.call(`[`, c(list(strip_dtype(full)), idx, list(drop = FALSE)))
    attr(want_r, "dtype") <- attr(full, "dtype")
    want <- safe_load_file(safe_serialize(list(x = want_r)), framework = "raw")$x
    expect_identical(got, want, label = nm)
  }
  got <- h$slice("mat")[2, 1:3]
  expect_identical(attr(got, "shape"), 3L)
  withr::defer(rm("capture", envir = safetensors_frameworks))
  safetensors_frameworks[["capture"]] <- list(
    constructor = function(raw, meta, ...) list(raw = raw, meta = meta, args = list(...)),
    packages = character()
  )
  h <- safe_open(path, framework = "capture", device = "cpu")
  got <- h$slice("mat")[2, 1:3]
  expect_identical(got$meta, list(dtype = "F64", shape = 3L, data_offsets = c(0, 24)))
  expect_identical(got$args, list(device = "cpu"))
  expect_identical(readBin(got$raw, "double", 3), c(2, 7, 12))
  expect_identical(h$slice("mat")[2, 2]$meta$shape, list())
})

test_that("slices agree with Python's safe_open(...).get_slice", {
  skip_without_python()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(
    m = as_loaded_dtype(matrix(as.numeric(1:42), 6, 7), "F32"),
    a = structure(array(0:119, c(4, 5, 6)), dtype = "I64"),
    h = as_loaded_dtype(array(seq(0, 29.5, by = 0.5), c(3, 4, 5)), "F16"),
    v = structure(0:9, dtype = "U8")
  ), path)
  # Each case: the tensor, the R indices (drop = FALSE) and Python's.
  cases <- list(
    list("m", quote(x[2:4, , drop = FALSE]), "[1:4]"),
    list("m", quote(x[, seq(1, 7, by = 3), drop = FALSE]), "[:, ::3]"),
    list("m", quote(x[seq(2, 6, by = 2), 3:7, drop = FALSE]), "[1::2, 2:]"),
    list("m", quote(x[6, 7, drop = FALSE]), "[5:6, 6:7]"),
    list("a", quote(x[, 2:3, seq(1, 6, by = 2), drop = FALSE]), "[:, 1:3, ::2]"),
    list("a", quote(x[4, , 6, drop = FALSE]), "[3:, :, 5:]"),
    list("a", quote(x[, , , drop = FALSE]), "[...]"),
    list("h", quote(x[seq(1, 3, by = 2), 2:4, 1:5, drop = FALSE]), "[::2, 1:4]"),
    list("v", quote(x[seq(2, 10, by = 4), drop = FALSE]), "[1::4]")
  )
  code <- c(
    "import sys, json",
    "from safetensors import safe_open",
    "cases = json.loads(sys.argv[2])",
    "with safe_open(sys.argv[1], 'np') as f:",
    "    for name, idx in cases:",
    "        t = eval('f.get_slice(name)' + idx)",
    "        print(json.dumps({'shape': list(t.shape), 'values': [float(v) for v in t.flatten()]}))"
  )
  out <- run_python(code, c(path, jsonlite::toJSON(lapply(cases, function(c) list(c[[1]], c[[3]])), auto_unbox = TRUE)))
  h <- safe_open(path)
  for (k in seq_along(cases)) {
    py <- jsonlite::fromJSON(out[[k]])
    x <- h$slice(cases[[k]][[1]])
    got <- eval(cases[[k]][[2]])
    expect_identical(dim(got), as.integer(py$shape), label = cases[[k]][[3]])
    row_major <- as.vector(aperm(strip_dtype(got), rev(seq_along(dim(got)))))
    expect_equal(as.numeric(row_major), as.numeric(py$values), label = cases[[k]][[3]])
  }
})

test_that("a slice object acts as the array it stands for", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  cube <- array(as.numeric(1:24), 2:4)
  safe_save_file(
    list(cube = cube, v = 1:3, s = structure(2.5, shape = integer(0)), none = matrix(0, 0, 3), slice = 7L),
    path
  )
  h <- safe_open(path)
  withr::defer(close(h))
  s <- h$slice("cube")
  expect_identical(length(s), 24L)
  expect_identical(dim(s), 2:4)
  expect_identical(as.array(s), h[["cube"]])
  expect_identical(as.array(s)[2, 3, 4], 24)
  expect_identical(length(h$slice("s")), 1L)
  expect_null(dim(h$slice("s")))
  expect_identical(as.array(h$slice("s")), as.array(h[["s"]]))
  expect_identical(as.array(h$slice("v")), h[["v"]])
  expect_identical(length(h$slice("none")), 0L)
  expect_snapshot({
    str(s)
    str(h$slice("v"))
    str(h$slice("s"))
    str(h$slice("none"))
    str(list(a = s))
    s
  })
  # str() reads only what it shows; without values for other frameworks.
  r <- safe_open(path, framework = "raw")
  withr::defer(close(r))
  expect_snapshot(str(r$slice("cube")))
  # A tensor named "slice" is listed once after `$`.
  expect_identical(utils::.DollarNames(h, ""), c("slice", "keys", "get_tensor", "get_slice", "metadata", "cube", "v", "s", "none"))
  close(h)
  expect_snapshot(str(s))
  expect_error(as.array(s), class = "safetensors_error_closed")
})

test_that("length() of a slice counts elements beyond .Machine$integer.max", {
  s <- structure(list(shape = c(65536L, 65536L)), class = "safetensors_slice")
  expect_identical(length(s), 2^32)
})

test_that("safe_slice() takes the handle's choices, or its own", {
  x <- list(i64 = structure(c(2^60, 1, 2), dtype = "I64"), u8 = as.raw(1:5))
  path <- local_lazy_file(x)
  h <- safe_open(path, int64 = "character", uint8 = "raw")
  expect_identical(safe_slice(h, "i64", 1:2), structure(c("1152921504606846976", "1"), dim = 2L, dtype = "I64"))
  expect_identical(safe_slice(h, "u8", 2:3), structure(as.raw(2:3), dim = 2L, dtype = "U8"))
  expect_identical(safe_slice(h, "u8", 2:3, uint8 = "integer"), structure(2:3, dim = 2L, dtype = "U8"))
  expect_identical(safe_slice(h, "i64", 2:3, int64 = "double"), structure(c(1, 2), dim = 2L, dtype = "I64"))
  # A path is opened with the choices given (the defaults otherwise).
  expect_identical(safe_slice(path, "u8", 2:3, uint8 = "raw"), structure(as.raw(2:3), dim = 2L, dtype = "U8"))
  expect_identical(safe_slice(path, "u8", 2:3), structure(2:3, dim = 2L, dtype = "U8"))
  expect_identical(safe_slice(path, "i64", 1, int64 = "character"), structure("1152921504606846976", dtype = "I64"))
  expect_error(safe_slice(h, "u8", 1, uint8 = "bytes"), class = "safetensors_error_invalid_argument")
  expect_error(safe_open(path, framework = "raw", int64 = "character"), class = "safetensors_error_invalid_argument")
  hr <- safe_open(path, framework = "raw")
  expect_error(safe_slice(hr, "u8", 1, uint8 = "raw"), class = "safetensors_error_invalid_argument")
})
