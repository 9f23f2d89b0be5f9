# A file of tensors for the tests of handles (test-open.R) and slices
# (test-slice.R).

# A file with tensors of several dtypes and ranks.
lazy_tensors <- function() {
  list(
    vec = as.numeric(1:7),
    mat = matrix(as.numeric(1:30), 5, 6),
    arr = array(as.numeric(1:60), c(3, 4, 5)),
    a4 = array(as.numeric(1:120), c(2, 3, 4, 5)),
    f32 = as_loaded_dtype(matrix(seq(-2, 2, length.out = 24), 4, 6), "F32"),
    f16 = as_loaded_dtype(array(seq(0, 5.75, by = 0.25), c(2, 3, 4)), "F16"),
    bf16 = as_loaded_dtype(matrix(c(1, 2, 4, 8, -1, 0.5), 2, 3), "BF16"),
    i64 = structure(matrix(c(-3, 5, 2^40, 7, 8, 9), 3, 2), dtype = "I64"),
    u8 = structure(matrix(0:19, 4, 5), dtype = "U8"),
    int = matrix(-5:6, 3, 4),
    lgl = matrix(c(TRUE, FALSE, NA, TRUE, TRUE, FALSE) %in% TRUE, 2, 3),
    cplx = matrix(complex(real = 1:6, imaginary = -(1:6)), 3, 2),
    f4 = as_loaded_dtype(matrix(c(0, 0.5, 1, 1.5, 2, 3, 4, 6), 2, 4), "F4"),
    scalar = structure(42L, shape = integer(0)),
    empty = matrix(numeric(0), 0, 3),
    `with space` = 1:3,
    slice = c(1, 2)
  )
}

local_lazy_file <- function(tensors = lazy_tensors(), env = parent.frame(), ...) {
  path <- withr::local_tempfile(fileext = ".safetensors", .local_envir = env)
  safe_save_file(tensors, path, ...)
  path
}

strip_dtype <- function(x) {
  attr(x, "dtype") <- NULL
  x
}
