# The tensors users see, from what the Rust core read (src/rust/src/
# tensors.rs builds each tensor's R object): framework constructors
# applied, conversion warnings signalled, and the list safe_load_file()
# returns, with its 0.2.x attributes and its print and str methods.

# What the Rust reader makes of each tensor (src/rust/src/tensors.rs,
# `Mode`): for framework "r", R arrays, with the `int64` and `uint8`
# choices; for the others, the bytes they are built from.
read_mode <- function(framework, int64 = "double", uint8 = "integer") {
  if (framework == "r") c("array", int64, uint8) else "raw"
}

# The `int64` and `uint8` arguments of a reading function, checked:
# `list(int64, uint8)`, one choice each (the first when left as the
# defaults). They apply to framework "r" only; `int64 = "integer64"` needs
# bit64.
read_choices <- function(int64, uint8, framework, call = parent.frame()) {
  int64 <- arg_choice(int64, c("double", "integer64", "character"), "int64", call = call)
  uint8 <- arg_choice(uint8, c("integer", "raw"), "uint8", call = call)
  if (framework != "r" && (int64 != "double" || uint8 != "integer")) {
    st_abort(
      "invalid_argument",
      c(
        "{.arg int64} and {.arg uint8} apply to {.code framework = \"r\"} only.",
        i = "Framework {.val {framework}} builds its tensors from the bytes as stored."
      ),
      call = call
    )
  }
  if (int64 == "integer64" && !bit64_installed()) {
    st_abort(
      "package_not_installed",
      c(
        "{.code int64 = \"integer64\"} needs the {.pkg bit64} package, which is not installed.",
        i = "Install it with {.code install.packages(\"bit64\")} (on Debian and Ubuntu, {.code apt install r-cran-bit64}).",
        i = "Or read 64-bit integers with {.code int64 = \"character\"} (exact) or {.code \"double\"}."
      ),
      package = "bit64",
      call = call
    )
  }
  list(int64 = int64, uint8 = uint8)
}

# Whether bit64 can be loaded (it is loaded then, so that integer64 vectors
# print and compute as such).
bit64_installed <- function() {
  requireNamespace("bit64", quietly = TRUE)
}

# Attaches the 0.2.x attributes, signals conversion warnings, and builds
# framework tensors from raw bytes where a framework was asked for.
finish_load <- function(res, framework, args, call = parent.frame()) {
  out <- res$tensors
  warn_conversions(names(out), res, call = call)
  if (framework %in% c("r", "raw")) {
    check_framework_args(framework, args, call = call)
  } else {
    header <- res$header
    at <- match(names(out), names(header))
    constructor <- safetensors_frameworks[[framework]]$constructor
    for (i in seq_along(out)) {
      raw <- out[[i]]
      attributes(raw) <- NULL
      out[i] <- list(do.call(constructor, c(list(raw, header[[at[[i]]]]), args)))
    }
  }
  as_loaded(out, res$header, res$max_offset)
}

# A loaded list as safe_load_file() returns it: the 0.2.x attributes
# "metadata" (the header) and "max_offset", and the class for printing.
as_loaded <- function(out, header, max_offset) {
  attr(out, "metadata") <- header
  attr(out, "max_offset") <- max_offset
  class(out) <- c("safetensors_tensors", "list")
  out
}

# The loaded list without the attributes added by finish_load().
strip_loaded <- function(x) {
  attr(x, "metadata") <- NULL
  attr(x, "max_offset") <- NULL
  attr(x, "origin") <- NULL
  class(x) <- setdiff(class(x), "safetensors_tensors")
  if (identical(class(x), "list")) {
    class(x) <- NULL
  }
  x
}

# One line on the "metadata" attribute, for str() and print().
describe_header <- function(x) {
  header <- attr(x, "metadata", exact = TRUE)
  if (!is.list(header)) {
    return(NULL)
  }
  n <- sum(names(header) != "__metadata__")
  meta <- header[["__metadata__"]]
  sprintf(
    "the file header: %d tensor%s%s",
    n, if (n == 1) "" else "s",
    if (is.null(meta)) "" else sprintf(" and `__metadata__` (%d key%s)", length(meta), if (length(meta) == 1) "" else "s")
  )
}

#' @rawNamespace S3method(utils::str, safetensors_tensors)
str.safetensors_tensors <- function(object, ...) {
  indent <- list(...)$indent.str %||% " "
  utils::str(strip_loaded(object), ...)
  about <- describe_header(object)
  if (!is.null(about)) {
    cat(indent, "- attr(*, \"metadata\")= ", about, "\n", sep = "")
  }
  max_offset <- attr(object, "max_offset", exact = TRUE)
  if (!is.null(max_offset)) {
    cat(indent, "- attr(*, \"max_offset\")= ", format(max_offset, scientific = FALSE), "\n", sep = "")
  }
  origin <- attr(object, "origin", exact = TRUE)
  if (!is.null(origin)) {
    cat(indent, "- attr(*, \"origin\")= ", describe_origin(origin), "\n", sep = "")
  }
  invisible()
}

#' @export
print.safetensors_tensors <- function(x, ..., n = 20, width = getOption("width", 80)) {
  cat(format_loaded(x, n = n, width = width), sep = "\n")
  invisible(x)
}

# The lines print() shows for a loaded list: one line per tensor (the first
# `n`) with its name, dtype, shape and as many of its first values (in R's
# order, as str() shows them) as fit in `width`, then the 0.2.x attributes,
# summed up.
format_loaded <- function(x, n = 20, width = getOption("width", 80)) {
  k <- length(x)
  lines <- sprintf("<safetensors_tensors> %d tensor%s", k, if (k == 1) "" else "s")
  if (k > 0 && n > 0) {
    show <- seq_len(min(n, k))
    nms <- names(x) %||% rep("", k)
    about <- lapply(show, function(i) describe_tensor(.subset2(x, i)))
    cols <- list(
      ifelse(nms[show] == "", "\"\"", encodeString(nms[show])),
      vapply(about, `[[`, "", "dtype"),
      vapply(about, `[[`, "", "shape")
    )
    # Long names are cut in the middle to leave the values some room.
    fit <- fit_columns(
      c("name", "dtype", "shape"), cols,
      width = width - max(10, width %/% 4), shrink = c(TRUE, FALSE, FALSE), drop = FALSE
    )
    lead <- paste0("  ", do.call(paste, c(fit$cells, sep = "  ")), "  ")
    # The values go after the other columns, in the space left.
    values <- vapply(seq_along(show), function(i) {
      fit_values(about[[i]]$values, about[[i]]$more, width - nchar(lead[[i + 1]], "width"))
    }, character(1))
    lines <- c(lines, paste0(lead[[1]], "values"), trimws(paste0(lead[-1], values), "right"))
    if (k > n) {
      more <- sprintf("  # ... and %d more tensor%s; print(n = ) shows more", k - n, if (k - n == 1) "" else "s")
      lines <- c(lines, more)
    }
  }
  about <- describe_header(x)
  if (!is.null(about)) {
    # Wrapped to fit (strwrap() keeps lines shorter than its width).
    lines <- c(lines, strwrap(paste0("attr(,\"metadata\"): ", about), width + 1, exdent = 2))
  }
  max_offset <- attr(x, "max_offset", exact = TRUE)
  if (!is.null(max_offset)) {
    lines <- c(lines, paste0("attr(,\"max_offset\"): ", format(max_offset, scientific = FALSE)))
  }
  origin <- attr(x, "origin", exact = TRUE)
  if (!is.null(origin)) {
    lines <- c(lines, paste0("attr(,\"origin\"): ", describe_origin(origin)))
  }
  lines
}

# What a print line shows of one element of a loaded list: `dtype` (the
# "dtype" attribute, else the R type as `<dbl>`), `shape`, the first
# `values` formatted, and whether there are `more`. Framework tensors show
# their safe_tensor_meta() and class; anything else its class.
describe_tensor <- function(v, m = 20) {
  if (is.atomic(v) && !is.object(v)) {
    dtype <- attr(v, "dtype", exact = TRUE)
    if (!is_string(dtype)) {
      dtype <- paste0("<", r_type_abbrev(v), ">")
    }
    shape <- dim(v) %||% attr(v, "shape", exact = TRUE) %||% length(v)
    head <- v[seq_len(min(m, length(v)))]
    attributes(head) <- NULL
    return(list(dtype = dtype, shape = format_shape(shape), values = format_values(head), more = length(v) > m))
  }
  cls <- paste0("<", class(v)[[1]], ">")
  has_meta <- vapply(class(v), function(c) {
    !is.null(utils::getS3method("safe_tensor_meta", c, optional = TRUE))
  }, logical(1))
  if (any(has_meta)) {
    meta <- tryCatch(safe_tensor_meta(v), error = function(e) NULL)
    if (is_string(meta$dtype)) {
      return(list(dtype = meta$dtype, shape = format_shape(unlist(meta$shape)), values = cls, more = FALSE))
    }
  }
  list(dtype = "", shape = "", values = cls, more = FALSE)
}

r_type_abbrev <- function(v) {
  switch(typeof(v),
    double = "dbl", integer = "int", logical = "lgl", character = "chr",
    complex = "cpl", raw = "raw", typeof(v)
  )
}

# As many of `values` as fit in `width` columns, space-separated, with
# " ..." when some are left out (or `more` are not shown).
fit_values <- function(values, more, width) {
  if (length(values) == 0 && !more) {
    return("")
  }
  # The end of each value, with a space between values.
  w <- cumsum(nchar(values, "width") + 1) - 1
  if (!more && length(values) > 0 && w[[length(w)]] <= width) {
    return(paste(values, collapse = " "))
  }
  fits <- sum(w <= width - 4)
  paste(c(values[seq_len(fits)], "..."), collapse = " ")
}

warn_conversions <- function(nms, res, call = parent.frame()) {
  for (i in which(res$inexact > 0)) {
    st_warn(
      "precision",
      c(
        "Tensor {.val {nms[[i]]}} has {res$inexact[[i]]} value{?s} beyond 2^53, which double can't hold exactly.",
        i = "They were rounded to the nearest double."
      )
    )
  }
  for (i in which(res$na > 0)) {
    st_warn(
      "range",
      c(
        "Tensor {.val {nms[[i]]}} has {res$na[[i]]} value{?s} that integer64 can't hold, now {.code NA}.",
        i = "integer64 holds -2^63 + 1 to 2^63 - 1 (-2^63 is its {.code NA}); {.code int64 = \"character\"} reads every value exactly."
      )
    )
  }
  for (i in which(res$int_min > 0)) {
    st_warn(
      "type",
      c(
        "Tensor {.val {nms[[i]]}} holds -2147483648, which is {.code NA} in R integers.",
        i = "It was returned as double instead of integer."
      )
    )
  }
}
