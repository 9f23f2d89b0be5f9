#' Inspect a safetensors header
#'
#' `safe_info()` describes every tensor of a file and `safe_metadata()`
#' returns its `__metadata__`; both read and validate the header only, never
#' the tensor data, so they are instant on files of any size.
#'
#' A connection is read from its current position: the eight-byte header
#' length and the header, and no further (the connection is left just after
#' the header, so it need not be seekable). Since the data are not read, the
#' check that they are as long as the header says is left out.
#'
#' For a sharded checkpoint's index, the tensors are those of the weight
#' map, shard by shard, with a column `file` naming each one's shard, and
#' `safe_metadata()` returns the first shard's metadata (transformers writes
#' the same metadata to every shard; the index's own `total_size` is the sum
#' of the `bytes` column).
#'
#' @param path A path to a `.safetensors` file or a shard index, an
#'   `http://` or `https://` URL of either (the header is read with one
#'   range request, two when it is over 64 KiB; see "Remote files" in
#'   [safe_open()]), a folder holding a checkpoint (see "Folders" in
#'   [safe_load_file()]), a Hugging Face Hub path `hf://owner/name/...`
#'   (see [safetensors-hub]), a raw vector holding a file, a binary
#'   connection, or a handle from [safe_open()].
#' @param ... Must be empty; an argument there is an error of class
#'   `safetensors_error_invalid_argument` naming it.
#' @return `safe_info()`: a data frame (of class `safetensors_info`, which
#'   prints shapes as `[2, 3]` and at most `n = 20` rows) with one row per
#'   tensor in the order its header lists them and columns `name`, `dtype`, `shape` (a list column of integer
#'   vectors, outermost dimension first; `integer(0)` for a scalar), `numel`
#'   (number of elements), `bytes`, and `begin` and `end`, the tensor's
#'   byte range as absolute 0-based offsets in the file (`end` exclusive), so
#'   `begin - 8 - header length` is the header's `data_offsets` value; for
#'   a sharded checkpoint, also `file`. Read from an `hf://` path, it has
#'   attribute `"origin"` (see [safetensors-hub]).
#'   `safe_metadata()`: a named character vector, or `NULL` if the file has
#'   no `__metadata__`.
#' @seealso [safe_open()] to read tensors lazily.
#' @export
#' @examples
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' safe_info(path)
#' safe_metadata(path)
#'
#' # Offsets address the bytes in the file
#' info <- safe_info(path)
#' bytes <- readBin(path, "raw", file.size(path))
#' readBin(bytes[(info$begin[2] + 1):info$end[2]], "double", 3, size = 4)
safe_info <- function(path, ...) {
  check_required(path)
  check_dots_empty(...)
  res <- with_header(path, function(h) {
    list(tab = handle_table(h), sharded = !is.null(hget(h, "index")), origin = attr(h, "origin"))
  })
  tab <- res$tab
  df <- data.frame(
    name = tab$name,
    dtype = tab$dtype,
    shape = I(unname(tab$shape)),
    numel = tab$numel,
    bytes = tab$bytes,
    begin = tab$begin,
    end = tab$end,
    stringsAsFactors = FALSE
  )
  if (res$sharded) {
    df$file <- tab$file
  }
  class(df) <- c("safetensors_info", "data.frame")
  attr(df, "origin") <- res$origin
  df
}

#' @export
format.safetensors_info <- function(x, ..., n = 20, width = getOption("width", 80)) {
  # A subset that lost the columns this needs is formatted as a data frame.
  if (!info_complete(x)) {
    return(NextMethod())
  }
  rows <- nrow(x)
  head <- sprintf(
    "# safetensors header: %d tensor%s, %s",
    rows, if (rows == 1) "" else "s", format_bytes(sum(x$bytes))
  )
  if (rows == 0) {
    return(head)
  }
  show <- seq_len(min(n, rows))
  cols <- lapply(names(x), function(col) {
    v <- x[[col]][show]
    if (is.list(v)) {
      vapply(v, format_shape, character(1))
    } else if (is.character(v)) {
      encodeString(v)
    } else if (is.numeric(v)) {
      format(v, scientific = FALSE, trim = TRUE)
    } else {
      format(v)
    }
  })
  right <- vapply(x, is.numeric, logical(1))
  origin <- attr(x, "origin")
  # Long tensor and shard file names are cut in the middle to fit.
  shrink <- names(x) %in% c("name", "file")
  lines <- c(
    head, if (!is.null(origin)) paste("# From", describe_origin(origin)),
    format_columns(names(x), cols, right, width = width, shrink = shrink)
  )
  if (rows > n) {
    lines <- c(lines, sprintf("# ... and %d more tensor%s", rows - n, if (rows - n == 1) "" else "s"))
  }
  lines
}

#' @export
print.safetensors_info <- function(x, ..., n = 20) {
  if (!info_complete(x)) {
    return(NextMethod())
  }
  cat(format(x, ..., n = n), sep = "\n")
  invisible(x)
}

info_complete <- function(x) {
  all(c("name", "dtype", "shape", "bytes") %in% names(x)) && is.list(x$shape)
}

#' @rdname safe_info
#' @export
safe_metadata <- function(path, ...) {
  check_required(path)
  check_dots_empty(...)
  with_header(path, function(h) hget(h, "metadata"))
}

# Calls `fun` on a handle-like view of `path`'s header: `path` itself if it
# is a handle, else a closed-over header that reads no tensor data.
with_header <- function(path, fun, call = parent.frame()) {
  if (inherits(path, "safetensors_file")) {
    if (!handle_is_open(path)) {
      st_abort("closed", "Can't read {format_label(path)}: the handle is closed.", call = call)
    }
    return(fun(path))
  }
  if (is_hf_path(path)) {
    return(hf_read(path, whole = FALSE, function(path, origin) {
      with_header(path, function(h) fun(structure(h, origin = origin)), call = call)
    }, mark = FALSE, call = call))
  }
  if (retry_reads(path)) {
    return(read_checkpoint(path, environment(), call = call))
  }
  path <- resolve_folder(path, call = call)
  if (is_index_path(path)) {
    h <- safe_open(path, backend = "read")
    on.exit(close(h), add = TRUE)
    return(fun(h))
  }
  if (inherits(path, "connection")) {
    part <- list(ptr = NULL, label = source_label(path), info = NULL)
    part$info <- check_part(info_header_(read_header_bytes(path, part, call)), part, call = call)
  } else if (is.character(path) || is.raw(path)) {
    part <- open_part(path, "read", verb = "read", call = call)
    on.exit(close_part(part), add = TRUE)
  } else {
    st_abort(
      "invalid_argument",
      "{.arg path} must be a file path, a raw vector, a connection or a handle, not {.obj_type_friendly {path}}.",
      call = call
    )
  }
  info <- part$info
  label <- part$label
  fun(new_handle(list(part), info$name, rep(1L, length(info$name)), "r", list(), "read",
    label = label, metadata = info$metadata, kind = "memory"
  ))
}

#' Summarise the tensors of a safetensors file
#'
#' `safe_summary()` counts the parameters (tensor elements) and bytes of a
#' file, in total, by dtype and by module, reading the header only. A
#' tensor's module is the start of its name: with `depth = 1` (the
#' default), the part before the first `"."`, so `"encoder.layer.0.weight"`
#' belongs to `"encoder"`; a name with fewer parts is its own module.
#' `summary()` of a handle from [safe_open()] gives the same.
#'
#' @param path A path to a `.safetensors` file or a shard index, an
#'   `http://` or `https://` URL of either (only the header is fetched), a
#'   folder holding a checkpoint (see "Folders" in [safe_load_file()]), a
#'   Hugging Face Hub path `hf://owner/name/...` (see [safetensors-hub]), a
#'   raw vector holding a file, a binary connection, or a handle from
#'   [safe_open()].
#' @param depth How many leading parts of a tensor's name, split at `"."`,
#'   make its module. Default 1.
#' @param object A handle from [safe_open()].
#' @param ... For `safe_summary()`, must be empty (an argument there is an
#'   error of class `safetensors_error_invalid_argument` naming it); for
#'   `summary()`, unused.
#' @return An object of class `safetensors_summary`: a list with `label`
#'   (the file), `tensors`, `parameters` and `bytes` (totals), `by_dtype`
#'   and `by_module` (data frames with columns `dtype` or `module`,
#'   `tensors`, `parameters` and `bytes`; dtypes by decreasing size, modules
#'   in order of first appearance in the file), `metadata` (as
#'   [safe_metadata()] returns it), and `origin` (for an `hf://` path, where
#'   it came from, see [safetensors-hub]; else `NULL`). It prints as a short
#'   report.
#' @seealso [safe_info()] for one row per tensor.
#' @export
#' @examples
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' safe_summary(path)
#'
#' # A model with modules
#' f <- tempfile(fileext = ".safetensors")
#' safe_save_file(list(
#'   encoder.layer.weight = matrix(0, 4, 4),
#'   encoder.layer.bias = numeric(4),
#'   decoder.weight = matrix(0L, 4, 2),
#'   steps = 1L
#' ), f, dtype = c(encoder.layer.weight = "F16"))
#' s <- safe_summary(f)
#' s
#' s$by_module
#' safe_summary(f, depth = 2)$by_module$module
#' unlink(f)
safe_summary <- function(path, depth = 1, ...) {
  check_required(path)
  check_dots_empty(...)
  if (!(is.numeric(depth) && length(depth) == 1 && !is.na(depth) && depth >= 1 && depth == trunc(depth))) {
    st_abort("invalid_argument", "{.arg depth} must be a whole number of at least 1, not {value_friendly(depth)}.")
  }
  res <- with_header(path, function(h) {
    list(tab = handle_table(h), label = hget(h, "label"), metadata = hget(h, "metadata"), origin = attr(h, "origin"))
  })
  tab <- res$tab
  module <- module_of(tab$name, depth)
  count_by <- function(key, order) {
    groups <- unique(key)
    at <- match(key, groups)
    df <- data.frame(
      key = groups,
      tensors = tabulate(at, length(groups)),
      parameters = vapply(seq_along(groups), function(g) sum(tab$numel[at == g]), numeric(1)),
      bytes = vapply(seq_along(groups), function(g) sum(tab$bytes[at == g]), numeric(1)),
      stringsAsFactors = FALSE
    )
    if (order) {
      df <- df[order(-df$bytes, df$key), , drop = FALSE]
      rownames(df) <- NULL
    }
    df
  }
  by_dtype <- count_by(tab$dtype, order = TRUE)
  names(by_dtype)[1] <- "dtype"
  by_module <- count_by(module, order = FALSE)
  names(by_module)[1] <- "module"
  structure(
    list(
      label = res$label,
      tensors = length(tab$name),
      parameters = sum(tab$numel),
      bytes = sum(tab$bytes),
      by_dtype = by_dtype,
      by_module = by_module,
      depth = depth,
      metadata = res$metadata,
      origin = res$origin
    ),
    class = "safetensors_summary"
  )
}

#' @rdname safe_summary
#' @export
summary.safetensors_file <- function(object, depth = 1, ...) {
  safe_summary(object, depth = depth)
}

# The first `depth` parts of each name, split at ".".
module_of <- function(names, depth) {
  parts <- strsplit(names, ".", fixed = TRUE)
  vapply(seq_along(names), function(i) {
    p <- parts[[i]]
    if (length(p) <= depth) names[[i]] else paste(p[seq_len(depth)], collapse = ".")
  }, character(1))
}

#' @export
format.safetensors_summary <- function(x, ..., n = 20, width = getOption("width", 80)) {
  plural <- function(k, what) sprintf("%s %s%s", format_count(k), what, if (k == 1) "" else "s")
  table <- function(df, key) {
    shown <- df[seq_len(min(n, nrow(df))), , drop = FALSE]
    lines <- format_columns(
      c(key, "tensors", "parameters", "size"),
      list(
        encodeString(shown[[1]]),
        format(shown$tensors),
        vapply(shown$parameters, format_count, character(1)),
        vapply(shown$bytes, format_bytes, character(1))
      ),
      right = c(FALSE, TRUE, TRUE, TRUE),
      width = width,
      shrink = c(TRUE, FALSE, FALSE, FALSE)
    )
    if (nrow(df) > n) {
      lines <- c(lines, sprintf("  # ... and %d more", nrow(df) - n))
    }
    lines
  }
  label <- if (x$label %in% c("<raw vector>", "<connection>")) x$label else basename(x$label)
  label <- truncate_middle(label, max(12, width - nchar("<safetensors_summary> ")))
  lines <- c(
    paste0("<safetensors_summary> ", label),
    if (!is.null(x$origin)) paste("From", describe_origin(x$origin)),
    sprintf(
      "%s, %s, %s",
      plural(x$tensors, "tensor"), plural(x$parameters, "parameter"), format_bytes(x$bytes)
    )
  )
  if (x$tensors > 0) {
    what <- if (x$depth == 1) "module (name before the first \".\")" else sprintf("module (first %d parts of the name)", x$depth)
    lines <- c(
      lines,
      "", "By dtype:", table(x$by_dtype, "dtype"),
      "", paste0("By ", what, ":"), table(x$by_module, "module")
    )
  }
  if (length(x$metadata) > 0) {
    lines <- c(lines, "", "Metadata:", format_metadata(x$metadata, width))
  }
  lines
}

#' @export
print.safetensors_summary <- function(x, ..., n = 20) {
  cat(format(x, ..., n = n), sep = "\n")
  invisible(x)
}
