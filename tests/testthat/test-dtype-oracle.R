# Every dtype's conversions at their boundaries, both ways, against numpy
# and ml_dtypes (dtype-oracle.py): R values written as each dtype and read
# back, and codes numpy stores read into R. Each value round-trips
# exactly, is rounded correctly where the dtype is a narrower float, or is
# an error of class safetensors_error_conversion; nothing is clamped or
# wrapped around. (The Rust side has property tests of the same rules:
# src/rust/core/tests/conversions.rs.) SAFETENSORS_ORACLE_RANDOM sets how
# many random doubles join the boundary values (1000 by default).

run_oracle <- function(dir, mode) {
  run_python(readLines(test_path("dtype-oracle.py")), c(dir, mode), exe = oracle_python())
}

# Whether writing `v` as `dtype` fails with a conversion error, asked of
# the write engine directly (a classed R error builds its message, which
# takes milliseconds; thousands of values are checked). safe_serialize()
# raises that error, as other tests check.
refused <- function(v, dtype) {
  spec <- tensor_spec(list(x = v), c(x = dtype), NULL)
  w <- writer_open_(spec, "raw", "", FALSE, 1L)
  if (inherits(w, "safetensors_rust_error")) {
    return(identical(w$kind, "conversion"))
  }
  res <- writer_write_(w, Inf)
  writer_abort_(w)
  inherits(res, "safetensors_rust_error") && identical(res$kind, "conversion")
}

# Doubles at and around every boundary (each format's largest value and
# rounding midpoints, subnormals, 2^53, 2^63, 2^64, the integer ranges),
# a few ulps either way, both signs, with zeros, infinities, NaN, NA, and
# random doubles of every magnitude.
boundary_doubles <- function(n_random = as.integer(Sys.getenv("SAFETENSORS_ORACLE_RANDOM", "1000"))) {
  anchors <- c(
    0, 2^-1074, 2^-1022, 1, 1.5, 0.1, 65504, 65520, 65536, 448, 464, 480, 240, 248, 57344, 61440,
    7.5, 7.75, 28, 30, 6, 7, 3.4028234663852886e38, 3.4028235677973366e38, 3.3895313892515355e38,
    2^-126, 2^-149, 2^-24, 2^-25, 2^-133, 2^-127, 1.5 * 2^-128, 1.5 * 2^127, 2^53, 2^63, 2^64,
    127, 128, 255, 256, 32767, 32768, 65535, 2^31 - 1, 2^31, 2^32 - 1, 2^32
  )
  near <- unlist(lapply(anchors, function(a) {
    if (a == 0) return(c(0, 2^-1074, 2 * 2^-1074))
    a * (1 + c(-3, -2, -1, 0, 1, 2, 3) * 2^-52)
  }))
  random <- withr::with_seed(11, c(
    2^runif(n_random, -140, 140) * sample(c(-1, 1), n_random, TRUE),
    runif(n_random / 4, -10, 10),
    round(runif(n_random / 4, -300, 300)) / 8
  ))
  unique(c(near, -near, -0, Inf, -Inf, NaN, NA_real_, random))
}

test_that("R doubles become every float dtype as numpy and ml_dtypes round them, or an error where they overflow", {
  skip_without_oracle()
  dir <- withr::local_tempdir()
  x <- boundary_doubles()
  writeBin(x, file.path(dir, "input.f64"), size = 8, endian = "little")
  run_oracle(dir, "values")
  floats <- c("F16", "BF16", "F8_E5M2", "F8_E4M3", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "F32")
  checked <- 0
  for (d in floats) {
    want <- readBin(file.path(dir, paste0(d, ".f64")), "double", length(x), size = 8, endian = "little")
    err <- readBin(file.path(dir, paste0(d, ".err")), "raw", length(x)) == as.raw(1)
    ok <- x[!err]
    # The sub-byte dtypes need whole bytes: pad with zeros.
    pad <- switch(d, F4 = (-length(ok)) %% 2, F6_E2M3 = , F6_E3M2 = (-length(ok)) %% 4, 0)
    back <- safe_deserialize(safe_serialize(list(x = c(ok, rep(0, pad))), dtype = d))$x
    got <- as.vector(back)[seq_along(ok)]
    w <- want[!err]
    same <- (is.nan(got) & is.nan(w)) | (!is.nan(got) & !is.nan(w) & got == w & (1 / got) == (1 / w))
    expect_true(all(same), label = sprintf(
      "%s: %s", d, paste(sprintf("%a -> %a (numpy %a)", ok[!same], got[!same], w[!same])[seq_len(min(5, sum(!same)))], collapse = "; ")
    ))
    # Each value numpy can't hold is refused, alone.
    no <- vapply(x[err], function(v) refused(c(v, rep(0, switch(d, F4 = 1, F6_E2M3 = , F6_E3M2 = 3, 0))), d), logical(1))
    expect_true(all(no), label = sprintf("%s refuses %s", d, paste(sprintf("%a", x[err][!no])[seq_len(min(5, sum(!no)))], collapse = ", ")))
    # And through the public function, classed.
    expect_error(safe_serialize(list(x = c(x[err][[1]], rep(0, 3))), dtype = c(x = d)), class = "safetensors_error_conversion")
    checked <- checked + length(x)
  }
  expect_gt(checked, 10 * length(x))
})

test_that("R doubles, integers, logicals, raw and integer64 become integer dtypes exactly or not at all", {
  skip_if_not_installed("bit64")
  ints <- list(
    I8 = c(-128, 127), U8 = c(0, 255), I16 = c(-32768, 32767), U16 = c(0, 65535),
    I32 = c(-2^31, 2^31 - 1), U32 = c(0, 2^32 - 1), I64 = c(-2^63, 2^63), U64 = c(0, 2^64)
  )
  x <- boundary_doubles(500)
  for (d in names(ints)) {
    r <- ints[[d]]
    # 2^63 and 2^64 are past I64's and U64's largest values (which no
    # double holds): the upper bound is exclusive for them.
    top_ok <- if (d %in% c("I64", "U64")) x < r[[2]] else x <= r[[2]]
    fits <- !is.na(x) & is.finite(x) & x == trunc(x) & x >= r[[1]] & top_ok
    # (-2^31 as I32 reads back as a double, with a warning of this class.)
    back <- suppressWarnings(
      safe_deserialize(safe_serialize(list(x = x[fits]), dtype = d), int64 = "character")$x,
      classes = "safetensors_warning_type"
    )
    want <- if (d %in% c("I64", "U64")) format(x[fits], scientific = FALSE, trim = TRUE) else x[fits]
    got <- as.vector(back)
    if (!d %in% c("I64", "U64")) got <- as.numeric(got)
    expect_identical(got, if (is.character(want)) sub("^-0$", "0", want) else want + 0, label = d)
    no <- vapply(x[!fits], refused, logical(1), dtype = d)
    expect_true(all(no), label = sprintf("%s refuses %s", d, paste(sprintf("%a", x[!fits][!no])[seq_len(min(5, sum(!no)))], collapse = ", ")))
  }
  # R integers, logicals and raw: every dtype holds them exactly or refuses.
  i <- c(NA, -.Machine$integer.max, -32769L, -32768L, -129L, -128L, -1L, 0L, 1L, 127L, 128L, 255L, 256L, 32767L, 32768L, 65535L, 65536L, .Machine$integer.max)
  for (d in names(ints)) {
    r <- ints[[d]]
    fits <- !is.na(i) & i >= r[[1]] & i <= r[[2]]
    expect_identical(as.vector(safe_deserialize(safe_serialize(list(x = i[fits]), dtype = d))$x) + 0, as.numeric(i[fits]), label = d)
    no <- vapply(i[!fits], refused, logical(1), dtype = d)
    expect_true(all(no), label = sprintf("%s refuses integers %s", d, paste(i[!fits][!no], collapse = ", ")))
    expect_error(safe_serialize(list(x = c(TRUE, NA)), dtype = d), class = "safetensors_error_conversion")
    expect_identical(as.vector(safe_deserialize(safe_serialize(list(x = c(TRUE, FALSE)), dtype = d))$x) + 0, c(1, 0))
    expect_identical(as.vector(safe_deserialize(safe_serialize(list(x = as.raw(c(0, 127))), dtype = d))$x) + 0, c(0, 127))
  }
  # integer64: exact in I64 and U64 (within their ranges), refused elsewhere.
  big <- bit64::as.integer64(c("9223372036854775807", "-9223372036854775807", "9007199254740993", "0", "-1", "4294967296"))
  expect_identical(as.vector(safe_deserialize(safe_serialize(list(x = big)), int64 = "character")$x), as.character(big))
  expect_error(safe_serialize(list(x = big), dtype = "U64"), class = "safetensors_error_conversion")
  expect_identical(
    as.vector(safe_deserialize(safe_serialize(list(x = big[big >= 0]), dtype = "U64"), int64 = "character")$x),
    as.character(big[big >= 0])
  )
  expect_error(safe_serialize(list(x = big[[6]]), dtype = "I32"), class = "safetensors_error_conversion")
  expect_error(safe_serialize(list(x = bit64::NA_integer64_), dtype = "I64"), class = "safetensors_error_conversion")
  # integer64 beyond 2^53 rounds once to F32: 2^60 + 2^36 + 1 is above a
  # midpoint that rounding through a double first would make a tie.
  v <- bit64::as.integer64("1152921573326323713")
  expect_identical(as.vector(safe_deserialize(safe_serialize(list(x = v), dtype = c(x = "F32")))$x), 2^60 + 2^37)
})

test_that("codes numpy and ml_dtypes store are read as the values they stand for", {
  skip_without_oracle()
  dir <- withr::local_tempdir()
  run_oracle(dir, "codes")
  oracle <- jsonlite::read_json(file.path(dir, "codes.json"), simplifyVector = TRUE)
  bits <- c(F16 = 16, BF16 = 16, F8_E5M2 = 8, F8_E4M3 = 8, F8_E4M3FNUZ = 8, F8_E5M2FNUZ = 8, F8_E8M0 = 8, F6_E2M3 = 6, F6_E3M2 = 6, F4 = 4, F32 = 32)
  # Codes as stored: little-endian bytes, sub-byte codes packed from the
  # least significant bit.
  pack <- function(codes, b) {
    if (b >= 8) {
      k <- b / 8
      return(as.raw(as.vector(t(outer(codes, 256^(0:(k - 1)), function(c, p) floor(c / p) %% 256)))))
    }
    bitpos <- seq_along(codes) - 1
    out <- integer(ceiling(length(codes) * b / 8))
    for (k in seq_along(codes)) {
      pos <- bitpos[[k]] * b
      word <- bitwShiftL(codes[[k]], pos %% 8)
      out[pos %/% 8 + 1] <- bitwOr(out[pos %/% 8 + 1], bitwAnd(word, 255))
      if (word > 255) out[pos %/% 8 + 2] <- bitwOr(out[pos %/% 8 + 2], bitwShiftR(word, 8))
    }
    as.raw(out)
  }
  # Doubles from their 64-bit patterns in hexadecimal.
  as_double <- function(hex) {
    all <- paste(hex, collapse = "")
    at <- seq(1, nchar(all), 2)
    bytes <- as.raw(strtoi(substring(all, at, at + 1), 16L))
    # Each pattern is big-endian: reverse the bytes of each.
    bytes <- bytes[as.vector(outer(8:1, 8 * (seq_along(hex) - 1), "+"))]
    readBin(bytes, "double", length(hex), size = 8, endian = "little")
  }
  for (d in names(bits)) {
    codes <- oracle[[d]]$codes
    want <- as_double(oracle[[d]]$values)
    raw <- structure(pack(codes, bits[[d]]), dtype = d, shape = length(codes))
    got <- as.vector(safe_deserialize(safe_serialize(list(x = raw)))$x)
    same <- (is.nan(got) & is.nan(want)) | (!is.nan(got) & !is.nan(want) & got == want & (1 / got) == (1 / want))
    expect_true(all(same), label = sprintf("%s: codes %s", d, paste(head(codes[!same]), collapse = ", ")))
  }
  for (d in c("I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64")) {
    hex <- oracle[[d]]$bytes
    bytes <- as.raw(strtoi(substring(hex, seq(1, nchar(hex), 2), seq(2, nchar(hex), 2)), 16L))
    codes <- oracle[[d]]$values
    raw <- structure(bytes, dtype = d, shape = length(codes))
    # (-2^31 as I32 reads back as a double, with a warning of this class.)
    got <- suppressWarnings(
      as.vector(safe_deserialize(safe_serialize(list(x = raw)), int64 = "character")$x),
      classes = "safetensors_warning_type"
    )
    got <- if (is.character(got)) got else format(got, scientific = FALSE, trim = TRUE)
    expect_identical(got, oracle[[d]]$values, label = d)
  }
})
