# What the fixtures hold, as Python's safetensors and numpy see them
# (fixtures/expected.json, written by fixtures/make-fixtures.py), turned into
# the R values safe_load_file() must return.

expected_fixtures <- function() {
  if (is.null(fixture_cache$expected)) {
    fixture_cache$expected <- jsonlite::read_json(fixture("expected.json"), simplifyVector = FALSE)
  }
  fixture_cache$expected
}
fixture_cache <- new.env()

# The R type a dtype is read as (an I32 tensor holding -2^31 is double).
r_type_of <- function(dtype, int_min = FALSE) {
  if (dtype %in% c("I8", "I16", "U8", "U16") || (dtype == "I32" && !isTRUE(int_min))) {
    "integer"
  } else if (dtype == "BOOL") {
    "logical"
  } else if (dtype == "C64") {
    "complex"
  } else {
    "double"
  }
}

# The R array an expected.json tensor entry describes: values are row-major,
# so they fill an array of the reversed shape, which aperm() turns around.
expected_array <- function(t) {
  type <- r_type_of(t$dtype, t$int_min)
  chr <- function(v) as.character(unlist(v))
  values <- switch(type,
    logical = as.logical(unlist(t$values)),
    integer = as.integer(chr(t$values)),
    complex = complex(real = as.numeric(chr(t$values)), imaginary = as.numeric(chr(t$imag))),
    double = as.numeric(chr(if (t$dtype %in% c("I32", "U32", "I64", "U64")) t$doubles else t$values))
  )
  shape <- as.integer(unlist(t$shape))
  if (length(shape) == 0) {
    return(structure(values, shape = integer(0)))
  }
  x <- array(values, dim = rev(shape))
  if (length(shape) > 1) x <- aperm(x, rev(seq_along(shape)))
  x
}

# Bit-exact text of each element (NaN payloads and signs aside), so that -0,
# NaN and infinities compare as they should.
value_bits <- function(x) {
  dbl <- function(v) ifelse(is.nan(v), "NaN", sprintf("%a", v))
  switch(typeof(x),
    double = dbl(x),
    complex = paste(dbl(Re(x)), dbl(Im(x))),
    as.character(x)
  )
}

# What a test compares of a loaded tensor: R type, dim, the scalar's shape
# attribute, dtype attribute and the bits of every value.
tensor_summary <- function(x) {
  list(
    type = typeof(x), dim = dim(x), shape = attr(x, "shape"),
    dtype = attr(x, "dtype"), values = value_bits(x)
  )
}

# Expects `x` (a loaded tensor) to be the expected.json entry `t` (one
# expectation: testthat's comparisons are slow and there are many tensors).
expect_tensor <- function(x, t, label = t$name) {
  want <- expected_array(t)
  attr(want, "dtype") <- t$dtype
  expect_identical(tensor_summary(x), tensor_summary(want), label = label)
}

# Loads a fixture and returns the tensors and the classes of the warnings
# raised, so tests can check both.
load_quietly <- function(path, ...) {
  classes <- character()
  x <- withCallingHandlers(
    safetensors::safe_load_file(path, ...),
    warning = function(w) {
      classes <<- c(classes, class(w)[[1]])
      invokeRestart("muffleWarning")
    }
  )
  list(value = x, warnings = classes)
}

read_bytes <- function(path) readBin(path, "raw", file.size(path))

# The header JSON of a file as text.
header_text <- function(bytes) {
  n <- sum(as.numeric(bytes[1:8]) * 256^(0:7))
  rawToChar(bytes[8 + seq_len(n)])
}

# A file whose header is written by hand: the JSON lists tensors in another
# order than their bytes, with the metadata (if any) in the middle.
hand_made <- function(metadata = "{\"format\":\"pt\"}") {
  json <- paste0(
    "{\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[8,16]},",
    if (!is.null(metadata)) paste0("\"__metadata__\":", metadata, ","),
    "\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}"
  )
  header <- charToRaw(json)
  c(
    writeBin(length(header), raw(), size = 4, endian = "little"), raw(4),
    header,
    writeBin(1.5, raw(), endian = "little"),
    writeBin(c(7L, -7L), raw(), size = 4, endian = "little")
  )
}


# `x` as loaded from a tensor of `dtype`: its values rounded to that dtype,
# with the "dtype" attribute (which then saves it back exactly).
as_loaded_dtype <- function(x, dtype) {
  attr(x, "dtype") <- NULL
  safe_deserialize(safe_serialize(list(x = x), dtype = dtype))$x
}

# Counts calls of function `fun` of namespace `ns` while `code` runs.
count_calls <- function(fun, code, ns = "safetensors") {
  n <- 0
  bump <- function() n <<- n + 1
  suppressMessages(trace(fun, call("(", as.call(list(bump))), print = FALSE, where = asNamespace(ns)))
  on.exit(suppressMessages(untrace(fun, where = asNamespace(ns))), add = TRUE)
  force(code)
  n
}

# A sharded checkpoint with long tensor names and a long metadata value,
# for the tests of printing at several widths: the path of its index,
# relative to the working directory, which is set to its folder so that the
# label printed is the same on every machine.
local_long_names <- function(env = parent.frame()) {
  dir <- withr::local_tempdir(.local_envir = env)
  withr::local_dir(dir, .local_envir = env)
  x <- list(
    "model.encoder.layers.10.self_attention.query_key_value.weight" = matrix(seq(0.5, 3, by = 0.5), 2),
    "model.encoder.layers.10.self_attention.dense.bias" = c(0.25, -1, 2),
    "lm_head.weight" = matrix(1:4, 2),
    "model.embed_tokens.weight_with_an_extraordinarily_long_name_for_testing" = 1:3
  )
  safe_save_file(
    x, "model.safetensors",
    max_shard_size = 60, metadata = list(format = "pt", note = strrep("A long note. ", 12))
  )
}

# Prints `x` at widths 40, 80 and 120 (by option), and checks that no line
# is wider.
expect_fits_widths <- function(x, widths = c(40, 80, 120)) {
  for (w in widths) {
    out <- withr::with_options(list(width = w), utils::capture.output(print(x)))
    expect_lte(max(nchar(out, "width")), w, label = sprintf("the widest line at width %d", w))
  }
}

# Replaces function `name` of the package's namespace until the calling test
# ends (testthat 3.1.6 has no local_mocked_bindings()).
local_package_function <- function(name, value, .env = parent.frame()) {
  ns <- asNamespace("safetensors")
  old <- get(name, envir = ns)
  set <- function(f) {
    unlockBinding(name, ns)
    assign(name, f, envir = ns)
    lockBinding(name, ns)
  }
  set(value)
  withr::defer(set(old), envir = .env)
}

# Skips unless the system has transparent huge pages (Linux built with
# them), where memory can be marked for them with madvise(MADV_HUGEPAGE),
# which the package's loads must not do: tests look at the mark
# (smaps_mapping()).
skip_without_huge_pages <- function() {
  skip_on_os(c("windows", "mac", "solaris"))
  skip_if_not(file.exists("/sys/kernel/mm/transparent_hugepage/enabled"), "this system has no transparent huge pages")
}

# The address of R vector `x`'s header, as a number (the data follows it in
# the same allocation), or NULL where R can't tell it (tracemem() needs R
# built with memory profiling, as Debian's and CRAN's builds are).
vector_address <- function(x) {
  text <- tryCatch(tracemem(x), error = function(e) NULL)
  if (is.null(text)) {
    return(NULL)
  }
  untracemem(x)
  hex_address(gsub("[<>]", "", text))
}

# An address written in hexadecimal ("0x7f..."), as a number (exact below
# 2^53, as every user-space address is).
hex_address <- function(x) {
  d <- match(strsplit(tolower(sub("^0x", "", x)), "")[[1]], c(0:9, letters[1:6])) - 1
  sum(d * 16^(rev(seq_along(d)) - 1))
}

# The mapping of this process that holds the byte at `address` (a number,
# or hexadecimal text as torch writes pointers): its size in kB, and whether
# it was marked for transparent huge pages (`madvise(MADV_HUGEPAGE)`, the
# `hg` of its `VmFlags`).
smaps_mapping <- function(address) {
  hex <- hex_address
  at <- if (is.character(address)) hex(address) else address
  smaps <- readLines("/proc/self/smaps")
  heads <- grep("^[0-9a-f]+-[0-9a-f]+ ", smaps)
  for (k in seq_along(heads)) {
    range <- strsplit(strsplit(smaps[[heads[[k]]]], " ")[[1]][[1]], "-")[[1]]
    if (hex(range[[1]]) <= at && at < hex(range[[2]])) {
      block <- smaps[heads[[k]]:(if (k < length(heads)) heads[[k + 1]] - 1 else length(smaps))]
      field <- function(name) as.numeric(gsub("[^0-9]", "", grep(paste0("^", name, ":"), block, value = TRUE)))
      flags <- strsplit(sub("^VmFlags:[[:space:]]*", "", grep("^VmFlags:", block, value = TRUE)), "[[:space:]]+")[[1]]
      return(list(size_kb = field("Size"), advised = "hg" %in% flags))
    }
  }
  NULL
}
