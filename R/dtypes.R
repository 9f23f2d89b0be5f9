# The dtypes of the format, as the Rust core defines them (its table is the
# only one: src/rust/src/dtypes.rs): names, bits per element, the R type
# each is read into, R torch's names for them, and the numpy and torch names
# users may give them by.

dtype_state <- new.env(parent = emptyenv())

# The table as a list of columns (name, bits, r_type, default_for, torch,
# torch_type, aliases), in the reference implementation's order; built once
# per session.
dtype_table <- function() {
  dtype_state$table %||% (dtype_state$table <- dtype_table_())
}

# The dtype names of the format.
dtype_names <- function() {
  dtype_table()$name
}

# The dtype each R vector type (and bit64's class integer64) is written as
# by default, named by type (double = "F64", ...).
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

# The strides, in elements, of a row-major tensor of `shape` (a numeric
# vector, outermost first; at least one dimension).
row_major_strides <- function(shape) {
  rev(cumprod(c(1, rev(shape[-1]))))
}

# Every accepted spelling of a dtype in lower case (the format's names, and
# numpy's and torch's), naming the format's name of the dtype.
dtype_spellings <- function() {
  dtype_state$spellings %||% (dtype_state$spellings <- {
    tab <- dtype_table()
    structure(
      c(tab$name, rep(tab$name, lengths(tab$aliases))),
      names = tolower(c(tab$name, unlist(tab$aliases)))
    )
  })
}

# The format's names of dtypes `x` given in any accepted spelling, in any
# case, with or without torch's "torch." prefix; NA for unknown names.
dtype_canonical <- function(x) {
  unname(dtype_spellings()[sub("^torch[.]", "", tolower(x))])
}

# The known spelling closest to the unknown dtype name `x`, as users would
# write it: the format's names in upper case, the others in lower case.
dtype_suggestion <- function(x) {
  keys <- names(dtype_spellings())
  d <- utils::adist(sub("^torch[.]", "", tolower(x)), keys)
  best <- keys[[which.min(d)]]
  canonical <- dtype_spellings()[[best]]
  if (identical(best, tolower(canonical))) canonical else best
}

# Dtypes of numpy and torch that the format lacks, by their names in lower
# case: what each is, and the nearest dtype the format has.
absent_dtypes <- list(
  c128 = c("complex128", "C64"), complex128 = c("complex128", "C64"), cdouble = c("complex128", "C64"),
  c32 = c("complex32", "C64"), complex32 = c("complex32", "C64"), chalf = c("complex32", "C64"),
  f128 = c("float128", "F64"), float128 = c("float128", "F64"), longdouble = c("float128", "F64")
)

# The format's names of dtypes `x` (a character vector of any accepted
# spellings), or an error of class safetensors_error_invalid_argument for
# the first unknown one, suggesting the closest known name. The error
# names the tensor of each dtype (`tensors`, parallel to `x`), or the
# `dtype` argument when `tensors` is NULL.
as_dtype <- function(x, tensors = NULL, call = parent.frame()) {
  out <- dtype_canonical(x)
  bad <- which(is.na(out))
  if (length(bad) > 0) {
    given <- x[[bad[[1]]]]
    absent <- absent_dtypes[[sub("^torch[.]", "", tolower(given))]]
    suggestion <- if (is.null(absent)) dtype_suggestion(given)
    nearest <- absent[2]
    tensor <- if (!is.null(tensors)) tensors[[bad[[1]]]]
    st_abort(
      "invalid_argument",
      c(
        if (is.null(tensor)) {
          "{.arg dtype} has unknown dtype {.val {given}}."
        } else {
          "Tensor {.val {tensor}} has unknown dtype {.val {given}}."
        },
        x = if (!is.null(absent)) "The safetensors format has no {absent[[1]]}; the nearest dtype it has is {.val {nearest}}.",
        i = if (!is.null(suggestion)) "Did you mean {.val {suggestion}}?",
        i = "A dtype is a safetensors name such as {.val BF16} or a numpy or torch name such as {.val bfloat16}, in any case."
      ),
      dtype = given,
      call = call
    )
  }
  out
}
