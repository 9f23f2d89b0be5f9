# The dtypes of the format, as the Rust core defines them (its table is the
# only one: src/rust/src/dtypes.rs): names, bits per element, the R type
# each is read into, and R torch's names for them.

dtype_state <- new.env(parent = emptyenv())

# The table as a list of columns (name, bits, r_type, default_for, torch,
# torch_type), in the reference implementation's order; built once per
# session.
dtype_table <- function() {
  dtype_state$table %||% (dtype_state$table <- dtype_table_())
}

# The dtype names of the format.
dtype_names <- function() {
  dtype_table()$name
}

# The dtype each R vector type is written as by default, named by type
# (double = "F64", ...).
default_dtypes <- function() {
  tab <- dtype_table()
  has <- !is.na(tab$default_for)
  structure(tab$name[has], names = tab$default_for[has])
}

# Bits per element of `dtype` (one name).
dtype_bits <- function(dtype) {
  tab <- dtype_table()
  tab$bits[[match(dtype, tab$name)]]
}

# Bytes of a tensor of `dtype` and `shape` (rounded up to whole bytes for
# sub-byte dtypes, whose valid tensors fill whole bytes anyway).
tensor_bytes <- function(dtype, shape) {
  ceiling(prod(as.numeric(unlist(shape))) * dtype_bits(dtype) / 8)
}
