# The "torch" framework and the files torch_save() writes. The first tests
# need no torch: torch_save() files (fixtures/torch-*.safetensors, written
# by R torch through safetensors 0.2.1, see make-torch-fixtures.R) read with
# framework "r" and "raw", and the framework's own logic (dtype maps,
# argument checks, the planning of pieces, the checks of the Rust entry
# points that fill torch memory). The rest skip without torch and LibTorch.

drop_dtype <- function(x) {
  attr(x, "dtype") <- NULL
  x
}

# The JSON string torch keeps in __metadata__$`__r__`, parsed.
torch_meta <- function(x) {
  jsonlite::parse_json(attr(x, "metadata")[["__metadata__"]][["__r__"]])
}

# ---- torch_save() files without torch ------------------------------------

test_that("a torch_save() tensor reads without torch, with its metadata", {
  skip_if_not_installed("jsonlite")
  x <- safe_load_file(fixture("torch-tensor.safetensors"))
  expect_identical(names(x), "...unnamed...")
  want <- matrix(c(1.5, -2, 3, 4.25, 0, -1), 2, 3)
  expect_identical(x[[1]], structure(want, dtype = "F32"))
  meta <- torch_meta(x)
  expect_identical(meta$type, "tensor")
  expect_identical(meta$version, 3L)
  expect_identical(meta$requires_grad, list(`...unnamed...` = TRUE))
})

test_that("a torch_save() list reads without torch, and its __robj__ unserializes", {
  skip_if_not_installed("jsonlite")
  x <- safe_load_file(fixture("torch-list.safetensors"))
  expect_identical(torch_meta(x)$type, "list")
  raws <- safe_load_file(fixture("torch-list.safetensors"), framework = "raw")
  expect_identical(attr(raws[["__robj__"]], "dtype"), "U8")
  obj <- unserialize(as.vector(raws[["__robj__"]]))
  expect_identical(names(obj), c("w", "note", "nested", "g", "s"))
  expect_identical(obj$note, "hello")
  expect_identical(obj$nested$k, 3L)
  # Tensors are placeholders naming their tensor in the file.
  expect_s3_class(obj$w, "torch_tensor_address")
  tensor <- function(placeholder) x[[unclass(placeholder)]]
  expect_identical(as.vector(tensor(obj$w)), c(1, -2, 3, 4e10))
  expect_identical(attr(tensor(obj$w), "dtype"), "I64")
  expect_identical(as.vector(tensor(obj$nested$b)), c(TRUE, FALSE, TRUE))
  expect_identical(as.vector(tensor(obj$g)), c(0.5, 1))
  expect_identical(tensor(obj$s), structure(2.5, shape = integer(0), dtype = "F64"))
  expect_identical(torch_meta(x)$requires_grad, setNames(list(TRUE), unclass(obj$g)))
})

test_that("a torch_save() complex tensor and module read without torch", {
  skip_if_not_installed("jsonlite")
  z <- safe_load_file(fixture("torch-complex.safetensors"), framework = "raw")
  expect_identical(torch_meta(z)$special_dtype[[1]], list(shape = 2L, dtype = "cfloat"))
  bytes <- as.vector(z[[1]])
  expect_identical(readBin(bytes, "double", 4, size = 4, endian = "little"), c(1, -0.5, 2, 0.25))

  m <- safe_load_file(fixture("torch-module.safetensors"))
  expect_identical(torch_meta(m)$type, "module")
  expect_identical(names(m), c("weight", "bias", "__robj__"))
  expect_equal(as.vector(m$weight), c(0.1, 0.2, 0.3, -0.1, -0.2, -0.3)[c(1, 4, 2, 5, 3, 6)], tolerance = 1e-7)
  expect_identical(as.vector(m$bias), c(0.5, -0.5))
  # The module is an R serialization (XDR, "X\n"); restoring it needs torch.
  expect_identical(as.raw(m[["__robj__"]][1:2]), charToRaw("X\n"))
})

test_that("re-saving a torch_save() file keeps every tensor and the metadata", {
  for (file in c("torch-tensor", "torch-list", "torch-complex", "torch-module")) {
    raws <- safe_load_file(fixture(paste0(file, ".safetensors")), framework = "raw")
    meta <- attr(raws, "metadata")[["__metadata__"]]
    again <- safe_deserialize(safe_serialize(raws, metadata = meta), framework = "raw")
    expect_identical(again[names(raws)], raws[names(raws)], label = file)
    expect_identical(attr(again, "metadata")[["__metadata__"]], meta, label = file)
  }
})

# ---- the torch framework's own logic, without torch -----------------------

test_that("dtypes R torch lacks are classed errors before torch is needed", {
  fns <- safetensors:::torch_dtype_fns()
  lacking <- c("U16", "U32", "U64", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F6_E2M3", "F6_E3M2", "F4")
  expect_setequal(setdiff(safetensors:::dtype_names(), names(fns)), lacking)
  for (d in lacking) {
    cnd <- expect_error(safetensors:::torch_dtype_of(d, "w"), class = "safetensors_error_unsupported_dtype")
    expect_identical(cnd$dtype, d)
    expect_identical(cnd$tensor, "w")
    expect_match(conditionMessage(cnd), "framework = \"r\"", fixed = TRUE)
  }
  cnd <- expect_error(safetensors:::torch_dtype_of("F4"), class = "safetensors_error_unsupported_dtype")
  expect_null(cnd$tensor)
  expect_match(conditionMessage(cnd), "A tensor has dtype")
  # All tensors are checked before any is read; the first one lacking a
  # type is named.
  check <- safetensors:::check_torch_dtypes
  expect_null(check(names(fns), names(fns)))
  cnd <- expect_error(check(c("F32", "U16", "F4"), c("a", "b", "c")), class = "safetensors_error_unsupported_dtype")
  expect_identical(c(cnd$tensor, cnd$dtype), c("b", "U16"))
  # The registered constructor says so too, before it touches torch.
  ctor <- safetensors_frameworks$torch$constructor
  expect_error(ctor(raw(4), list(dtype = "U16", shape = list(2L))), class = "safetensors_error_unsupported_dtype")
})

# A stand-in for a torch dtype: torch_dtype_to_safe() only calls `$.type()`.
fake_torch_dtype <- function(type) list(.type = function() type)

test_that("the torch dtypes written are those read, and others are classed errors", {
  names_map <- safetensors:::torch_dtype_names()
  expect_setequal(unname(names_map), names(safetensors:::torch_dtype_fns()))
  for (type in names(names_map)) {
    expect_identical(safetensors:::torch_dtype_to_safe(fake_torch_dtype(type)), names_map[[type]])
  }
  cnd <- expect_error(safetensors:::torch_dtype_to_safe(fake_torch_dtype("ComplexDouble")), class = "safetensors_error_unsupported_dtype")
  expect_identical(cnd$dtype, "ComplexDouble")
  expect_match(conditionMessage(cnd), "ComplexDouble")
})

test_that("a torch tensor's meta is its shape and dtype, and an extent over 2^31 - 1 is an error", {
  # R torch reports a shape as R integers, so an extent over 2^31 - 1 comes
  # back NA or negative; a real tensor that large needs over 2 GiB, so a
  # stand-in with the two fields safe_tensor_meta() reads shows the check.
  fake_tensor <- function(shape) {
    structure(list(shape = shape, dtype = fake_torch_dtype("Float")), class = "torch_tensor")
  }
  expect_identical(safe_tensor_meta(fake_tensor(c(2L, 3L))), list(shape = list(2L, 3L), dtype = "F32"))
  expect_identical(safe_tensor_meta(fake_tensor(integer(0))), list(shape = list(), dtype = "F32"))
  for (shape in list(c(2L, NA), c(-2147483647L, 2L))) {
    cnd <- expect_error(safe_tensor_meta(fake_tensor(shape)), class = "safetensors_error_invalid_argument")
    expect_match(conditionMessage(cnd), "2^31 - 1", fixed = TRUE)
  }
})

test_that("the constructor's bytes must fill the tensor exactly", {
  check <- safetensors:::check_torch_bytes
  expect_null(check(raw(24), "F32", c(2, 3)))
  expect_null(check(raw(4), "BOOL", 4))
  expect_null(check(raw(8), "F64", numeric(0)))
  expect_null(check(raw(0), "F16", c(3, 0)))
  for (bad in list(raw(23), raw(25), rep(0, 24), NULL)) {
    expect_error(check(bad, "F32", c(2, 3)), class = "safetensors_error_invalid_argument")
  }
  cnd <- expect_error(check(raw(3), "F32", 2), class = "safetensors_error_invalid_argument")
  expect_match(conditionMessage(cnd), "needs 8 bytes, not 3")
})

test_that("`device` is taken as the constructor takes it", {
  # The tensor read goes through torch_finish() with the read's `...`.
  finish <- function(...) do.call(safetensors:::torch_finish, c(list(x), list(...)))
  # On the CPU, a tensor is returned as it is, not copied.
  x <- structure(list(), class = "no_methods")
  expect_identical(finish(), x)
  expect_identical(finish(device = "cpu"), x)
  expect_identical(finish("cpu"), x)
  expect_error(finish(client = "x"), "unused argument", class = "simpleError")
  expect_error(finish("cpu", "cuda"), "unused argument", class = "simpleError")
  expect_identical(formals(safetensors_frameworks$torch$constructor)$device, "cpu")
})

test_that("torch reads the file's bytes itself through its fast path, unless replaced", {
  hooks <- safetensors:::framework_hooks
  expect_identical(hooks("torch")$fill, safetensors:::torch_fill)
  expect_true(hooks("torch")$views)
  expect_null(hooks("r"))
  expect_null(hooks("raw"))
  frameworks <- safetensors_frameworks
  ctor <- frameworks[["torch"]]
  withr::defer(frameworks[["torch"]] <- ctor)
  frameworks[["torch"]] <- list(constructor = function(raw, meta, ...) raw, packages = "torch")
  expect_null(hooks("torch"))
  # Writing too: the replaced entry has no `write` hook.
  expect_null(safetensors:::framework_writer(structure(list(), class = "torch_tensor")))
})

test_that("torch without LibTorch is a classed error", {
  expect_null(safetensors:::check_libtorch(installed = TRUE))
  cnd <- expect_error(safetensors:::check_libtorch(installed = FALSE), class = "safetensors_error_framework_not_installed")
  expect_s3_class(cnd, "safetensors_error")
  expect_identical(cnd$package, "torch")
  expect_match(conditionMessage(cnd), "install_torch()", fixed = TRUE)
})

# The row-major element ranges [from, to) that tensor_pieces()'s pieces of a
# tensor of `shape` cover, one row each.
piece_ranges <- function(pieces, shape) {
  rank <- length(shape)
  stride <- rev(cumprod(c(1, rev(shape[-1]))))[seq_len(rank)]
  t(vapply(pieces, function(p) {
    k <- length(p$select)
    from <- sum((p$select - 1) * stride[seq_len(k)])
    if (is.null(p$start)) {
      len <- prod(shape[seq_len(rank) > k])
    } else {
      from <- from + (p$start - 1) * stride[[k + 1]]
      len <- p$n * stride[[k + 1]]
    }
    c(from, from + len)
  }, numeric(2)))
}

test_that("tensors are copied in pieces that cover them in order", {
  pieces <- safetensors:::tensor_pieces
  shapes <- list(7, c(3, 5), c(2, 3, 4), c(1, 1, 9), c(4, 1, 3), c(5, 7, 1), c(0, 3), c(3, 0, 2), numeric(0))
  for (shape in shapes) {
    for (size in c(1, 2, 8)) {
      for (chunk in c(1, 3, 8, 20, 1000)) {
        label <- sprintf("shape [%s], %g-byte elements, chunk %g", paste(shape, collapse = ","), size, chunk)
        p <- pieces(shape, size, chunk)
        r <- piece_ranges(p, shape)
        # Consecutive, from the first element to the last.
        expect_identical(c(r[, 1], prod(shape)), c(0, r[, 2]), label = label)
        # None larger than the chunk, unless it is one element.
        expect_true(all((r[, 2] - r[, 1]) * size <= max(chunk, size)), label = label)
      }
    }
  }
  # Rows of 12 bytes gathered into pieces of two rows; the last is short.
  expect_identical(
    pieces(c(5, 3), 4, 28),
    list(
      list(select = integer(), start = 1, n = 2),
      list(select = integer(), start = 3, n = 2),
      list(select = integer(), start = 5, n = 1)
    )
  )
  # Rows of 14 bytes, over the chunk: each row is split the same way.
  p <- pieces(c(2, 7), 2, 6)
  expect_identical(lapply(p, `[[`, "select"), as.list(rep(1:2, each = 3)))
  expect_identical(vapply(p, `[[`, numeric(1), "start"), rep(c(1, 4, 7), 2))
  expect_identical(vapply(p, `[[`, numeric(1), "n"), rep(c(3, 3, 1), 2))
  # Small tensors and scalars are one piece.
  whole <- list(list(select = integer(), start = NULL, n = NULL))
  expect_identical(pieces(c(4, 6), 4, 96), whole)
  expect_identical(pieces(numeric(0), 8, 1), whole)
})

# ---- torch ---------------------------------------------------------------

# One tensor of each torch dtype, shape [2, 3].
torch_dtype_cases <- function() {
  torch <- asNamespace("torch")
  m <- matrix(c(0, 1.5, -2, 3.25, 100, -0.125), 2, 3)
  ints <- matrix(c(0, 1, -2, 3, 100, -128), 2, 3)
  list(
    F64 = torch$torch_tensor(m, dtype = torch$torch_float64()),
    F32 = torch$torch_tensor(m, dtype = torch$torch_float32()),
    F16 = torch$torch_tensor(m, dtype = torch$torch_float16()),
    BF16 = torch$torch_tensor(m, dtype = torch$torch_bfloat16()),
    I64 = torch$torch_tensor(ints * 1e6, dtype = torch$torch_int64()),
    I32 = torch$torch_tensor(ints * 1e4, dtype = torch$torch_int32()),
    I16 = torch$torch_tensor(ints * 100, dtype = torch$torch_int16()),
    I8 = torch$torch_tensor(ints, dtype = torch$torch_int8()),
    U8 = torch$torch_tensor(abs(ints) + 100, dtype = torch$torch_uint8()),
    BOOL = torch$torch_tensor(m > 0),
    C64 = torch$torch_complex(torch$torch_tensor(m), torch$torch_tensor(-m)),
    F8_E4M3 = torch$torch_tensor(m)$to(dtype = torch$torch_float8_e4m3fn()),
    F8_E5M2 = torch$torch_tensor(m)$to(dtype = torch$torch_float8_e5m2())
  )
}

# Whether two torch tensors have the same dtype, shape and bytes.
expect_same_tensor <- function(x, y, label = NULL) {
  expect_s3_class(x, "torch_tensor")
  expect_identical(
    list(dtype = x$dtype$.type(), shape = x$shape, bytes = safe_tensor_buffer(x)),
    list(dtype = y$dtype$.type(), shape = y$shape, bytes = safe_tensor_buffer(y)),
    label = label
  )
}

test_that("every torch dtype round-trips with its safetensors dtype", {
  skip_if_no_torch()
  x <- torch_dtype_cases()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  expect_identical(safe_info(path)$dtype, names(x))
  y <- safe_load_file(path, framework = "torch")
  for (d in names(x)) {
    expect_same_tensor(y[[d]], x[[d]], label = d)
  }
  # The file holds the logical values: R arrays equal as_array().
  r <- safe_load_file(path)
  for (d in c("F64", "F32", "F16", "I32", "BOOL")) {
    expect_identical(drop_dtype(r[[d]]), torch::as_array(x[[d]]), label = d)
  }
  for (d in c("I16", "I8", "U8")) {
    expect_identical(drop_dtype(r[[d]]), torch::as_array(x[[d]]$to(dtype = torch::torch_int32())), label = d)
  }
})

test_that("the torch dtype maps are complete", {
  skip_if_no_torch()
  fns <- safetensors:::torch_dtype_fns()
  for (d in names(fns)) {
    dt <- getExportedValue("torch", fns[[d]])()
    expect_identical(safetensors:::torch_dtype_to_safe(dt), d)
  }
  for (d in setdiff(safetensors:::dtype_names(), names(fns))) {
    expect_error(safetensors:::torch_dtype_of(d), class = "safetensors_error_unsupported_dtype")
  }
})

test_that("dtypes R torch lacks are classed errors naming them, on read and write", {
  skip_if_no_torch()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(ok = 1, u = structure(1:3, dtype = "U16")), path)
  for (call in list(
    quote(safe_load_file(path, framework = "torch")),
    quote(safe_deserialize(read_bytes(path), framework = "torch")),
    quote(safe_open(path, framework = "torch")$u),
    quote(safe_load_file(file(path), framework = "torch"))
  )) {
    cnd <- expect_error(eval(call), class = "safetensors_error_unsupported_dtype")
    expect_match(conditionMessage(cnd), "U16")
    expect_match(conditionMessage(cnd), "framework = \"r\"", fixed = TRUE)
    expect_identical(cnd$dtype, "U16")
  }
  # The other tensors of the file still read.
  expect_identical(torch::as_array(safe_load_file(path, framework = "torch", tensors = "ok")$ok), 1)
  expect_error(safe_load_file(fixture("dtype-F8_E8M0.safetensors"), framework = "torch"), class = "safetensors_error_unsupported_dtype")

  cnd <- expect_error(safe_serialize(list(z = torch::torch_randn(2, dtype = torch::torch_cdouble()))), class = "safetensors_error_unsupported_dtype")
  expect_match(conditionMessage(cnd), "ComplexDouble")
})

test_that("scalars, zero-size and high-rank tensors keep their shapes", {
  skip_if_no_torch()
  x <- list(
    scalar = torch::torch_scalar_tensor(2.5),
    iscalar = torch::torch_scalar_tensor(7L, dtype = torch::torch_int64()),
    empty = torch::torch_empty(0),
    empty3 = torch::torch_empty(c(2, 0, 3)),
    one = torch::torch_ones(1, 1, 1),
    r5 = torch::torch_arange(1, 2 * 3 * 2 * 2 * 3)$view(c(2, 3, 2, 2, 3))
  )
  bytes <- safe_serialize(x)
  y <- safe_deserialize(bytes, framework = "torch")
  for (n in names(x)) {
    expect_same_tensor(y[[n]], x[[n]], label = n)
  }
  expect_identical(y$scalar$dim(), 0L)
  expect_identical(safe_deserialize(bytes)$scalar, structure(2.5, shape = integer(0), dtype = "F32"))
})

test_that("non-contiguous tensors are written with their logical values", {
  skip_if_no_torch()
  base <- torch::torch_arange(1, 60)$view(c(3, 4, 5))
  x <- list(
    transposed = base[1, , ]$t(),
    permuted = base$permute(c(3, 1, 2)),
    rows = base[2:3, , ], # storage offset
    columns = base[, 2:3, 4], # strided, offset
    stepped = base[, , 1:5:2],
    selected = base$select(3, 2),
    expanded = torch::torch_tensor(1:3)$expand(c(4, 3)) # stride 0
  )
  for (n in setdiff(names(x), "rows")) {
    expect_false(x[[n]]$is_contiguous(), label = n)
  }
  y <- safe_deserialize(safe_serialize(x), framework = "torch")
  r <- safe_deserialize(safe_serialize(x))
  for (n in names(x)) {
    expect_true(torch::torch_equal(y[[n]], x[[n]]$contiguous()), label = n)
    expect_identical(safe_tensor_buffer(x[[n]]), safe_tensor_buffer(x[[n]]$contiguous()), label = n)
    expect_equal(drop_dtype(r[[n]]), torch::as_array(x[[n]]), label = n)
  }
})

test_that("torch tensors are written piece by piece, in row-major order", {
  skip_if_no_torch()
  pieces <- function(x, chunk) {
    out <- list()
    put <- function(b, n) out[[length(out) + 1]] <<- b[seq_len(n)]
    meta <- safe_tensor_meta(x)
    safetensors:::write_pieces(x, safetensors_frameworks$torch, meta$dtype, unlist(meta$shape), put, new.env(), chunk = chunk)
    out
  }
  base <- torch::torch_arange(1, 4 * 6 * 10)$view(c(4, 6, 10))
  strided <- list(base$permute(c(2, 1, 3)), base$transpose(2, 3), base$permute(c(3, 1, 2)), base[, , 2]$t())
  for (x in c(list(base, base[2:4, , ], base[, 2:5, ], base[, , 3:8]), strided)) {
    for (chunk in c(1, 40, 100, 1000, 10000)) {
      got <- pieces(x, chunk)
      expect_identical(unlist(got), safe_tensor_buffer(x$contiguous()))
    }
  }
  # Rows (here, of 240 bytes) are gathered up to the piece size, and split
  # when larger.
  expect_length(pieces(base, 500), 2)
  expect_true(all(lengths(pieces(base, 100)) <= 100))
  # Strided tensors too: no piece holds more than the chunk.
  for (x in strided) {
    expect_true(all(lengths(pieces(x, 100)) <= 100))
  }

  # Through the writers, with pieces of 16 MiB: a 40 MiB tensor.
  x <- torch::torch_randn(1280, 8192)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(x = x, y = x[, 2:8000]), path)
  got <- safe_load_file(path, framework = "torch")
  expect_true(torch::torch_equal(got$x, x))
  expect_true(torch::torch_equal(got$y, x[, 2:8000]))
  safe_save_file(list(x = x), path)
  expect_identical(safe_serialize(list(x = x)), read_bytes(path))
  con <- rawConnection(raw(), "wb")
  withr::defer(close(con))
  safe_save_file(list(x = x), con)
  expect_identical(rawConnectionValue(con), read_bytes(path))
})

test_that("torch tensors whose memory holds the file's bytes are written from it, the others through a copy", {
  skip_if_no_torch()
  base <- torch::torch_arange(1, 60)$view(c(3, 4, 5))
  x <- list(
    whole = torch::torch_randn(64, 33),
    head_rows = base[1:1, , ], # offset 0, in a larger storage
    grad = torch::torch_randn(5, 7, requires_grad = TRUE),
    flags = torch::torch_tensor(c(TRUE, FALSE, TRUE))$view(c(3, 1)),
    halves = torch::torch_randn(6, 6)$to(dtype = torch::torch_bfloat16()),
    rows = base[2:3, , ], # a storage offset
    transposed = base[1, , ]$t(),
    expanded = torch::torch_tensor(1:3)$expand(c(4, 3)), # stride 0
    complex = torch::torch_complex(torch::torch_randn(4), torch::torch_randn(4)),
    scalar = torch::torch_tensor(2.5)$squeeze(),
    empty = torch::torch_zeros(0, 3)
  )
  neg_view <- asNamespace("torch")[["torch__neg_view"]]
  if (is.function(neg_view)) {
    # Values that are the negated memory: only a copy writes them right.
    x$negated <- neg_view(torch::torch_randn(4, 3))
  }
  # Told apart by their sizes in bytes.
  direct <- c(whole = 64 * 33 * 4, head_rows = 80, grad = 140, flags = 3, halves = 72)
  sizes <- numeric()
  put <- safetensors:::writer_put_memory_
  local_package_function("writer_put_memory_", function(w, address, n) {
    sizes <<- c(sizes, n)
    put(w, address, n)
  })
  want <- safe_serialize(x)
  expect_length(sizes, 0) # a raw vector is always copied
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  expect_identical(read_bytes(path), want)
  expect_setequal(sizes, direct)
  # Through a file connection, as torch_save() writes.
  sizes <- numeric()
  con <- file(path, "wb")
  safe_save_file(x, con)
  close(con)
  expect_identical(read_bytes(path), want)
  expect_setequal(sizes, direct)
  # Converted to another dtype: through a copy.
  sizes <- numeric()
  safe_save_file(x["whole"], path, dtype = "F16")
  expect_length(sizes, 0)
  got <- safe_load_file(path, framework = "torch")
  expect_true(torch::torch_equal(got$whole, x$whole$to(dtype = torch::torch_float16())))
})

test_that("torch tensors are described and located all at once, as each one alone would be", {
  skip_if_no_torch()
  ns <- asNamespace("safetensors")
  base <- torch::torch_arange(1, 60)$view(c(3, 4, 5))
  x <- list(
    base, base[2:3, , ], base[1, , ]$t(), torch::torch_tensor(1:3)$expand(c(4, 3)),
    torch::torch_tensor(2.5)$squeeze(), torch::torch_zeros(0, 3), torch::nn_linear(3, 2)$weight,
    torch::torch_randn(6, 6)$to(dtype = torch::torch_bfloat16()), torch::torch_tensor(c(TRUE, FALSE)),
    torch::torch_complex(torch::torch_randn(4), torch::torch_randn(4)),
    torch::torch_empty(2, 3, device = "meta")
  )
  metas <- ns$torch_metas(x)
  for (i in seq_along(x)) {
    meta <- safe_tensor_meta(x[[i]])
    expect_identical(metas$shapes[[i]], as.numeric(unlist(meta$shape)), label = i)
    expect_identical(metas$dtypes[[i]], meta$dtype, label = i)
  }
  dtypes <- metas$dtypes
  memories <- ns$torch_memories(x, dtypes, metas$shapes)
  # Each alone, through torch's methods.
  alone <- function(t, shape) {
    laid_out <- length(shape) > 0 && all(shape > 0) && t$device$type == "cpu" && !t$is_neg() &&
      isTRUE(tryCatch(t$is_set_to(t$as_strided(shape, rev(cumprod(c(1, rev(shape[-1])))), 0)), error = function(e) FALSE))
    if (laid_out) t$storage()$data_ptr() else NA_character_
  }
  for (i in seq_along(x)) {
    want <- if (startsWith(dtypes[[i]], "C")) NA_character_ else alone(x[[i]], metas$shapes[[i]])
    expect_identical(memories[[i]], want, label = i)
  }
  # The whole tensor, its first rows, the parameter, the BF16 and BOOL ones.
  expect_identical(which(!is.na(memories)), c(1L, 7L, 8L, 9L))
  # A dtype safetensors lacks: NA here, and the method's error when saved,
  # before any other tensor's.
  cdouble <- torch::torch_complex(torch::torch_randn(2, dtype = torch::torch_double()), torch::torch_randn(2, dtype = torch::torch_double()))
  expect_identical(ns$torch_metas(list(base, cdouble))$dtypes, c("F32", NA))
  path <- withr::local_tempfile(fileext = ".safetensors")
  cnd <- expect_error(safe_save_file(list(a = base, b = cdouble, c = "text"), path), class = "safetensors_error_unsupported_dtype")
  expect_identical(cnd$dtype, "ComplexDouble")
  expect_false(file.exists(path))
  # A class of its own before torch's may have a method of its own.
  sub <- torch::torch_randn(2, 3)
  class(sub) <- c("st_sub_tensor", class(sub))
  expect_null(ns$torch_metas(list(base, sub)))
  calls <- 0
  registerS3method("safe_tensor_meta", "st_sub_tensor", function(x) {
    calls <<- calls + 1
    NextMethod()
  })
  safe_save_file(list(a = base, b = sub), path)
  expect_identical(calls, 1)
  got <- safe_load_file(path, framework = "torch")
  expect_true(torch::torch_equal(got$b, sub))
})

test_that("a tensor's memory is located just before it is written when another framework's methods run during the write", {
  skip_if_no_torch()
  # The method of another framework's tensor, written first (an F64 one:
  # the file holds tensors of larger dtypes first), moves a torch tensor's
  # memory (set_() gives it another storage): its bytes must come from
  # where its memory is when its turn comes.
  victim <- torch::torch_zeros(4, 5)
  ones <- torch::torch_ones(4, 5)
  registerS3method("safe_tensor_meta", "st_moving_tensor", function(x) list(shape = list(1), dtype = "F64"))
  registerS3method("safe_tensor_buffer", "st_moving_tensor", function(x) {
    victim$set_(ones)
    writeBin(2.5, raw(), endian = "little")
  })
  mover <- structure(list(), class = "st_moving_tensor")
  path <- withr::local_tempfile(fileext = ".safetensors")
  for (to in c("file", "connection")) {
    victim$set_(torch::torch_zeros(4, 5))
    x <- list(a = mover, b = victim, c = torch::torch_arange(1, 10))
    if (to == "file") {
      safe_save_file(x, path)
    } else {
      con <- file(path, "wb")
      safe_save_file(x, con)
      close(con)
    }
    expect_identical(safe_info(path)$name, c("a", "b", "c"), label = to)
    got <- safe_load_file(path, framework = "torch")
    expect_true(torch::torch_equal(got$b, ones), label = to)
    expect_true(torch::torch_equal(got$c, torch::torch_arange(1, 10)), label = to)
    expect_identical(as.numeric(got$a), 2.5, label = to)
  }
})

test_that("torch's functions called directly agree with its methods, which serve where it lacks them", {
  skip_if_no_torch()
  ns <- asNamespace("safetensors")
  base <- torch::torch_arange(1, 24)$view(c(2, 3, 4))
  cases <- list(
    base, base[2, , ], base$permute(c(3, 1, 2)), torch::torch_zeros(0, 3),
    torch::torch_tensor(c(TRUE, FALSE)), base$to(dtype = torch::torch_bfloat16()),
    torch::torch_randn(3, 2, requires_grad = TRUE), torch::torch_empty(2, 2, device = "meta")
  )
  # Each answer, or "error" (torch has no meta kernel for is_set_to()).
  answers <- function(...) lapply(rlang::enquos(...), function(q) tryCatch(rlang::eval_tidy(q), error = function(e) "error"))
  methods <- function(x) {
    answers(
      shape = x$shape, type = x$dtype$.type(), device = x$device$type, neg = x$is_neg(),
      set_to_self = x$is_set_to(x), set_to_base = x$is_set_to(base),
      address = tryCatch(x$storage()$data_ptr(), error = function(e) NA_character_)
    )
  }
  ours <- function(x) {
    answers(
      shape = ns$torch_shape(x), type = ns$torch_type(x), device = ns$torch_device_type(x),
      neg = ns$torch_is_neg(x), set_to_self = ns$torch_is_set_to(x, x),
      set_to_base = ns$torch_is_set_to(x, base), address = ns$storage_address(x)
    )
  }
  check <- function() {
    wants <- list()
    for (x in cases) {
      want <- methods(x)
      if (want$address %in% c("0", "0x0", "(nil)")) want$address <- NA_character_
      expect_identical(ours(x), want)
      wants[[length(wants) + 1]] <- want
    }
    # All at once, as the loads ask them, with the meta tensor's storage
    # (no address) and a sparse tensor's (none: an error) among the others.
    addresses <- vapply(wants, function(w) w$address, character(1))
    expect_identical(ns$storage_addresses(cases), addresses)
    sparse <- torch::torch_eye(2)$to_sparse()
    expect_identical(ns$storage_addresses(c(cases, list(sparse))), c(addresses, NA))
    expect_identical(ns$torch_types(cases), vapply(wants, function(w) w$type, character(1)))
    y <- torch::torch_zeros(3, 4, dtype = torch::torch_bfloat16())
    expect_true(ns$torch_copy(y, base[1, , ])$is_set_to(y))
    expect_true(torch::torch_equal(y, base[1, , ]$to(dtype = torch::torch_bfloat16())))
    # A load and a save through them.
    path <- withr::local_tempfile(fileext = ".safetensors")
    safe_save_file(list(a = base, b = base[2, , ]), path)
    got <- safe_load_file(path, framework = "torch")
    expect_true(torch::torch_equal(got$b, base[2, , ]))
    model <- torch::nn_linear(4, 3)
    w <- torch::torch_randn(3, 4)
    safe_save_file(list(weight = w, bias = torch::torch_zeros(3)), path)
    safe_load_model(model, path)
    expect_true(torch::torch_equal(model$weight, w))
  }
  check()
  # As with a torch whose internal functions are gone.
  fns <- ns$torch_cpp_fns
  withr::defer(rm(list = ls(fns), envir = fns))
  for (name in c(
    "cpp_tensor_dim", "cpp_dtype_to_string", "cpp_tensor_device", "cpp_device_type_to_string",
    "cpp_torch_method_is_set_to_self_Tensor_tensor_Tensor", "cpp_torch_method_is_neg_self_Tensor",
    "cpp_torch_method_copy__self_Tensor_src_Tensor", "cpp_Tensor_storage", "cpp_Storage_data_ptr",
    "cpp_torch_tensor_dtype", "cpp_tensor_from_buffer"
  )) {
    expect_true(is.function(ns$torch_cpp(name, base)), label = name)
    assign(name, FALSE, envir = fns)
  }
  check()
})

test_that("large torch tensors are read into memory not marked for huge pages", {
  skip_if_no_torch()
  skip_without_huge_pages()
  # Marked memory took a VM whose balloon takes back free 2 MiB blocks
  # 1.1-1.8 s instead of 0.27 s for 1 GiB (see torch_empty_for()). Over
  # 32 MiB (new memory, not the C library's heap; see test-load.R), with
  # torch's cache of freed blocks emptied between reads.
  x <- list(a = torch::torch_randn(9217, 1031), b = torch::torch_randn(3, 1031))
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  for (backend in c("mmap", "read")) {
    safetensors:::torch_collect()
    y <- safe_load_file(path, framework = "torch", backend = backend)
    # The mapping in the middle of the tensor's memory.
    middle <- smaps_mapping(hex_address(safetensors:::storage_address(y$a)) + 18 * 1024^2)
    expect_false(middle$advised, label = backend)
    expect_true(torch::torch_equal(y$a, x$a))
    expect_true(torch::torch_equal(y$b, x$b))
    rm(y)
  }
})

test_that("a write from memory the kernel can't read is a classed error that leaves no file", {
  skip_if_no_torch()
  skip_on_os("windows")
  dir <- withr::local_tempdir()
  path <- file.path(dir, "out.safetensors")
  spec <- safetensors:::tensor_spec(list(x = torch::torch_zeros(1024)), NULL, NULL)
  w <- safetensors:::writer_open_(spec, "file", path, FALSE, 1L)
  expect_equal(safetensors:::writer_write_(w, Inf)$current, 1)
  # The first page, never mapped: write() reports EFAULT.
  res <- safetensors:::writer_put_memory_(w, "0x10", 4096)
  expect_s3_class(res, "safetensors_rust_error")
  expect_identical(res$kind, "io")
  safetensors:::writer_abort_(w)
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), character())
  # Addresses that are not one, or sizes that are not the tensor's, are
  # refused before anything is written.
  for (bad in list(list("zz", 4096), list("0x0", 4096), list("0x1000", 4095))) {
    w <- safetensors:::writer_open_(spec, "file", path, FALSE, 1L)
    safetensors:::writer_write_(w, Inf)
    res <- safetensors:::writer_put_memory_(w, bad[[1]], bad[[2]])
    expect_identical(res$kind, "invalid_argument")
    safetensors:::writer_abort_(w)
  }
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), character())
})

test_that("tensors that require grad are written, and come back without grad", {
  skip_if_no_torch()
  x <- torch::torch_randn(3, 2, requires_grad = TRUE)
  y <- safe_deserialize(safe_serialize(list(x = x)), framework = "torch")$x
  expect_false(y$requires_grad)
  expect_true(torch::torch_equal(y, x$detach()))
})

test_that("every loader gives the same torch tensors", {
  skip_if_no_torch()
  x <- torch_dtype_cases()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path, metadata = list(k = "v"))
  bytes <- read_bytes(path)
  ref <- safe_load_file(path, framework = "torch")
  expect_identical(attr(ref, "metadata"), attr(safe_load_file(path, framework = "raw"), "metadata"))
  expect_identical(attr(ref, "max_offset"), as.numeric(length(bytes)))
  check <- function(got, label) {
    expect_identical(names(got), names(x), label = label)
    for (n in names(x)) expect_same_tensor(got[[n]], x[[n]], label = paste(label, n))
  }
  check(safe_load_file(path, framework = "torch", backend = "mmap"), "mmap")
  check(safe_load_file(bytes, framework = "torch"), "raw vector")
  check(safe_deserialize(bytes, framework = "torch"), "safe_deserialize")
  con <- file(path, "rb")
  got <- safe_load_file(con, framework = "torch")
  close(con)
  check(got, "file connection")
  expect_identical(attributes(got)[c("metadata", "max_offset")], attributes(ref)[c("metadata", "max_offset")])
  con <- rawConnection(bytes)
  check(safe_load_file(con, framework = "torch"), "rawConnection")
  close(con)
  gz <- withr::local_tempfile(fileext = ".gz")
  out <- gzfile(gz, "wb")
  writeBin(bytes, out)
  close(out)
  con <- gzcon(file(gz, "rb"))
  check(safe_load_file(con, framework = "torch"), "gzcon")
  close(con)

  h <- safe_open(path, framework = "torch")
  withr::defer(close(h))
  check(h[names(x)], "safe_open")
  expect_same_tensor(h$F32, x$F32, "h$F32")
  expect_same_tensor(h$slice("F64")[2, 2:3], x$F64[2, 2:3], "slice")
  f <- safetensors$new(path, framework = "torch")
  check(lapply(setNames(nm = f$keys()), f$get_tensor), "safetensors$new")

  dir <- withr::local_tempdir()
  index <- safe_save_file(x, file.path(dir, "model.safetensors"), max_shard_size = 40)
  check(safe_load_file(index, framework = "torch"), "shards")

  sub <- safe_load_file(path, framework = "torch", tensors = c("I8", "F64"))
  expect_identical(names(sub), c("I8", "F64"))
  con <- rawConnection(bytes)
  withr::defer(close(con))
  expect_identical(names(safe_load_file(con, framework = "torch", tensors = c("I8", "F64"))), c("I8", "F64"))
})

test_that("tensors torch takes as stored are read straight into their memory, the others piece by piece", {
  skip_if_no_torch()
  x <- torch_dtype_cases()
  x$scalar <- torch::torch_tensor(2.5)$squeeze()
  x$empty <- torch::torch_zeros(0, 3)
  x$big <- torch::torch_randn(300, 7)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  bytes <- read_bytes(path)
  # BOOL (a true may be any non-zero byte), complex (a conjugate bit),
  # scalars and empty tensors go through torch's copy.
  direct <- setdiff(names(x), c("BOOL", "C64", "scalar", "empty"))
  calls <- list()
  read <- safetensors:::read_into_memory_
  local_package_function("read_into_memory_", function(x, names, addresses, fresh, threads) {
    calls[[length(calls) + 1]] <<- list(names = names, fresh = fresh)
    read(x, names, addresses, fresh, threads)
  })
  check <- function(got, label) {
    expect_identical(names(got), names(x), label = label)
    for (n in names(x)) expect_same_tensor(got[[n]], x[[n]], label = paste(label, n))
    read <- unlist(lapply(calls, `[[`, "names"))
    expect_setequal(read, direct)
    expect_false(anyDuplicated(read) > 0, label = label)
    expect_true(all(vapply(calls, `[[`, logical(1), "fresh")), label = label)
    calls <<- list()
  }
  check(safe_load_file(path, framework = "torch"), "map")
  check(safe_load_file(path, framework = "torch", backend = "read"), "read")
  check(safe_load_file(bytes, framework = "torch"), "raw vector")
  con <- file(path, "rb")
  check(safe_load_file(con, framework = "torch"), "file connection")
  close(con)
  # In batches of tensors, each read once, with the rest between them.
  local_package_function("memory_batch", 100)
  check(safe_load_file(path, framework = "torch"), "batches")
  # A stream has no positions to read at: all piece by piece.
  con <- rawConnection(bytes)
  got <- safe_load_file(con, framework = "torch")
  close(con)
  expect_length(calls, 0)
  for (n in names(x)) expect_same_tensor(got[[n]], x[[n]], label = paste("rawConnection", n))
})

test_that("a read into memory refuses what it can't take before writing anything", {
  skip_if_no_torch()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(a = torch::torch_randn(4, 4), b = torch::torch_randn(4, 4)), path)
  h <- safe_open(path, framework = "torch")
  withr::defer(close(h))
  part <- safetensors:::hget(h, "parts")[[1]]
  read <- safetensors:::read_into_memory_
  y <- torch::torch_zeros(8, 4)
  at <- safetensors:::storage_address(y)
  messages <- character()
  refused <- function(res, what) {
    expect_s3_class(res, "safetensors_rust_error")
    expect_match(res$message, what, fixed = TRUE)
    expect_true(torch::torch_equal(y, torch::torch_zeros(8, 4)))
    messages <<- c(messages, res$message)
  }
  # The same memory twice (tied weights go through torch's copy instead).
  refused(read(part$ptr, c("a", "b"), c(at, at), TRUE, 2L), "overlapping memory")
  refused(read(part$ptr, c("a", "b"), c("0x0", at), TRUE, 2L), "invalid address")
  refused(read(part$ptr, "a", c(at, at), TRUE, 2L), "as many names as addresses")
  refused(read(part$ptr, "c", at, TRUE, 2L), "`c` is not in the file")
  expect_snapshot(writeLines(messages))
  # Taken: the two tensors, one after the other in y's memory.
  expect_null(read(part$ptr, "a", at, TRUE, 2L))
  expect_true(torch::torch_equal(y[1:4, ], h$a))
})

test_that("the memory a read may take the file's bytes into is that of CPU tensors of the file's dtype, laid out as stored", {
  skip_if_no_torch()
  at <- safetensors:::torch_read_memories
  base <- torch::torch_zeros(4, 6)
  xs <- list(
    base,
    base[2:3, ], # a storage offset
    base$t(), # transposed
    base[1:2, ], # offset 0, in a larger storage: its first bytes
    torch::torch_zeros(4, 6, dtype = torch::torch_float64()),
    torch::torch_zeros(3, dtype = torch::torch_bool()),
    torch::torch_zeros(2, 2)
  )
  dtypes <- c("F32", "F32", "F32", "F32", "F32", "BOOL", "F16")
  shapes <- list(c(4, 6), c(2, 6), c(6, 4), c(2, 6), c(4, 6), 3, c(2, 2))
  got <- at(xs, dtypes, shapes)
  expect_identical(is.na(got), c(FALSE, TRUE, TRUE, FALSE, TRUE, TRUE, TRUE))
  expect_identical(got[[1]], got[[4]])
  expect_identical(got[[1]], safetensors:::storage_address(base))
  # A module's parameters (loaded with gradients off): torch's version
  # counter moves, as copy_() moves it.
  w <- torch::nn_linear(3, 2)$weight
  v <- w$`_version`()
  expect_false(is.na(torch::with_no_grad(at(list(w), "F32", list(c(2, 3)), bump = TRUE))))
  expect_gt(w$`_version`(), v)
})

test_that("the raw-vector constructor and the direct reads agree", {
  skip_if_no_torch()
  x <- torch_dtype_cases()
  bytes <- safe_serialize(x)
  raws <- safe_deserialize(bytes, framework = "raw")
  header <- attr(raws, "metadata")
  ctor <- safetensors_frameworks$torch$constructor
  for (n in names(x)) {
    expect_same_tensor(ctor(as.vector(raws[[n]]), header[[n]]), x[[n]], label = n)
  }
  # A short buffer is an error, not a read past its end.
  expect_error(ctor(raw(3), list(dtype = "F32", shape = list(2L))), class = "safetensors_error_invalid_argument")
})

test_that("torch without LibTorch is a classed error from every reader", {
  skip_if_not_installed("torch")
  skip_if_not_installed("callr")
  # torch installs LibTorch apart; a session with an empty TORCH_HOME has none.
  got <- callr::r(
    function(path) {
      readers <- list(
        function() safetensors::safe_load_file(path, framework = "torch"),
        function() safetensors::safe_load_file(file(path), framework = "torch"),
        function() safetensors::safe_deserialize(readBin(path, "raw", file.size(path)), framework = "torch"),
        function() safetensors::safe_open(path, framework = "torch")
      )
      lapply(readers, function(f) tryCatch(f(), error = function(e) list(class = class(e), package = e$package)))
    },
    args = list(path = normalizePath(fixture("multi.safetensors"))),
    env = c(callr::rcmd_safe_env(), TORCH_HOME = withr::local_tempdir(), TORCH_INSTALL = "0")
  )
  for (g in got) {
    expect_identical(
      g$class[1:3],
      c("safetensors_error_framework_not_installed", "safetensors_error_package_not_installed", "safetensors_error")
    )
    expect_identical(g$package, "torch")
  }
})

test_that("a user's own \"torch\" constructor is used instead of the built-in reads", {
  skip_if_no_torch()
  frameworks <- safetensors_frameworks
  old <- frameworks[["torch"]]
  withr::defer(frameworks[["torch"]] <- old)
  frameworks[["torch"]] <- list(constructor = function(raw, meta, ...) list(meta$dtype, length(raw)), packages = "torch")
  got <- safe_deserialize(safe_serialize(list(a = torch::torch_ones(3))), framework = "torch")
  expect_identical(got$a, list("F32", 12L))
})

test_that("BOOL bytes other than 0 and 1 become true", {
  skip_if_no_torch()
  bytes <- safe_serialize(list(b = structure(as.raw(c(0, 1, 2, 255)), dtype = "BOOL", shape = 4L)))
  con <- rawConnection(bytes)
  withr::defer(close(con))
  for (got in list(
    safe_deserialize(bytes, framework = "torch")$b,
    safe_load_file(con, framework = "torch")$b,
    safetensors_frameworks$torch$constructor(as.raw(c(0, 1, 2, 255)), list(dtype = "BOOL", shape = 4L))
  )) {
    expect_identical(safe_tensor_buffer(got), as.raw(c(0, 1, 1, 1)))
    expect_identical(torch::as_array(got), c(FALSE, TRUE, TRUE, TRUE))
  }
})

test_that("tensors are read on the CPU whatever torch's default device", {
  skip_if_no_torch()
  x <- list(a = torch::torch_randn(3, 4), b = torch::torch_tensor(c(TRUE, FALSE)), s = torch::torch_scalar_tensor(7L))
  bytes <- safe_serialize(x)
  path <- withr::local_tempfile(fileext = ".safetensors")
  writeBin(bytes, path)
  con <- rawConnection(bytes)
  withr::defer(close(con))
  # Under another default device ("meta" holds no data), the package still
  # allocates the tensors it fills on the CPU, so the values arrive.
  got <- torch::with_device(device = "meta", {
    list(
      safe_load_file(path, framework = "torch"),
      safe_load_file(path, framework = "torch", backend = "mmap"),
      safe_deserialize(bytes, framework = "torch"),
      safe_load_file(con, framework = "torch"),
      # The default device the caller set is still in force after the loads.
      torch::torch_empty(1)$device$type
    )
  })
  expect_identical(got[[5]], "meta")
  got <- got[-5]
  expect_identical(torch::torch_empty(1)$device$type, "cpu")
  for (y in got) {
    for (n in names(x)) {
      expect_identical(y[[n]]$device$type, "cpu", label = n)
      expect_same_tensor(y[[n]], x[[n]], label = n)
    }
  }
  # Writing copies from any device the tensors are on.
  expect_identical(torch::with_device(device = "meta", safe_serialize(x)), bytes)
})

test_that("`device` is passed to the tensors", {
  skip_if_no_torch()
  x <- list(a = torch::torch_randn(2, 3), b = torch::torch_tensor(1:4))
  bytes <- safe_serialize(x)
  cpu <- safe_deserialize(bytes, framework = "torch", device = "cpu")
  expect_identical(cpu$a$device$type, "cpu")
  # The meta device holds no data, but shows that the tensors were moved.
  con <- rawConnection(bytes)
  withr::defer(close(con))
  for (got in list(
    safe_deserialize(bytes, framework = "torch", device = "meta"),
    safe_load_file(con, framework = "torch", device = "meta"),
    safe_open(bytes, framework = "torch", device = "meta")[c("a", "b")],
    list(a = safetensors$new(bytes, framework = "torch", device = "meta")$get_tensor("a"))
  )) {
    expect_identical(got$a$device$type, "meta")
    expect_identical(got$a$shape, c(2L, 3L))
  }
  expect_identical(safe_deserialize(bytes, framework = "torch", device = torch::torch_device("cpu"))$a$device$type, "cpu")
  expect_error(safe_deserialize(bytes, framework = "torch", client = "x"), "unused argument", class = "simpleError")
  skip_if_not(torch::cuda_is_available(), "CUDA is not available")
  gpu <- safe_deserialize(bytes, framework = "torch", device = "cuda")
  expect_identical(gpu$a$device$type, "cuda")
  expect_identical(safe_serialize(gpu), bytes)
})

test_that("torch_save() and torch_load() work through this package", {
  skip_if_no_torch()
  torch <- asNamespace("torch")
  path <- withr::local_tempfile(fileext = ".pt")

  x <- torch$torch_randn(4, 5)$t()
  torch$torch_save(x, path)
  expect_true(torch$torch_equal(torch$torch_load(path), x))
  expect_true(torch$torch_equal(torch$torch_load(torch$torch_serialize(x)), x))

  g <- torch$torch_randn(3, requires_grad = TRUE)
  torch$torch_save(g, path)
  expect_true(torch$torch_load(path)$requires_grad)

  z <- torch$torch_complex(torch$torch_randn(3), torch$torch_randn(3))
  torch$torch_save(z, path)
  expect_true(torch$torch_equal(torch$torch_load(path), z))

  lst <- list(a = torch$torch_randn(2), b = list(c = torch$torch_tensor(1:3), d = "text"), e = 1:3)
  torch$torch_save(lst, path)
  got <- torch$torch_load(path)
  expect_true(torch$torch_equal(got$a, lst$a))
  expect_true(torch$torch_equal(got$b$c, lst$b$c))
  expect_identical(got[c("e")], lst[c("e")])
  expect_identical(got$b$d, "text")

  m <- torch$nn_sequential(torch$nn_linear(4, 3), torch$nn_relu(), torch$nn_batch_norm1d(3))
  torch$torch_save(m, path)
  m2 <- torch$torch_load(path)
  input <- torch$torch_randn(5, 4)
  m$eval()
  m2$eval()
  expect_true(torch$torch_equal(m(input), m2(input)))
  expect_identical(names(m2$state_dict()), names(m$state_dict()))

  # The file is a safetensors file like any other.
  expect_identical(names(safe_load_file(path)), c(names(m$state_dict()), "__robj__"))
})

test_that("torch_load() reads the torch_save() files of safetensors 0.2.1", {
  skip_if_no_torch()
  torch <- asNamespace("torch")
  x <- torch$torch_load(fixture("torch-tensor.safetensors"))
  expect_identical(torch$as_array(x), matrix(c(1.5, -2, 3, 4.25, 0, -1), 2, 3))
  expect_true(x$requires_grad)

  lst <- torch$torch_load(fixture("torch-list.safetensors"))
  expect_identical(lst$w$dtype$.type(), "Long")
  expect_identical(torch$as_array(lst$w$to(dtype = torch$torch_float64())), c(1, -2, 3, 4e10))
  expect_identical(lst$note, "hello")
  expect_identical(torch$as_array(lst$nested$b), c(TRUE, FALSE, TRUE))
  expect_true(lst$g$requires_grad)
  expect_identical(torch$as_array(lst$s), 2.5)

  z <- torch$torch_load(fixture("torch-complex.safetensors"))
  expect_identical(z$dtype$.type(), "ComplexFloat")
  expect_identical(torch$as_array(z$real), c(1, 2))
  expect_identical(torch$as_array(z$imag), c(-0.5, 0.25))

  m <- torch$torch_load(fixture("torch-module.safetensors"))
  y <- m(torch$torch_tensor(matrix(c(1, 2, 3), 1)))
  expect_equal(torch$as_array(y), matrix(c(1.9, -1.9), 1), tolerance = 1e-6)

  # Re-saved by this package, torch still reads them.
  for (file in c("torch-tensor", "torch-list", "torch-complex", "torch-module")) {
    raws <- safe_load_file(fixture(paste0(file, ".safetensors")), framework = "raw")
    again <- safe_serialize(raws, metadata = attr(raws, "metadata")[["__metadata__"]])
    expect_no_error(torch$torch_load(again))
  }
})

test_that("files Python wrote, without torch's metadata, load as torch tensors", {
  skip_if_no_torch()
  x <- safe_load_file(fixture("multi.safetensors"), framework = "torch")
  r <- safe_load_file(fixture("multi.safetensors"), framework = "raw")
  expect_identical(names(x), names(r))
  for (i in seq_along(r)) {
    expect_identical(safe_tensor_buffer(x[[i]]), as.vector(r[[i]]), label = names(r)[[i]])
  }
  for (d in c("F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "C64", "F8_E4M3", "F8_E5M2")) {
    path <- fixture(paste0("dtype-", d, ".safetensors"))
    x <- safe_load_file(path, framework = "torch")
    r <- safe_load_file(path, framework = "raw")
    for (n in names(r)) {
      expect_identical(
        list(safe_tensor_buffer(x[[n]]), x[[n]]$shape),
        list(as.vector(r[[n]]), as.integer(attr(r[[n]], "shape"))),
        label = paste(d, n)
      )
    }
  }
})

test_that("tensors over 2 GiB are written and read whole", {
  skip_if_no_torch()
  skip_if_not(identical(Sys.getenv("SAFETENSORS_TEST_LARGE"), "true"), "set SAFETENSORS_TEST_LARGE=true (needs ~7 GB of memory)")
  # 2 GiB + 1 MiB + 2 bytes, [2, 2^30 + 2^19 + 1] (R torch can't describe an
  # extent over 2^31 - 1).
  cols <- 2^30 + 2^19 + 1
  n <- 2 * cols
  x <- torch::torch_zeros(2, cols, dtype = torch::torch_uint8())
  at <- function(t, i) t$select(1, (i - 1) %/% cols + 1)$narrow(1, (i - 1) %% cols + 1, 1)
  at(x, 1)$fill_(1L)
  at(x, 2^31 + 1)$fill_(2L)
  at(x, n)$fill_(3L)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(x = x), path)
  info <- safe_info(path)
  expect_identical(info$bytes, n)
  rm(x)
  gc()
  y <- safe_load_file(path, framework = "torch")$x
  expect_identical(as.numeric(y$shape), c(2, cols))
  got <- vapply(c(1, 2, 2^31, 2^31 + 1, n), function(i) as.integer(torch::as_array(at(y, i))), integer(1))
  expect_identical(got, c(1L, 0L, 0L, 2L, 3L))
  expect_identical(as.numeric(torch::as_array(y$sum(dtype = torch::torch_int64()))), 6)
  # The file holds the bytes where they belong.
  con <- file(path, "rb")
  withr::defer(close(con))
  seek(con, info$begin + 2^31)
  expect_identical(readBin(con, "raw", 1), as.raw(2))
})
