# The framework contract of safetensors 0.2.x, without torch: a package
# registers list(constructor, packages) in safetensors_frameworks (pjrt does
# it from its .onLoad, through getFromNamespace()), and provides
# safe_tensor_meta() / safe_tensor_buffer() methods for its tensor class.

# Tensors of several dtypes and ranks, a scalar and an empty one.
contract_tensors <- function() {
  list(
    vec = as.numeric(1:7),
    mat = matrix(as.numeric(1:30), 5, 6),
    arr = as_loaded_dtype(array(seq(-2, 2, length.out = 24), c(2, 3, 4)), "F32"),
    bf16 = as_loaded_dtype(matrix(c(1, 2, 4, 8, -1, 0.5), 2, 3), "BF16"),
    i64 = structure(matrix(c(-3, 5, 2^40, 7, 8, 9), 3, 2), dtype = "I64"),
    u8 = structure(matrix(0:19, 4, 5), dtype = "U8"),
    int = matrix(-5:6, 3, 4),
    lgl = matrix(c(TRUE, FALSE, FALSE, TRUE, TRUE, FALSE), 2, 3),
    cplx = matrix(complex(real = 1:6, imaginary = -(1:6)), 3, 2),
    scalar = structure(42L, shape = integer(0)),
    empty = matrix(numeric(0), 0, 3),
    `with space` = 1:3
  )
}

local_contract_file <- function(env = parent.frame()) {
  path <- withr::local_tempfile(fileext = ".safetensors", .local_envir = env)
  safe_save_file(contract_tensors(), path)
  path
}

# A test framework as pjrt registers its own: tensors of class
# "fake_tensor" holding their bytes, dtype, shape and device; the
# constructor takes `device` through `...` of the loaders.
fake_tensor <- function(bytes, dtype, shape, device = "host") {
  structure(list(bytes = bytes, dtype = dtype, shape = as.integer(shape), device = device), class = "fake_tensor")
}

local_fake_framework <- function(packages = character(), env = parent.frame()) {
  frameworks <- utils::getFromNamespace("safetensors_frameworks", ns = "safetensors")
  frameworks[["fake"]] <- list(
    constructor = function(raw, meta, device = "host") {
      fake_tensor(raw, meta$dtype, unlist(meta$shape), device)
    },
    packages = packages
  )
  withr::defer(rm("fake", envir = frameworks), envir = env)
  # S3 methods, registered as a package's NAMESPACE would.
  registerS3method("safe_tensor_meta", "fake_tensor", function(x) list(shape = as.list(x$shape), dtype = x$dtype))
  registerS3method("safe_tensor_buffer", "fake_tensor", function(x) x$bytes)
}

# What the "raw" framework gives, as fake tensors.
as_fake <- function(raws, device = "host") {
  out <- lapply(raws, function(r) {
    fake_tensor(as.vector(r), attr(r, "dtype"), attr(r, "shape"), device)
  })
  attributes(out) <- attributes(raws)
  out
}

test_that("a registered framework gets (raw, meta, ...) from every loader", {
  local_fake_framework()
  path <- local_contract_file()
  bytes <- read_bytes(path)
  raws <- safe_load_file(path, framework = "raw")
  want <- as_fake(raws, device = "dev1")
  drop_attrs <- function(x) {
    attributes(x) <- list(names = names(x))
    x
  }

  expect_identical(safe_load_file(path, framework = "fake", device = "dev1"), want)
  expect_identical(safe_load_file(path, framework = "fake", device = "dev1", backend = "mmap"), want)
  expect_identical(safe_load_file(bytes, framework = "fake", device = "dev1"), want)
  expect_identical(safe_deserialize(bytes, framework = "fake", device = "dev1"), want)
  con <- rawConnection(bytes)
  withr::defer(close(con))
  expect_identical(safe_load_file(con, framework = "fake", device = "dev1"), want)
  # The constructor's default when `device` is not given.
  expect_identical(safe_load_file(path, framework = "fake")$mat$device, "host")

  h <- safe_open(path, framework = "fake", device = "dev1")
  withr::defer(close(h))
  expect_identical(h$mat, want$mat)
  expect_identical(h[["scalar"]], want$scalar)
  expect_identical(h[c("vec", "empty")], drop_attrs(want[c("vec", "empty")]))

  f <- safetensors$new(path, framework = "fake", device = "dev1")
  expect_identical(f$args, list(device = "dev1"))
  for (k in f$keys()) {
    expect_identical(f$get_tensor(k), want[[k]], label = k)
  }
  expect_identical(f$max_offset, attr(raws, "max_offset"))
})

test_that("the constructor's `meta` is the tensor's 0.2.x header entry", {
  frameworks <- utils::getFromNamespace("safetensors_frameworks", ns = "safetensors")
  frameworks[["meta"]] <- list(constructor = function(raw, meta, ...) meta, packages = character())
  withr::defer(rm("meta", envir = frameworks))
  path <- local_contract_file()
  header <- attr(safe_load_file(path, framework = "raw"), "metadata")
  got <- safe_load_file(path, framework = "meta")
  expect_identical(unclass(got)[names(got)], header[names(got)])
  expect_identical(got$scalar$shape, list()) # a scalar's shape, as jsonlite gave it
  con <- file(path, "rb")
  withr::defer(close(con))
  expect_identical(safe_load_file(con, framework = "meta")$mat, header$mat)
})

test_that("unknown arguments reach the constructor, which rejects them as in 0.2.x", {
  local_fake_framework()
  path <- local_contract_file()
  expect_error(safe_load_file(path, framework = "fake", client = "x"), "unused argument", class = "simpleError")
  expect_error(safe_load_file(path, framework = "r", device = "x"), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_file(path, framework = "raw", device = "x"), class = "safetensors_error_invalid_argument")
  con <- file(path, "rb")
  withr::defer(close(con))
  expect_error(safe_load_file(con, framework = "raw", device = "x"), class = "safetensors_error_invalid_argument")
})

test_that("framework tensors are written through the generics, alone or beside R arrays", {
  local_fake_framework()
  tensors <- contract_tensors()
  raws <- safe_load_file(safe_serialize(tensors), framework = "raw")
  fakes <- as_fake(raws)
  attributes(fakes) <- list(names = names(raws))
  want <- safe_serialize(tensors)

  expect_identical(safe_serialize(fakes), want)
  mixed <- fakes
  mixed[c("mat", "int", "lgl")] <- tensors[c("mat", "int", "lgl")]
  expect_identical(safe_serialize(mixed), want)

  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(fakes, path)
  expect_identical(read_bytes(path), want)
  safe_save_file(mixed, path)
  expect_identical(read_bytes(path), want)

  con <- rawConnection(raw(), "wb")
  withr::defer(close(con))
  safe_save_file(mixed, con)
  expect_identical(rawConnectionValue(con), want)

  # Metadata and shards take framework tensors too.
  expect_identical(
    safe_serialize(fakes, metadata = list(format = "fake")),
    safe_serialize(tensors, metadata = list(format = "fake"))
  )
  dir <- withr::local_tempdir()
  index <- safe_save_file(fakes, file.path(dir, "model.safetensors"), max_shard_size = 200)
  expect_match(index, "index\\.json$")
  expect_identical(safe_load_file(index)[names(tensors)], safe_deserialize(want)[names(tensors)])
})

test_that("a buffer that disagrees with its meta is an error that leaves no file", {
  local_fake_framework()
  bad <- list(ok = fake_tensor(as.raw(1:4), "U8", 4), bad = fake_tensor(as.raw(1:3), "F32", 1))
  dir <- withr::local_tempdir()
  path <- file.path(dir, "x.safetensors")
  expect_error(safe_save_file(bad, path), class = "safetensors_error_invalid_argument")
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), character())
  expect_error(safe_serialize(bad), "need 4", class = "safetensors_error_invalid_argument")

  registerS3method("safe_tensor_buffer", "not_raw_tensor", function(x) 1:3)
  registerS3method("safe_tensor_meta", "not_raw_tensor", function(x) list(shape = list(3), dtype = "U8"))
  expect_error(
    safe_serialize(list(x = structure(list(), class = "not_raw_tensor"))),
    class = "safetensors_error_invalid_argument"
  )
  expect_error(safe_serialize(list(x = structure(list(), class = "no_methods"))), class = "safetensors_error_invalid_argument")
})

test_that("a framework whose package is missing is a classed error naming it", {
  frameworks <- utils::getFromNamespace("safetensors_frameworks", ns = "safetensors")
  frameworks[["ghost"]] <- list(constructor = function(raw, meta, ...) raw, packages = "notapackage.safetensors.test")
  withr::defer(rm("ghost", envir = frameworks))
  path <- local_contract_file()
  for (call in list(
    quote(safe_load_file(path, framework = "ghost")),
    quote(safe_deserialize(read_bytes(path), framework = "ghost")),
    quote(safe_open(path, framework = "ghost")),
    quote(safetensors$new(path, framework = "ghost"))
  )) {
    cnd <- expect_error(eval(call), class = "safetensors_error_framework_not_installed")
    expect_s3_class(cnd, "safetensors_error_package_not_installed")
    expect_s3_class(cnd, "safetensors_error")
    expect_identical(cnd$package, "notapackage.safetensors.test")
    expect_match(conditionMessage(cnd), "notapackage.safetensors.test", fixed = TRUE)
  }
})

test_that("torch is registered, and a missing torch is named", {
  torch <- safetensors_frameworks[["torch"]]
  expect_identical(torch$packages, "torch")
  expect_identical(names(formals(torch$constructor)), c("raw", "meta", "device"))
  expect_true(is.function(getS3method("safe_tensor_buffer", "torch_tensor")))
  expect_true(is.function(getS3method("safe_tensor_meta", "torch_tensor")))
  skip_if(requireNamespace("torch", quietly = TRUE), "torch is installed")
  cnd <- expect_error(safe_load_file(local_contract_file(), framework = "torch"), class = "safetensors_error_framework_not_installed")
  expect_identical(cnd$package, "torch")
  expect_match(conditionMessage(cnd), "torch")
})

test_that("an unknown framework lists the known ones", {
  local_fake_framework()
  path <- local_contract_file()
  cnd <- expect_error(safe_load_file(path, framework = "nope"), class = "safetensors_error_unknown_framework")
  msg <- cli::ansi_strip(conditionMessage(cnd))
  for (known in c("r", "raw", "torch", "fake")) {
    expect_match(msg, paste0("\"", known, "\""), fixed = TRUE)
  }
  expect_error(safe_open(path, framework = "nope"), class = "safetensors_error_unknown_framework")
  expect_error(safetensors$new(path, framework = "nope"), class = "safetensors_error_unknown_framework")
  expect_error(safe_deserialize(read_bytes(path), framework = "nope"), class = "safetensors_error_unknown_framework")
  expect_error(safe_load_file(path, framework = c("r", "raw")), class = "safetensors_error_invalid_argument")
})

test_that("\"raw\" tensors keep dtype and shape and write back the same bytes", {
  tensors <- contract_tensors()
  bytes <- safe_serialize(tensors, metadata = list(k = "v"))
  raws <- safe_deserialize(bytes, framework = "raw")
  expect_true(all(vapply(raws, is.raw, logical(1))))
  expect_identical(attr(raws$mat, "dtype"), "F64")
  expect_identical(attr(raws$mat, "shape"), c(5L, 6L))
  expect_identical(attr(raws$scalar, "shape"), integer(0))
  expect_identical(attr(raws$empty, "shape"), c(0L, 3L))
  expect_identical(safe_serialize(raws, metadata = list(k = "v")), bytes)
  # The bytes are the file's, row-major: matrix(1:30, 5, 6)[1, 2] is element 2.
  expect_identical(readBin(raws$mat[9:16], "double", 1, endian = "little"), 6)
})

test_that("a misplaced argument is named, with the argument it was probably meant for", {
  path <- local_contract_file()
  bytes <- read_bytes(path)
  expect_snapshot(error = TRUE, {
    safe_load_file(path, tensor = "mat")
    safe_load_file(path, "raw")
    safe_load_file(path, "mmap")
    safe_load_file(path, c("mat", "vec"))
    safe_load_file(path, framework = "raw", device = "cpu")
    safe_load_file(path, 1, x = matrix(1:100, 10))
    safe_deserialize(bytes, tnsors = "mat")
    safe_open(path, tensor = "mat")
  })
  err <- expect_error(safe_load_file(path, tensor = "mat"), class = "safetensors_error_invalid_argument")
  expect_identical(conditionCall(err), quote(safe_load_file(path, tensor = "mat")))
  # Through a connection, with the caller's arguments too.
  con <- file(path, "rb")
  withr::defer(close(con))
  err <- expect_error(safe_load_file(con, framework = "raw", tensor = "mat"), class = "safetensors_error_invalid_argument")
  expect_match(cli::ansi_strip(conditionMessage(err)), "Did you mean `tensors = \"mat\"`?", fixed = TRUE)
})

test_that("frameworks removed by setting them to NULL are not listed", {
  path <- local_contract_file()
  frameworks <- utils::getFromNamespace("safetensors_frameworks", ns = "safetensors")
  frameworks[["gone"]] <- NULL
  withr::defer(rm("gone", envir = frameworks))
  expect_false("gone" %in% registered_frameworks())
  expect_true("torch" %in% registered_frameworks())
  expect_snapshot(error = TRUE, {
    safe_load_file(path, framework = "gone")
    safe_load_file(path, framework = "Torch")
    safe_load_file(path, framework = 1)
  })
})

# ---- the fast paths --------------------------------------------------------

# A framework with the read and write hooks, in plain R: a tensor is an
# environment that collects the bytes of its pieces (checking that they
# come in order) and becomes a fake_tensor when finished. `log` counts the
# hooks' calls.
local_fast_framework <- function(dtypes = NULL, views = FALSE, env = parent.frame()) {
  frameworks <- utils::getFromNamespace("safetensors_frameworks", ns = "safetensors")
  log <- new.env()
  log$setup <- 0
  log$pieces <- list()
  frameworks[["fast"]] <- list(
    constructor = function(raw, meta, device = "host") fake_tensor(raw, meta$dtype, unlist(meta$shape), device),
    packages = character(),
    dtypes = dtypes,
    views = views,
    setup = function(.env, helper) log$setup <- log$setup + 1,
    new = function(dtype, shape, device = "host") {
      x <- new.env()
      x$dtype <- dtype
      x$shape <- shape
      x$chunks <- list()
      x$at <- 0
      x
    },
    fill = function(x, bytes, piece) {
      stopifnot(is.raw(bytes), piece$offset == x$at, length(bytes) >= piece$size)
      x$chunks[[length(x$chunks) + 1]] <- bytes[seq_len(piece$size)]
      x$at <- x$at + piece$size
      log$pieces[[length(log$pieces) + 1]] <- piece
    },
    finish = function(x, device = "host") fake_tensor(c(raw(), unlist(x$chunks)), x$dtype, x$shape, device),
    class = "fake_tensor",
    write = function(x, piece, buffer) x$bytes[piece$offset + seq_len(piece$size)]
  )
  withr::defer(rm("fast", envir = frameworks), envir = env)
  registerS3method("safe_tensor_meta", "fake_tensor", function(x) list(shape = as.list(x$shape), dtype = x$dtype))
  registerS3method("safe_tensor_buffer", "fake_tensor", function(x) stop("the write hook is used instead"))
  log
}

test_that("a framework's read hooks get every tensor, piece by piece, from every loader", {
  log <- local_fast_framework()
  x <- contract_tensors()
  # Over 16 MiB: read in two pieces.
  x$big <- structure(as.raw(seq_len(17 * 2^20) %% 251), dtype = "U8", shape = 17 * 2^20)
  # Two elements a byte: one piece, as pieces would start inside bytes.
  x$half <- structure(as.raw(seq_len(17 * 2^20) %% 253), dtype = "F4", shape = 34 * 2^20)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(x, path)
  bytes <- read_bytes(path)
  want <- as_fake(safe_load_file(path, framework = "raw"), device = "dev")
  check <- function(got, label) {
    expect_identical(unclass(got)[names(want)], unclass(want)[names(want)], label = label)
  }
  for (backend in c("auto", "mmap", "read")) {
    check(safe_load_file(path, framework = "fast", backend = backend, device = "dev"), backend)
    h <- safe_open(path, framework = "fast", backend = backend, device = "dev")
    check(h[names(want)], paste("safe_open", backend))
    close(h)
  }
  check(safe_deserialize(bytes, framework = "fast", device = "dev"), "raw vector")
  for (con in list(file(path, "rb"), rawConnection(bytes))) {
    check(safe_load_file(con, framework = "fast", device = "dev"), class(con)[[1]])
    close(con)
  }
  dir <- withr::local_tempdir()
  index <- safe_save_file(x, file.path(dir, "model.safetensors"), max_shard_size = 2^20)
  got <- safe_load_file(index, framework = "fast", device = "dev")
  check(got[names(want)], "shards")
  # The big tensor came in two pieces, each with its place in the tensor.
  big <- Filter(function(p) identical(p$shape, 16 * 2^20) || identical(p$shape, 2^20), log$pieces)
  expect_identical(vapply(big[1:2], function(p) p$offset, numeric(1)), c(0, 16 * 2^20))
  half <- Filter(function(p) identical(p$dtype, "F4"), log$pieces)
  expect_identical(unique(vapply(half, function(p) p$size, numeric(1))), 17 * 2^20)
  expect_gt(log$setup, 0)
})

test_that("a framework's dtypes are checked before anything is read", {
  log <- local_fast_framework(dtypes = c("F64", "I32"))
  path <- local_contract_file()
  cnd <- expect_error(safe_load_file(path, framework = "fast"), class = "safetensors_error_unsupported_dtype")
  expect_identical(cnd$dtype, "F32")
  expect_identical(cnd$tensor, "arr")
  expect_snapshot(error = TRUE, safe_load_file(path, framework = "fast", tensors = "bf16"))
  expect_length(log$pieces, 0)
  expect_identical(names(safe_load_file(path, framework = "fast", tensors = c("int", "vec"))), c("int", "vec"))
})

test_that("a framework's write hook writes its tensors piece by piece", {
  local_fast_framework()
  x <- list(a = fake_tensor(as.raw(1:12), "F32", c(3, 1)), b = 1:3)
  x$big <- fake_tensor(as.raw(seq_len(17 * 2^20) %% 7), "U8", 17 * 2^20)
  bytes <- safe_serialize(x)
  expect_identical(as_fake(safe_deserialize(bytes, framework = "raw"))$big$bytes, x$big$bytes)
  expect_identical(safe_deserialize(bytes, framework = "raw")$a, structure(as.raw(1:12), dtype = "F32", shape = c(3L, 1L)))
  # A piece of the wrong size is an error.
  frameworks <- utils::getFromNamespace("safetensors_frameworks", ns = "safetensors")
  frameworks$fast$write <- function(x, piece, buffer) raw(1)
  expect_snapshot(error = TRUE, safe_serialize(x["a"]))
})

test_that("pieces are handed out as views or staging vectors, and checked", {
  path <- fixture("multi.safetensors")
  bytes <- read_bytes(path)
  info <- safe_info(path)
  info <- info[info$bytes > 0, ]
  # Each tensor whole, then the first 3 bytes of the I64 one.
  offsets <- c(info$begin, info$begin[[1]])
  sizes <- c(info$bytes, 3)
  check <- function(res) safetensors:::st_check(res, "Can't read.")
  for (backend in c("auto", "mmap", "read")) {
    for (views in c(TRUE, FALSE)) {
      for (threads in c(1, 2)) {
        label <- paste(backend, views, threads)
        h <- safe_open(path, framework = "raw", backend = backend)
        part <- safetensors:::hget(h, "parts")[[1]]
        ptr <- part$ptr
        # "auto" reads bytes with positioned reads.
        expect_identical(safetensors:::part_kind(part), if (backend == "mmap") "mmap" else "read")
        rd <- check(safetensors:::piece_reader_(ptr, offsets, sizes, views, threads))
        for (k in seq_along(offsets)) {
          got <- check(safetensors:::piece_next_(rd))
          if (views && backend == "mmap") {
            expect_identical(typeof(got), "externalptr", label = label)
          } else {
            expect_identical(got[seq_len(sizes[[k]])], bytes[offsets[[k]] + seq_len(sizes[[k]])], label = label)
          }
        }
        expect_error(check(safetensors:::piece_next_(rd)), class = "safetensors_error_invalid_argument")
        expect_null(check(safetensors:::piece_end_(rd)))
        expect_null(check(safetensors:::piece_end_(rd)))
        # Pieces are checked against the source before any byte is read.
        for (bad in list(list(length(bytes) - 2, 3), list(-1, 1), list(0.5, 1), list(0, 2^60))) {
          expect_error(check(safetensors:::piece_reader_(ptr, bad[[1]], bad[[2]], views, threads)), class = "safetensors_error_invalid_argument")
        }
        expect_error(check(safetensors:::piece_reader_(ptr, c(1, 2), 1, views, threads)), class = "safetensors_error_invalid_argument")
        # A reader keeps its file open after the handle is closed.
        rd <- check(safetensors:::piece_reader_(ptr, offsets, sizes, views, threads))
        close(h)
        expect_error(check(safetensors:::piece_reader_(ptr, offsets, sizes, views, threads)), class = "safetensors_error_closed")
        got <- check(safetensors:::piece_next_(rd))
        if (typeof(got) == "raw") expect_identical(got[seq_len(sizes[[1]])], bytes[offsets[[1]] + seq_len(sizes[[1]])])
        rm(rd)
        gc()
      }
    }
  }
  # Views of a raw vector point into it.
  h <- safe_open(bytes)
  rd <- check(safetensors:::piece_reader_(safetensors:::hget(h, "parts")[[1]]$ptr, offsets, sizes, TRUE, 2))
  expect_identical(typeof(check(safetensors:::piece_next_(rd))), "externalptr")
  close(h)
})
