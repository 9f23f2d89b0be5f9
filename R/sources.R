# Sources: what a reading function was given (a file path, a shard index's
# path, a raw vector or a connection), opened as a "part" (a handle of the
# Rust core, src/rust/src/sources.rs, with its header facts), the label
# that names it in messages, and reading the bytes of connections.

# Whether `path` names a shard index rather than a safetensors file.
is_index_path <- function(path) {
  is_string(path) && grepl("\\.json$", path, ignore.case = TRUE)
}

# The file a folder stands for: its shard index (model.safetensors.index.json,
# or its only *.safetensors.index.json), else its model.safetensors (or its
# only *.safetensors file). Any other `path` is returned as it is.
resolve_folder <- function(path, call = parent.frame()) {
  if (!is_string(path) || !dir.exists(path)) {
    return(path)
  }
  pick <- function(usual, pattern) {
    if (file.exists(file.path(path, usual))) {
      return(file.path(path, usual))
    }
    found <- list.files(path, pattern = pattern)
    if (length(found) == 1) file.path(path, found)
  }
  found <- pick("model.safetensors.index.json", "\\.safetensors\\.index\\.json$") %||%
    pick("model.safetensors", "\\.safetensors$")
  if (is.null(found)) {
    st_abort(
      "file_not_found",
      c(
        "Can't read the folder {.file {path}}: it holds no checkpoint.",
        i = "A folder is read from its {.file model.safetensors.index.json} or its {.file model.safetensors}."
      ),
      call = call
    )
  }
  found
}

# A path as the Rust core takes it: `~` expanded, in UTF-8.
core_path <- function(path, call = parent.frame()) {
  utf8_strings(path.expand(path), "path", call)
}

# What a source is called in handles and summaries: the path as given,
# "<raw vector>" or "<connection>".
source_label <- function(path) {
  if (is.character(path)) path else if (is.raw(path)) "<raw vector>" else "<connection>"
}

# What a source is called in messages.
describe_source <- function(path) {
  if (is.character(path)) {
    format_file(path)
  } else if (is.raw(path)) {
    "the raw vector"
  } else {
    "the connection"
  }
}

# "Can't read 'path'." and the like, for a part's label.
source_what <- function(label, verb = "read") {
  src <- switch(label,
    "<raw vector>" = "the raw vector",
    "<connection>" = "the connection",
    describe_source(label)
  )
  sprintf("Can't %s %s.", verb, src)
}

# st_check() for a part, building the message only on error: cli formatting
# takes milliseconds, far longer than reading a small tensor.
check_part <- function(res, part, verb = "read", call = parent.frame()) {
  if (!inherits(res, "safetensors_rust_error")) {
    return(res)
  }
  st_check(res, source_what(part$label, verb), call = call)
}

# Opens one file (or raw vector, or connection) as a part of a handle:
# `list(ptr, label, info)`, `info` the header facts (handle_info_()).
# `verb` heads the message of an error while opening.
open_part <- function(path, backend, verb = "open", call = parent.frame()) {
  ptr <- if (is.character(path)) {
    check_string(path, call = call)
    open_file_(core_path(path, call), backend)
  } else if (is.raw(path)) {
    open_raw_(path)
  } else if (inherits(path, "connection")) {
    open_raw_(read_connection(path))
  } else {
    st_abort(
      "invalid_argument",
      "{.arg path} must be a file path, a raw vector or a connection, not {.obj_type_friendly {path}}.",
      call = call
    )
  }
  part <- list(ptr = NULL, label = source_label(path), info = NULL)
  part$ptr <- check_part(ptr, part, verb, call = call)
  part$info <- check_part(handle_info_(part$ptr), part, call = call)
  part
}

# ---- connections ------------------------------------------------------------

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

# Reads one safetensors file from a connection (opening it, binary, if
# needed) from its current position to its end: the header, then the data
# it describes, which must end the connection. Sizes come from the header,
# so the whole file is read into a vector allocated once.
read_connection <- function(con, call = parent.frame()) {
  if (!isOpen(con)) {
    open(con, "rb")
    on.exit(close(con), add = TRUE)
  }
  part <- list(label = "<connection>")
  prefix <- read_header_bytes(con, part, call)
  info <- check_part(info_header_(prefix), part, call = call)
  data <- read_exact(con, info$file_len - length(prefix), part, NULL, call)
  check_stream_end(con, info, part, call)
  c(prefix, data)
}

# A connection must end where the tensors' data end, as a file must (the
# reference rejects data after them, such as a zip archive appended to make
# a polyglot file). The check never waits for more bytes (see
# stream_has_more()).
check_stream_end <- function(con, info, part, call) {
  if (stream_has_more(con)) {
    st_abort(
      "incomplete_buffer",
      c(
        cli_escape(source_what(part$label)),
        x = "The connection holds more bytes after the {info$file_len - 8 - info$header_len} bytes of data its header describes."
      ),
      format = TRUE,
      call = call
    )
  }
}

# Whether connection `con` holds more bytes, looking only at what is there
# already: a writer that keeps a socket (or pipe) open after the file would
# make a read wait for it. A raw connection and a compressed file read one
# more byte; a file compares its position with its size; a socket reads one
# byte only if one (or its end) has arrived. Other connections (pipes,
# FIFOs, standard input, URLs, gzcon()) can't be asked without waiting and
# are not checked.
stream_has_more <- function(con) {
  about <- summary(con)
  path <- about$description
  switch(about$class,
    rawConnection = length(readBin(con, "raw", 1L)) > 0,
    sockconn = socketSelect(list(con), timeout = 0) && length(readBin(con, "raw", 1L)) > 0,
    # A FIFO or device has no size: not checked.
    gzfile = ,
    bzfile = ,
    xzfile = isTRUE(file.size(path) > 0) && length(readBin(con, "raw", 1L)) > 0,
    unz = length(readBin(con, "raw", 1L)) > 0,
    file = {
      pos <- if (isSeekable(con)) suppressWarnings(seek(con)) else NA
      size <- if (path %in% c("", "stdin")) NA else file.size(path)
      isTRUE(pos >= 0 && pos < size)
    },
    FALSE
  )
}

# `n` bytes from a connection, or an error if it ends first.
read_exact <- function(con, n, part, tensor, call) {
  out <- readBin(con, "raw", n)
  if (length(out) < n) {
    # A connection may return less than asked before its end.
    more <- list(out)
    got <- length(out)
    repeat {
      chunk <- readBin(con, "raw", n - got)
      if (length(chunk) == 0) break
      more[[length(more) + 1L]] <- chunk
      got <- got + length(chunk)
      if (got == n) break
    }
    if (got < n) {
      stream_ended(part, got, n, tensor, call)
    }
    out <- unlist(more, use.names = FALSE)
  }
  out
}

# Reads `n` bytes of a connection in chunks of at most `size` bytes, and
# calls `fill(chunk, offset)` with each unless `fill` is NULL (the bytes are
# skipped); an error if the connection ends first. The chunks are the only
# memory used.
read_chunks <- function(con, n, size, part, tensor, call, fill = NULL) {
  done <- 0
  while (done < n) {
    chunk <- readBin(con, "raw", min(size, n - done))
    if (length(chunk) == 0) {
      stream_ended(part, done, n, tensor, call)
    }
    if (!is.null(fill)) {
      fill(chunk, done)
    }
    done <- done + length(chunk)
  }
}

stream_ended <- function(part, got, n, tensor, call) {
  what <- if (is.null(tensor)) "data" else "bytes of tensor {.val {tensor}}"
  st_abort(
    "incomplete_buffer",
    c(cli_escape(source_what(part$label)), x = paste("The connection ended after {got} of the {n}", what, "bytes.")),
    tensor = tensor,
    format = TRUE,
    call = call
  )
}
