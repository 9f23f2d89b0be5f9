# Builders for hand-made (and deliberately broken) safetensors files, and
# the catalogue of malformed files test-malformed.R checks.

# 8 little-endian bytes of a non-negative whole number (exact below 2^53).
u64_le <- function(n) {
  out <- raw(8)
  for (i in 1:8) {
    out[[i]] <- as.raw(n %% 256)
    n <- n %/% 256
  }
  out
}

# The bytes of a file: the header length `n` (default: the JSON's length in
# bytes; a number, or 8 raw bytes as they are), the JSON header (a string,
# or raw bytes for text that isn't UTF-8), and the data section (raw bytes,
# or a number of zero bytes).
st_bytes <- function(json, data = raw(), n = NULL) {
  hdr <- if (is.raw(json)) json else charToRaw(enc2utf8(json))
  if (is.numeric(data)) data <- raw(data)
  len <- if (is.raw(n)) n else u64_le(n %||% length(hdr))
  c(len, hdr, data)
}

# Writes `bytes` to a temporary file that is deleted with `env`.
local_st_file <- function(bytes, env = parent.frame()) {
  path <- withr::local_tempfile(fileext = ".safetensors", .local_envir = env)
  writeBin(bytes, path)
  path
}

# One tensor entry of a header.
entry <- function(name, dtype, shape, begin, end) {
  num <- function(x) if (is.numeric(x)) format(x, scientific = FALSE, trim = TRUE) else x
  sprintf(
    '"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%s,%s]}',
    name, dtype, paste(num(shape), collapse = ","), num(begin), num(end)
  )
}
obj <- function(...) paste0("{", paste(c(...), collapse = ","), "}")

# Every malformed file of the suite: the file's bytes and the error class a
# load must give. Covers the format rules (reference safetensors 0.8.0,
# format.md 1.1-1.5) and the weaknesses of safetensors 0.2.x (compat.md 1.9).
malformed_cases <- function() {
  f32 <- function(name = "w", shape = 1, begin = 0, end = 4) entry(name, "F32", shape, begin, end)
  list(
    # 1.1 layout: the header length
    empty_file = list(raw(), "header_too_small"),
    seven_bytes = list(as.raw(c(2, 0, 0, 0, 0, 0, 0)), "header_too_small"),
    length_over_limit = list(st_bytes("{}", n = 100000001), "header_too_large"),
    length_wraps_32_bits = list(st_bytes("{}", n = 2^32 + 2), "header_too_large"),
    length_all_ones = list(st_bytes("{}", n = as.raw(rep(0xff, 8))), "header_too_large"),
    length_2_pow_40 = list(st_bytes("{}", n = 2^40), "header_too_large"),
    git_lfs_pointer = list(
      charToRaw(paste0(
        "version https://git-lfs.github.com/spec/v1\n",
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n",
        "size 12345\n"
      )),
      "header_too_large"
    ),
    length_past_eof = list(st_bytes("{}", n = 100), "invalid_header_length"),
    length_one_too_many = list(st_bytes("{}", n = 3), "invalid_header_length"),
    # 1.1-1.2 the header: UTF-8 JSON object of the right shape
    zero_length_header = list(st_bytes("", n = 0), "invalid_header"),
    not_utf8 = list(st_bytes(c(charToRaw('{"w'), as.raw(0xff), charToRaw('":1}'))), "invalid_header"),
    lone_surrogate = list(st_bytes(obj(f32("\\ud800"))), "invalid_header"),
    json_array = list(st_bytes("[]"), "invalid_header"),
    json_array_of_tensors = list(st_bytes('[{"dtype":"F32","shape":[1],"data_offsets":[0,4]}]', 4), "invalid_header"),
    json_string = list(st_bytes('"safetensors"'), "invalid_header"),
    unterminated = list(st_bytes('{"w":{"dtype":"F32"'), "invalid_header"),
    nul_padding = list(st_bytes(c(charToRaw("{}"), raw(6))), "invalid_header"),
    utf8_bom = list(st_bytes(c(as.raw(c(0xef, 0xbb, 0xbf)), charToRaw("{}"))), "invalid_header"),
    trailing_garbage = list(st_bytes("{} x"), "invalid_header"),
    unknown_dtype = list(st_bytes(obj(entry("w", "F128", 1, 0, 16)), 16), "invalid_header"),
    lowercase_dtype = list(st_bytes(obj(entry("w", "f32", 1, 0, 4)), 4), "invalid_header"),
    negative_shape = list(st_bytes(obj(f32(shape = -1)), 4), "invalid_header"),
    float_shape = list(st_bytes(obj(f32(shape = "1.0")), 4), "invalid_header"),
    string_shape = list(st_bytes('{"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}', 4), "invalid_header"),
    three_offsets = list(st_bytes(obj(f32(end = "4,8")), 8), "invalid_header"),
    offset_beyond_u64 = list(st_bytes(obj(f32(end = "18446744073709551616")), 4), "invalid_header"),
    missing_dtype = list(st_bytes('{"w":{"shape":[1],"data_offsets":[0,4]}}', 4), "invalid_header"),
    tensor_is_string = list(st_bytes('{"b":"hello"}'), "invalid_header"),
    metadata_not_string = list(st_bytes('{"__metadata__":{"a":1}}'), "invalid_header"),
    metadata_nested = list(st_bytes('{"__metadata__":{"a":{"b":"c"}}}'), "invalid_header"),
    metadata_twice = list(st_bytes('{"__metadata__":{},"__metadata__":{}}'), "invalid_header"),
    nul_in_name = list(st_bytes(obj(f32("a\\u0000b")), 4), "invalid_header"),
    # 1.4 data_offsets
    first_not_at_zero = list(st_bytes(obj(f32(begin = 4, end = 8)), 8), "invalid_offset"),
    gap_between = list(st_bytes(obj(f32("a"), f32("b", begin = 8, end = 12)), 12), "invalid_offset"),
    overlapping = list(st_bytes(obj(f32("a", shape = 2, end = 8), f32("b", begin = 4, end = 8)), 8), "invalid_offset"),
    aliased = list(st_bytes(obj(f32("a"), f32("b")), 4), "invalid_offset"),
    end_before_begin = list(st_bytes(obj(f32(begin = 4, end = 0)), 4), "invalid_offset"),
    shape_length_mismatch = list(st_bytes(obj(f32(shape = 1000000)), 4), "invalid_tensor_info"),
    dtype_length_mismatch = list(st_bytes(obj(entry("w", "F64", 1, 0, 4)), 4), "invalid_tensor_info"),
    truncated_data = list(st_bytes(obj(f32(shape = 4, end = 16)), 10), "incomplete_buffer"),
    trailing_data = list(st_bytes(obj(f32()), 12), "incomplete_buffer"),
    polyglot_zip_tail = list(st_bytes(obj(f32()), c(raw(4), charToRaw("PK\005\006"), raw(18))), "incomplete_buffer"),
    shape_overflow = list(st_bytes(obj(entry("w", "F64", c(4294967296, 4294967296), 0, 8)), 8), "overflow"),
    f4_odd_count = list(st_bytes(obj(entry("w", "F4", 3, 0, 2)), 2), "misaligned"),
    f6_partial_byte = list(st_bytes(obj(entry("w", "F6_E2M3", 2, 0, 2)), 2), "misaligned"),
    # 1.5 duplicate keys: the reference keeps the last silently; we refuse
    duplicate_same_bytes = list(st_bytes(obj(f32("a"), f32("a")), 4), "duplicate_name"),
    duplicate_last_valid = list(st_bytes(obj(f32("a", begin = 8, end = 12), f32("a")), 4), "duplicate_name")
  )
}

# Loads every case in this process or another and returns, per case, the
# class of the error (NA when it loaded).
error_classes <- function(paths) {
  vapply(paths, function(p) {
    tryCatch(
      {
        safetensors::safe_load_file(p)
        NA_character_
      },
      error = function(e) paste(class(e), collapse = " ")
    )
  }, character(1))
}
