# The dtype table, which R takes from the Rust core (R/dtypes.R,
# src/rust/src/dtypes.rs).

test_that("the table has every dtype of the format, once, in the reference order", {
  tab <- dtype_table()
  expect_named(tab, c("name", "bits", "r_type", "default_for", "torch", "torch_type"))
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
  expect_identical(defaults, c(logical = "BOOL", raw = "U8", integer = "I32", complex = "C64", double = "F64"))
  for (type in names(defaults)) {
    x <- vector(type, 2)
    expect_identical(safe_info(safe_serialize(list(x = x)))$dtype, defaults[[type]], label = type)
  }
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
