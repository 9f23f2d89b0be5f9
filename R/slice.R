# Slices: the slice objects of a handle (`h$slice("w")`), `safe_slice()`,
# and reading a selection of a tensor.

#' @export
dim.safetensors_slice <- function(x) {
  shape <- .subset2(x, "shape")
  if (length(shape) == 0) NULL else shape
}

# A slice object stands for the tensor's array: its length is the number
# of elements, as.array() reads it whole (as `h[["w"]]` does), and str()
# shows it as str() shows that array, reading only its first values.

#' @export
length.safetensors_slice <- function(x) {
  n <- prod(as.numeric(.subset2(x, "shape")))
  if (n <= .Machine$integer.max) as.integer(n) else n
}

#' @export
as.array.safetensors_slice <- function(x, ...) {
  as.array(read_tensors(.subset2(x, "handle"), .subset2(x, "name"))[[1]], ...)
}

#' @rawNamespace S3method(utils::str, safetensors_slice)
str.safetensors_slice <- function(object, ...) {
  shape <- .subset2(object, "shape")
  dtype <- .subset2(object, "dtype")
  dims <- if (length(shape) > 0) {
    sprintf(
      " [%s%s]",
      paste0("1:", format(shape, scientific = FALSE, trim = TRUE), collapse = ", "),
      if (length(shape) == 1) "(1d)" else ""
    )
  } else {
    ""
  }
  first <- slice_head(object)
  type <- if (is.null(first)) {
    tab <- dtype_table()
    tab$r_type[match(dtype, tab$name)]
  } else {
    typeof(first)
  }
  word <- switch(type, double = "num", integer = "int", logical = "logi", complex = "cplx", type)
  values <- if (length(first) > 0) {
    paste0(" ", paste(format_values(first), collapse = " "), if (length(first) < length(object)) " ...")
  } else {
    ""
  }
  cat(
    " <safetensors_slice> ", encodeString(.subset2(object, "name"), quote = '"'), ": ", dtype, " ",
    word, dims, values, "\n",
    sep = ""
  )
  invisible()
}

# The first `m` elements of a slice object in R's order (column-major), read
# from the file for the "r" framework, else NULL: a block whose leading
# dimensions are whole, so that its elements are the array's first ones.
slice_head <- function(x, m = 10) {
  h <- .subset2(x, "handle")
  shape <- .subset2(x, "shape")
  if (hget(h, "framework") != "r" || !handle_is_open(h) || any(shape == 0)) {
    return(NULL)
  }
  idx <- list(whole_index)
  need <- m
  for (j in seq_along(shape)) {
    take <- if (need > 1) min(shape[[j]], ceiling(need)) else 1
    idx[[j]] <- seq_len(take)
    need <- if (take == shape[[j]]) need / take else 0
  }
  out <- tryCatch(
    suppressWarnings(read_slice(h, .subset2(x, "name"), idx, drop = TRUE)),
    error = function(e) NULL
  )
  attributes(out) <- NULL
  out[seq_len(min(m, length(out)))]
}

# Python's slice methods: `s$get_shape()` and `s$get_dtype()`; other
# names are the slice's fields.
#' @export
`$.safetensors_slice` <- function(x, name) {
  switch(name,
    get_shape = function() .subset2(x, "shape"),
    get_dtype = function() .subset2(x, "dtype"),
    .subset2(x, name)
  )
}

#' @export
format.safetensors_slice <- function(x, ...) {
  sprintf(
    "<safetensors_slice> %s: %s %s",
    encodeString(.subset2(x, "name"), quote = "'"), .subset2(x, "dtype"), format_shape(.subset2(x, "shape"))
  )
}

#' @export
print.safetensors_slice <- function(x, ...) {
  cat(format(x), "\n", sep = "")
  invisible(x)
}

#' @export
`[.safetensors_slice` <- function(x, ..., drop = TRUE) {
  idx <- index_dots(...)
  read_slice(.subset2(x, "handle"), .subset2(x, "name"), idx, drop)
}

#' @rdname safe_open
#' @param name The name of the tensor to slice.
#' @param drop Whether to drop extents of one from the result, as for
#'   arrays. Default `TRUE`.
#' @export
safe_slice <- function(path, name, ..., drop = TRUE, int64 = NULL, uint8 = NULL) {
  if ("x" %in% ...names()) {
    return(slice_with_x(sys.call(), parent.frame(), environment()))
  }
  check_required(path)
  check_required(name)
  idx <- index_dots(...)
  x <- path
  if (!inherits(x, "safetensors_file")) {
    x <- safe_open(x, backend = "read")
    on.exit(close(x), add = TRUE)
  }
  check_bool(drop)
  own <- hget(x, "choices")
  choices <- read_choices(
    int64 %||% own$int64 %||% "double", uint8 %||% own$uint8 %||% "integer", hget(x, "framework")
  )
  read_slice(x, tensor_name(x, name), idx, drop, choices = choices)
}

# safe_slice() called its first argument `x` in 0.4.0: `call`, a call that
# names it so, is evaluated again (in `env`, its caller's frame) with the
# name `path`, so R matches its arguments as it did then. A call whose `x`
# came through another function's `...` can't be rewritten and is an error
# (of `error_call`, safe_slice()'s frame).
slice_with_x <- function(call, env, error_call) {
  nms <- names(call)
  if (!"x" %in% nms || "path" %in% nms) {
    st_abort(
      "invalid_argument",
      c(
        "{.fn safe_slice} has no argument {.arg x}.",
        i = "Its first argument is {.arg path} (a handle, or anything {.fn safe_open} accepts)."
      ),
      call = error_call
    )
  }
  names(call)[nms == "x"] <- "path"
  call[[1]] <- safe_slice
  eval(call, env)
}

# The indices in `...`, one per dimension, an empty one (the first of
# `x[, 2]`) as `whole_index`. Empty arguments are found with missing(..k),
# evaluated here, in the frame that owns the dots.
index_dots <- function(...) {
  idx <- vector("list", ...length())
  for (k in seq_along(idx)) {
    empty <- eval(call("missing", as.name(paste0("..", k))))
    idx[k] <- list(if (empty) whole_index else ...elt(k))
  }
  idx
}

# Stands for an empty index: the whole extent of its dimension.
whole_index <- structure(list(), class = "safetensors_whole_index")

is_whole_index <- function(i) inherits(i, "safetensors_whole_index")

# Reads `idx` (one index per dimension, R semantics) of tensor `name`, with
# the handle's `int64` and `uint8` choices unless `choices` gives others.
read_slice <- function(x, name, idx, drop, call = parent.frame(), choices = hget(x, "choices")) {
  check_bool(drop, call = call)
  at <- match(name, hget(x, "names"))
  part <- hget(x, "parts")[[hget(x, "part_of")[[at]]]]
  pos <- hget(x, "pos")[[at]]
  shape <- part$info$shape[[pos]]
  rank <- length(shape)
  whole <- length(idx) == 1 && is_whole_index(idx[[1]])
  if (rank == 0 && !whole && length(idx) > 0) {
    st_abort(
      "invalid_slice",
      c(
        "Tensor {.val {name}} is a scalar, which can't be indexed.",
        i = "Read it whole with {.code [[}, or with {.code []} on the slice."
      ),
      tensor = name,
      call = call
    )
  }
  if (whole) {
    idx <- rep(list(whole_index), rank)
  }
  if (length(idx) != rank) {
    st_abort(
      "invalid_slice",
      c(
        "Tensor {.val {name}} has {rank} dimension{?s}, so a slice needs {rank} ind{?ex/ices}, not {length(idx)}.",
        i = "Leave an index empty to select a whole dimension, as in {.code x[1:10, ]}."
      ),
      tensor = name,
      call = call
    )
  }
  specs <- vector("list", rank)
  is_range <- integer(rank)
  for (j in seq_len(rank)) {
    s <- index_spec(idx[[j]], shape[[j]], j, name, call)
    specs[j] <- list(s$spec)
    is_range[[j]] <- s$is_range
  }
  framework <- hget(x, "framework")
  mode <- handle_mode(x, framework, choices)
  segments <- if (part_is_remote(part)) {
    # The core names the bytes the slice needs; they are fetched first.
    ranges <- check_part(slice_fetches_(part$ptr, name, specs, is_range), part, call = call)
    remote_segments(part, ranges, call = call)
  }
  res <- check_part(handle_slice_(part$ptr, name, specs, is_range, mode, segments), part, call = call)
  out <- res$tensor
  warn_conversions(name, res, call = call)
  if (framework == "r") {
    if (rank > 0 && drop) {
      d <- dim(out)
      keep <- d != 1
      dim(out) <- if (rank == 1) {
        if (length(out) <= 1) NULL else d
      } else if (sum(keep) <= 1) {
        NULL
      } else {
        d[keep]
      }
    }
    return(out)
  }
  shape_out <- attr(out, "shape")
  if (drop) {
    shape_out <- shape_out[shape_out != 1]
  }
  attr(out, "shape") <- shape_out
  if (framework == "raw") {
    return(out)
  }
  meta <- list(
    dtype = attr(out, "dtype"),
    shape = if (length(shape_out) > 0) shape_out else list(),
    data_offsets = c(0, length(out))
  )
  attributes(out) <- NULL
  do.call(safetensors_frameworks[[framework]]$constructor, c(list(out, meta), hget(x, "args")))
}

# Turns one R index into what the Rust slicer takes: a 0-based range
# c(start, count, step) or a vector of 0-based indices.
index_spec <- function(i, d, axis, name, call) {
  bad <- function(msg, ...) {
    st_abort(
      "invalid_slice",
      c(msg, i = "The index is for dimension {axis} of tensor {.val {name}}, which has extent {d}."),
      ...,
      tensor = name,
      call = call
    )
  }
  if (is_whole_index(i)) {
    return(list(spec = c(0, d, 1), is_range = 1L))
  }
  if (is.null(i)) {
    i <- integer()
  }
  if (is.object(i) || !(is.numeric(i) || is.logical(i))) {
    bad("An index must be numeric or logical, not {.obj_type_friendly {i}}.")
  }
  if (anyNA(i)) {
    bad("An index can't be {.code NA}.")
  }
  if (is.logical(i)) {
    if (length(i) > d) {
      bad("A logical index can't be longer than its dimension ({length(i)} > {d}).")
    }
    i <- if (length(i) == 0) integer() else which(rep_len(i, d))
  } else {
    if (any(!is.finite(i))) {
      bad("An index must be finite.")
    }
    i <- trunc(i)
    if (any(i < 0)) {
      if (any(i > 0)) {
        bad("Positive and negative indices can't be mixed.")
      }
      excl <- -i[i != 0]
      if (any(excl > d)) {
        bad("Index {.val {-max(excl)}} excludes an element beyond the extent.")
      }
      i <- setdiff(seq_len(d), excl)
    } else {
      i <- i[i != 0]
      if (any(i > d)) {
        bad("Index {.val {max(i)}} is out of range.")
      }
    }
  }
  i <- as.numeric(i) - 1
  n <- length(i)
  if (n == 0) {
    return(list(spec = c(0, 0, 1), is_range = 1L))
  }
  if (n == 1) {
    return(list(spec = c(i, 1, 1), is_range = 1L))
  }
  step <- i[[2]] - i[[1]]
  if (step > 0 && all(diff(i) == step)) {
    return(list(spec = c(i[[1]], n, step), is_range = 1L))
  }
  list(spec = i, is_range = 0L)
}
