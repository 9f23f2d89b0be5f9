# The tensors users see, from what the Rust core read (src/rust/src/
# tensors.rs builds each tensor's R object): framework constructors
# applied, conversion warnings signalled, and the list safe_load_file()
# returns, with its 0.2.x attributes and its print and str methods.

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
  invisible()
}

#' @export
print.safetensors_tensors <- function(x, ...) {
  print(strip_loaded(x), ...)
  about <- describe_header(x)
  if (!is.null(about)) {
    cat("attr(,\"metadata\"): ", about, "\n", sep = "")
  }
  max_offset <- attr(x, "max_offset", exact = TRUE)
  if (!is.null(max_offset)) {
    cat("attr(,\"max_offset\"): ", format(max_offset, scientific = FALSE), "\n", sep = "")
  }
  invisible(x)
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
