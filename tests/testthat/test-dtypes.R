# The dtype table, which R takes from the Rust core (R/dtypes.R,
# src/rust/src/dtypes.rs).

test_that("the table has every dtype of the format, once, in the reference order", {
  tab <- dtype_table()
  expect_named(tab, c("name", "bits", "r_type", "default_for", "torch", "torch_type", "aliases"))
  expect_true(all(lengths(tab) == 22))
  expect_identical(dtype_names(), tab$name)
  expect_false(anyDuplicated(tab$name) > 0)
  expect_identical(tab$name[1:5], c("BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8"))
  expect_identical(tab$name[20:22], c("F64", "I64", "U64"))
  bits <- structure(tab$bits, names = tab$name)
  expect_identical(unname(bits[c("F4", "F6_E2M3", "U8", "BF16", "C64", "U64")]), c(4L, 6L, 8L, 16L, 64L, 64L))
  expect_identical(dtype_bits("F32"), 32L)
  expect_identical(tensor_bytes("F32", list(2, 3)), 24)
  expect_identical(tensor_bytes("F4", c(3, 2)), 3)
  expect_identical(tensor_bytes("F64", integer(0)), 8)
})

test_that("each dtype reads into the R type the table says, and R types save as their defaults", {
  tab <- dtype_table()
  for (i in seq_along(tab$name)) {
    d <- tab$name[[i]]
    # A fixture's first tensor: plain values (others hold the extremes).
    x <- safe_load_file(fixture(paste0("dtype-", d, ".safetensors")), tensors = safe_info(fixture(paste0("dtype-", d, ".safetensors")))$name[[1]])[[1]]
    expect_identical(typeof(x), tab$r_type[[i]], label = d)
  }
  defaults <- default_dtypes()
  expect_identical(
    defaults,
    c(logical = "BOOL", raw = "U8", integer = "I32", complex = "C64", double = "F64", integer64 = "I64")
  )
  for (type in setdiff(names(defaults), "integer64")) {
    x <- vector(type, 2)
    expect_identical(safe_info(safe_serialize(list(x = x)))$dtype, defaults[[type]], label = type)
  }
  skip_if_not_installed("bit64")
  expect_identical(safe_info(safe_serialize(list(x = bit64::as.integer64(1:2))))$dtype, defaults[["integer64"]])
})

test_that("the torch columns name R torch's dtype functions and types", {
  fns <- torch_dtype_fns()
  types <- torch_dtype_names()
  expect_length(fns, 13)
  expect_setequal(names(fns), unname(types))
  expect_identical(fns[["BF16"]], "torch_bfloat16")
  expect_identical(types[["Float"]], "F32")
  expect_true(all(startsWith(fns, "torch_")))
})

test_that("dtypes are named as the format, numpy or torch names them, in any case", {
  spellings <- c(
    F32 = "F32", F32 = "f32", F32 = "float32", F32 = "Float32", F32 = "torch.float32",
    BF16 = "bfloat16", BF16 = "BF16", BF16 = "bf16", BF16 = "torch.BFloat16",
    F16 = "float16", F16 = "half", F16 = "HALF", F64 = "float64", F64 = "double",
    I64 = "int64", I64 = "i64", U64 = "uint64", U8 = "uint8", U8 = "u8", I8 = "int8",
    I16 = "int16", I16 = "short", U16 = "uint16", I32 = "int32", U32 = "uint32",
    BOOL = "bool", BOOL = "Bool", C64 = "complex64", C64 = "c64",
    F8_E4M3 = "float8_e4m3fn", F8_E4M3 = "f8_e4m3", F8_E5M2 = "float8_e5m2",
    F8_E8M0 = "float8_e8m0fnu", F8_E4M3FNUZ = "float8_e4m3fnuz", F8_E5M2FNUZ = "float8_e5m2fnuz",
    F4 = "float4_e2m1fn", F6_E2M3 = "float6_e2m3fn", F6_E3M2 = "float6_e3m2fn"
  )
  expect_identical(dtype_canonical(unname(spellings)), names(spellings))
  # Every dtype has its format name, in any case, and only names that mean
  # one thing to numpy and torch.
  expect_identical(dtype_canonical(dtype_names()), dtype_names())
  expect_identical(dtype_canonical(tolower(dtype_names())), dtype_names())
  expect_identical(dtype_canonical(c("float", "int", "long", "byte", "cfloat", "", "F17", NA)), rep(NA_character_, 8))
  tab <- dtype_table()
  expect_true(all(vapply(tab$aliases, is.character, logical(1))))
})

test_that("unknown dtype names suggest the closest known one", {
  expect_identical(dtype_suggestion("flaot16"), "float16")
  expect_identical(dtype_suggestion("F33"), "F32")
  expect_identical(dtype_suggestion("torch.bfloat61"), "bfloat16")
  expect_identical(dtype_suggestion("uint"), "uint8")
  expect_snapshot(error = TRUE, {
    as_dtype(c("F32", "flaot16", "nope"))
    as_dtype("BF61", tensors = "w")
  })
})

test_that("a dtype of numpy or torch the format lacks names the nearest one it has", {
  expect_error(as_dtype("C128"), class = "safetensors_error_invalid_argument")
  expect_snapshot(error = TRUE, {
    as_dtype("C128")
    as_dtype("torch.cdouble", tensors = "z")
    as_dtype("complex32")
    as_dtype("float128")
    safe_serialize(list(z = 1i), dtype = "complex128")
  })
})
