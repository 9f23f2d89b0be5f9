# safe_convert(): checkpoints converted block by block. Outputs are
# compared with what safe_save_file() writes of the same tensors, with
# numpy and ml_dtypes (the CI oracle, as in test-dtype-oracle.R) and with
# torch's `$to()` where R torch is installed.

dir_listing <- function(dir) sort(list.files(dir, all.files = TRUE, no.. = TRUE))

# A source with floating-point, integer and boolean tensors.
convert_source <- function(dir, ...) {
  x <- withr::with_seed(4, list(
    model.embed.weight = matrix(rnorm(40), 10, 4),
    model.layers.0.attn.weight = matrix(rnorm(16), 4, 4),
    model.layers.0.attn.bias = rnorm(4),
    model.steps = 1:3,
    model.mask = c(TRUE, FALSE, TRUE)
  ))
  path <- file.path(dir, "src.safetensors")
  safe_save_file(x, path, dtype = c(model.embed.weight = "F32", model.layers.0.attn.weight = "F32", model.layers.0.attn.bias = "F64"), metadata = c(format = "pt"), ...)
  list(x = x, path = path)
}

# F32 bit patterns: random ones, ties and neighbours of the BF16 and F16
# rounding points, subnormals, zeros, infinities and NaN, all within the
# range of `to` (finite values beyond it are refused, as tested below).
f32_patterns <- function(to, n = 20000) {
  bits <- withr::with_seed(5, c(
    sample.int(2^31 - 1, n, replace = TRUE) - sample(c(0, 2^31 - 1), n, replace = TRUE),
    as.numeric(outer(c(0x3f800000, 0x00008000, 0x3f808000, 0x3f818000, 0x00010000), -1:1, "+")),
    0, 1, 0x7f800000, 0x7fc00000, 0x00000001, 0x007fffff
  ))
  bits <- bits %% 2^32
  vals <- readBin(writeBin(as.integer(ifelse(bits >= 2^31, bits - 2^32, bits)), raw()), "double", length(bits), size = 4)
  max_ok <- c(BF16 = 3.3895313892515355e38, F16 = 65504)[[to]]
  vals[is.na(vals) | is.infinite(vals) | abs(vals) <= max_ok]
}

test_that("a dtype converts the floating-point tensors only; names, metadata and the rest are kept", {
  dir <- withr::local_tempdir()
  s <- convert_source(dir)
  out <- file.path(dir, "out.safetensors")
  expect_identical(safe_convert(s$path, out, dtype = "BF16"), out)
  info <- safe_info(out)
  expect_identical(info$name, names(s$x))
  expect_identical(info$dtype, c("BF16", "BF16", "BF16", "I32", "BOOL"))
  expect_identical(safe_metadata(out), c(format = "pt"))
  # The same bytes as safe_save_file() of the loaded tensors in BF16.
  ref <- file.path(dir, "ref.safetensors")
  safe_save_file(safe_load_file(s$path), ref, dtype = "BF16", metadata = c(format = "pt"))
  expect_identical(read_bytes(out), read_bytes(ref))
  # Named dtypes (by the names written), and a dtype for every tensor.
  safe_convert(s$path, out, dtype = c(model.steps = "I64", model.embed.weight = "F16"))
  expect_identical(safe_info(out)$dtype, c("F16", "F32", "F64", "I64", "BOOL"))
  safe_convert(s$path, out, dtype = "F64", select = "attn")
  expect_identical(safe_info(out)$dtype, c("F64", "F64"))
  # Nothing to convert: the same file.
  safe_convert(s$path, out)
  expect_identical(read_bytes(out), read_bytes(s$path))
  safe_convert(s$path, out, metadata = c(note = "new"))
  expect_identical(safe_metadata(out), c(note = "new"))
})

test_that("rename and select pick and name the tensors written", {
  dir <- withr::local_tempdir()
  s <- convert_source(dir)
  out <- file.path(dir, "out.safetensors")
  safe_convert(s$path, out, rename = c("^model\\." = "", "attn\\." = "self_attn.", "mask$" = NA))
  expect_identical(names(safe_load_file(out)), c("embed.weight", "layers.0.self_attn.weight", "layers.0.self_attn.bias", "steps"))
  expect_equal(safe_load_file(out)$embed.weight, safe_load_file(s$path)$model.embed.weight)
  safe_convert(s$path, out, rename = toupper, select = c("model.steps", "model.mask"))
  expect_identical(names(safe_load_file(out)), c("MODEL.STEPS", "MODEL.MASK"))
  safe_convert(s$path, out, select = "weight$")
  expect_identical(names(safe_load_file(out)), c("model.embed.weight", "model.layers.0.attn.weight"))
  expect_snapshot(error = TRUE, {
    safe_convert(s$path, out, select = c("model.steps", "nope"))
    safe_convert(s$path, out, select = "^nothing")
    safe_convert(s$path, out, rename = c("\\.(weight|bias)$" = ""))
    safe_convert(s$path, out, rename = function(x) x[-1])
    safe_convert(s$path, out, rename = c("[" = "x"))
    safe_convert(s$path, out, rename = 1)
  })
  expect_error(safe_convert(s$path, out, select = "^nothing"), class = "safetensors_error_tensor_not_found")
  expect_error(safe_convert(s$path, out, rename = c("\\.(weight|bias)$" = "")), class = "safetensors_error_rename")
  expect_error(safe_convert(s$path, out, rename = function(x) x[-1]), class = "safetensors_error_rename")
})

test_that("shard sets are merged and split as safe_save_file() writes them", {
  root <- withr::local_tempdir()
  src <- file.path(root, "src")
  dir.create(src)
  s <- convert_source(src, max_shard_size = 150)
  index <- file.path(src, "src.safetensors.index.json")
  expect_true(file.exists(index))
  # Merged, from the index and from the folder.
  one <- file.path(root, "one.safetensors")
  safe_convert(index, one)
  got <- safe_load_file(one)
  want <- safe_load_file(index)
  expect_identical(names(got), names(want))
  for (nm in names(want)) expect_identical(got[[nm]], want[[nm]])
  # The oracle and python scripts read the merged file as one.
  expect_identical(safe_info(src)$name, safe_info(index)$name)
  # Split again, with a conversion.
  a <- file.path(root, "a")
  b <- file.path(root, "b")
  dir.create(a)
  dir.create(b)
  safe_convert(one, a, dtype = "F16", max_shard_size = 100)
  safe_save_file(safe_load_file(one), b, dtype = "F16", metadata = c(format = "pt"), max_shard_size = 100)
  expect_identical(dir_listing(a), dir_listing(b))
  for (f in dir_listing(a)) expect_identical(read_bytes(file.path(a, f)), read_bytes(file.path(b, f)), label = f)
})

test_that("a failed conversion leaves the path as it was and nothing else", {
  dir <- withr::local_tempdir()
  src <- file.path(dir, "src.safetensors")
  safe_save_file(list(a = 1:3 / 4, b = c(1, 1e6)), src, dtype = "F32")
  out <- file.path(dir, "out.safetensors")
  writeLines("old", out)
  expect_snapshot(error = TRUE, safe_convert(src, out, dtype = "F16"), transform = function(x) gsub(dir, "<dir>", x, fixed = TRUE))
  expect_error(safe_convert(src, out, dtype = "F16"), class = "safetensors_error_conversion")
  expect_identical(readLines(out), "old")
  expect_identical(dir_listing(dir), c("out.safetensors", "src.safetensors"))
  # A sharded output too.
  expect_error(safe_convert(src, dir, dtype = "F16", max_shard_size = 8), class = "safetensors_error_conversion")
  expect_identical(dir_listing(dir), c("out.safetensors", "src.safetensors"))
})

test_that("large tensors are converted a block of rows at a time", {
  dir <- withr::local_tempdir()
  src <- file.path(dir, "src.safetensors")
  x <- withr::with_seed(6, list(w = matrix(rnorm(3000 * 50), 3000, 50), q = matrix(rnorm(3000 * 2), 3000, 2)))
  safe_save_file(x, src, dtype = c(w = "F32", q = "F32"))
  out <- file.path(dir, "out.safetensors")
  local_package_function("convert_block_bytes", 4000)
  safe_convert(src, out, dtype = c(w = "BF16", q = "F4"))
  ref <- file.path(dir, "ref.safetensors")
  safe_save_file(safe_load_file(src), ref, dtype = c(w = "BF16", q = "F4"))
  expect_identical(read_bytes(out), read_bytes(ref))
})

test_that("a URL is converted as the file it serves", {
  srv <- local_http_server()
  s <- convert_source(srv$dir)
  out <- withr::local_tempfile(fileext = ".safetensors")
  safe_convert(srv$url("src.safetensors"), out, dtype = "F16")
  ref <- withr::local_tempfile(fileext = ".safetensors")
  safe_convert(s$path, ref, dtype = "F16")
  expect_identical(read_bytes(out), read_bytes(ref))
})

test_that("F32 to BF16 and F16 round as numpy and ml_dtypes do, bit for bit", {
  skip_without_oracle()
  skip_if(is.null(find_python("oracle_st_python", "import numpy, ml_dtypes, safetensors")), "Python with safetensors and ml_dtypes is not available")
  dir <- withr::local_tempdir()
  for (to in c("BF16", "F16")) {
    v <- f32_patterns(to)
    src <- file.path(dir, paste0("src-", to, ".safetensors"))
    out <- file.path(dir, paste0("out-", to, ".safetensors"))
    safe_save_file(list(x = v), src, dtype = "F32")
    safe_convert(src, out, dtype = to)
    res <- run_python(c(
      "import sys, numpy as np, ml_dtypes",
      "from safetensors.numpy import load_file",
      "src = load_file(sys.argv[1])['x']",
      "got = load_file(sys.argv[2])['x']",
      "want = src.astype(ml_dtypes.bfloat16 if sys.argv[3] == 'BF16' else np.float16)",
      "g = got.view(np.uint16); w = want.view(np.uint16)",
      "nan = np.isnan(src)",
      "bad = (g != w) & ~nan",
      "print(int(bad.sum()), int(nan.sum()), int(np.isnan(got.astype(np.float32))[nan].sum()), len(src))"
    ), c(src, out, to), exe = find_python("oracle_st_python", "import numpy, ml_dtypes, safetensors"))
    n <- as.numeric(strsplit(res[[length(res)]], " ")[[1]])
    expect_identical(n[[1]], 0, label = paste(to, "mismatches"))
    expect_identical(n[[3]], n[[2]], label = paste(to, "NaN kept"))
    expect_gt(n[[4]], 10000)
  }
})

test_that("F32 to BF16 and F16 equal torch's $to(), bit for bit", {
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed(), "LibTorch is not installed")
  dir <- withr::local_tempdir()
  for (to in c("BF16", "F16")) {
    v <- f32_patterns(to)
    v <- v[!is.nan(v)]
    src <- file.path(dir, "src.safetensors")
    out <- file.path(dir, "out.safetensors")
    safe_save_file(list(x = v), src, dtype = "F32")
    safe_convert(src, out, dtype = to)
    t <- safe_load_file(src, framework = "torch")$x
    want <- t$to(dtype = if (to == "BF16") torch::torch_bfloat16() else torch::torch_float16())
    # The bytes as stored, compared: -0 and 0 differ, as they should.
    got <- safe_load_file(out, framework = "raw")$x
    expect_identical(as.vector(unclass(got)), safe_tensor_buffer(want), label = to)
  }
})

test_that("converting a 256 MiB checkpoint keeps memory bounded", {
  skip_on_cran()
  skip_if_not(file.exists("/proc/self/status"), "needs /proc/self/status")
  dir <- withr::local_tempdir()
  src <- file.path(dir, "src.safetensors")
  # 256 MiB of F32 zeros, written sparsely.
  hdr <- '{"w":{"dtype":"F32","shape":[65536,1024],"data_offsets":[0,268435456]}}'
  src <- local_sparse_file(hdr, 256 * 2^20)
  out <- run_limited_r("true", c(
    "hwm <- function() as.numeric(sub('[^0-9]*([0-9]+).*', '\\\\1', grep('^VmHWM', readLines('/proc/self/status'), value = TRUE))) / 1024",
    "library(safetensors)",
    "invisible(safe_info(system.file('extdata', 'example.safetensors', package = 'safetensors')))",
    "before <- hwm()",
    sprintf("safe_convert(%s, %s, dtype = 'BF16', max_shard_size = '64MiB', sync = FALSE)", deparse(src), deparse(dir)),
    "cat('growth', hwm() - before, '\\n')"
  ))
  growth <- as.numeric(sub("growth ", "", grep("^growth", out, value = TRUE)))
  expect_length(growth, 1)
  expect_lt(growth, 96)
  expect_identical(sum(safe_info(dir)$bytes), 128 * 2^20)
})

test_that("a file truncated while it is converted gives its values or a classed error, never a crash", {
  # Each block is converted from the map and checked after: a truncation
  # under it is `file_changed`, never zeros in the new checkpoint.
  res <- race_truncation(function(path) {
    out <- tempfile(fileext = ".safetensors")
    on.exit(unlink(out))
    safetensors::safe_convert(path, out, sync = FALSE)
    vapply(safetensors::safe_load_file(out), sum, numeric(1))
  })
  expect_race_safe(res)
})
