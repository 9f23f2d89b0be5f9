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
#' @param path A path to a `.safetensors` file or a shard index, a raw
#'   vector holding a file, a binary connection, or a handle from
#'   [safe_open()].
#' @return `safe_info()`: a data frame with one row per tensor in file
#'   order and columns `name`, `dtype`, `shape` (a list column of integer
#'   vectors, outermost dimension first; `integer(0)` for a scalar), `numel`
#'   (number of elements), `bytes`, and `begin` and `end`, the tensor's
#'   byte range as absolute 0-based offsets in the file (`end` exclusive), so
#'   `begin - 8 - header length` is the header's `data_offsets` value.
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
safe_info <- function(path) {
  res <- with_header(path, function(h) list(tab = handle_table(h), sharded = !is.null(hget(h, "index"))))
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
  df
}

#' @rdname safe_info
#' @export
safe_metadata <- function(path) {
  with_header(path, function(h) hget(h, "metadata"))
}

# Calls `fun` on a handle-like view of `path`'s header: `path` itself if it
# is a handle, else a closed-over header that reads no tensor data.
with_header <- function(path, fun, call = rlang::caller_env()) {
  if (inherits(path, "safetensors_file")) {
    if (!handle_is_open(path)) {
      st_abort("closed", "Can't read {format_label(path)}: the handle is closed.", call = call)
    }
    return(fun(path))
  }
  if (is_index_path(path)) {
    h <- safe_open(path, backend = "read")
    on.exit(close(h), add = TRUE)
    return(fun(h))
  }
  label <- if (is.character(path)) path else if (is.raw(path)) "<raw vector>" else "<connection>"
  part <- list(ptr = NULL, label = label, info = NULL)
  info <- if (is.character(path)) {
    check_string(path, call = call)
    info_file_(path.expand(path))
  } else if (is.raw(path)) {
    info_raw_(path)
  } else if (inherits(path, "connection")) {
    info_header_(read_header_bytes(path, part, call))
  } else {
    st_abort(
      "invalid_argument",
      "{.arg path} must be a file path, a raw vector, a connection or a handle, not {.obj_type_friendly {path}}.",
      call = call
    )
  }
  part$info <- check_part(info, part, call = call)
  fun(new_handle(list(part), info$name, rep(1L, length(info$name)), "r", list(), "read",
    label = label, metadata = info$metadata, kind = "memory"
  ))
}

# Reads the header length and the header from a connection, nothing more.
read_header_bytes <- function(con, part, call) {
  if (!isOpen(con)) {
    open(con, "rb")
    on.exit(close(con), add = TRUE)
  }
  prefix <- readBin(con, "raw", 8L)
  n <- check_part(header_len_(prefix), part, call = call)
  json <- readBin(con, "raw", n)
  if (length(json) < n) {
    st_abort(
      "invalid_header_length",
      c(cli_escape(source_what(part$label)), x = "The connection ended after {length(json)} of the {n} header bytes."),
      format = TRUE,
      call = call
    )
  }
  c(prefix, json)
}
