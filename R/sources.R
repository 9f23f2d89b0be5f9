# Sources: what a reading function was given (a file path, a URL, a shard
# index's path or URL, a raw vector or a connection), opened as a "part" (a
# handle of the Rust core, src/rust/src/sources.rs, with its header facts),
# the label that names it in messages, reading the bytes of connections,
# and reading remote files (over HTTP, R/http.R): R fetches the bytes a
# read needs, which the core names, and the core reads them.

# Whether `path` names a shard index rather than a safetensors file.
is_index_path <- function(path) {
  if (is_url(path)) {
    path <- sub("[?#].*$", "", path)
  }
  is_string(path) && grepl("\\.json$", path, ignore.case = TRUE)
}

# The file a checkpoint path stands for. A folder: its checkpoint
# (checkpoint_in()), a single file taking precedence over its index, as in
# transformers, which is what makes each save's commit one step (see
# ?safe_save_file); a folder with none, or with several candidates and none
# of the usual names, is an error that names them. A file path that does
# not exist: the index beside it (`path` followed by ".index.json"), which a
# sharded save to `path` writes, following a symbolic link that dangles (a
# sharded save through a link writes beside the file it named). Any other
# `path` (URLs, hf:// paths, raw vectors, connections) is returned as it is.
resolve_folder <- function(path, call = parent.frame()) {
  if (!is_string(path) || is_url(path) || is_hf_path(path)) {
    return(path)
  }
  if (!dir.exists(path)) {
    if (file.exists(path) || is_index_path(path)) {
      return(path)
    }
    index <- paste0(link_target(path), ".index.json")
    return(if (file.exists(index)) index else path)
  }
  files <- list.files(path)
  files <- files[!dir.exists(file.path(path, files))]
  found <- checkpoint_in(files)
  if (!is.null(found)) {
    single <- sub("\\.index\\.json$", "", found)
    return(file.path(path, if (single %in% files) single else found))
  }
  indexes <- grep("\\.safetensors\\.index\\.json$", files, value = TRUE)
  files <- grep("\\.safetensors$", files, value = TRUE)
  rule <- paste(
    "A folder is read from its {.file model.safetensors}, else its {.file model.safetensors.index.json}",
    "or its only shard index, else its only {.file .safetensors} file",
    "(diffusers' {.file diffusion_pytorch_model} names too)."
  )
  if (length(indexes) == 0 && length(files) == 0) {
    st_abort(
      "file_not_found",
      c("Can't read the folder {.file {path}}: it holds no {.file .safetensors} file and no shard index.", i = rule),
      call = call
    )
  }
  # Several candidates and none of the usual names: the user chooses.
  head <- if (length(indexes) > 1) {
    shown <- indexes
    "it holds {length(shown)} shard indexes, none named {.file model.safetensors.index.json}."
  } else {
    shown <- files
    "it holds {length(shown)} {.file .safetensors} files, none named {.file model.safetensors}, and no shard index."
  }
  st_abort(
    "file_not_found",
    c(
      paste("Can't read the folder {.file {path}}:", head),
      x = "{cli::qty(length(shown))}{?It/They} {?is/are} {.file {shown}}.",
      i = "Give the path of the one to read, such as {.file {file.path(path, shown[[1]])}}.",
      i = rule
    ),
    call = call
  )
}

# The checkpoint among the names of a folder's `files`, as transformers
# looks for one: model.safetensors (or diffusers'
# diffusion_pytorch_model.safetensors), else the shard index
# model.safetensors.index.json (or diffusion_pytorch_model's), else the
# only *.safetensors.index.json, else, when there is no index, the only
# *.safetensors; NULL if none of these.
checkpoint_in <- function(files) {
  first <- function(x) if (length(x) > 0) x[[1]]
  indexes <- grep("\\.safetensors\\.index\\.json$", files, value = TRUE)
  singles <- grep("\\.safetensors$", files, value = TRUE)
  first(intersect(c("model.safetensors", "diffusion_pytorch_model.safetensors"), files)) %||%
    first(intersect(c("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json"), files)) %||%
    (if (length(indexes) == 1) indexes) %||%
    (if (length(indexes) == 0 && length(singles) == 1) singles)
}

# `path` with its symbolic links followed to the file they name (which may
# not exist); `path` itself when it is no link.
link_target <- function(path) {
  for (i in 1:40) {
    to <- Sys.readlink(path)
    if (is.na(to) || !nzchar(to)) {
      return(path)
    }
    path <- if (grepl("^(/|[A-Za-z]:)", to)) to else file.path(dirname(path), to)
  }
  path
}

# A path as the Rust core takes it: `~` expanded, in UTF-8.
core_path <- function(path, call = parent.frame()) {
  utf8_strings(path.expand(path), "path", call)
}

# What a source is called in handles and summaries: the path as given (a
# URL with its credentials redacted), "<raw vector>" or "<connection>".
source_label <- function(path) {
  if (is_url(path)) url_redact(path) else if (is.character(path)) path else if (is.raw(path)) "<raw vector>" else "<connection>"
}

# What a source is called in messages.
describe_source <- function(path) {
  if (is.character(path)) {
    format_file(source_label(path))
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

# The choices of `backend`, the default first (see "Backends" in
# ?safe_load_file).
backends <- c("auto", "mmap", "read")

# The backend a file is read with for `framework`: "auto" chooses per
# target. R arrays (framework "r") and raw vectors ("raw") are filled by
# the core, which reads a file as fast with positioned reads as through a
# map or faster (1 GiB of U8 into a raw vector in fresh processes: 0.25-0.26
# s against 0.27-0.30 s from the map, 0.4.0's positioned reads 0.25 s) and
# holds less memory so: on two threads, the map's pages the kernel maps
# beside each block (fault-around, large folios) were let go of too late,
# 150-300 MiB more at the peak for 1 GiB. So "auto" is "read" for them.
# Framework tensors get the core's "auto": a map for a local file (torch
# copies the tensors it converts from views of it; those it takes as stored
# are read with positioned reads whatever the backend), positioned reads on
# a network file system.
read_backend <- function(backend, framework) {
  if (identical(backend, "auto") && framework %in% c("r", "raw")) "read" else backend
}

# Opens one file (or URL, raw vector, or connection) as a part of a
# handle: `list(ptr, label, info)`, `info` the header facts
# (handle_info_()); a remote part also has `url`, `cache` (where it
# redirects to) and, when its server ignores ranges, `stream` (see
# open_remote()). `verb` heads the message of
# an error while opening; `whole` says that all of the file will be read.
# A connection is opened as its file when it is one (open_connection()),
# else read into memory.
open_part <- function(path, backend, verb = "open", whole = FALSE, call = parent.frame()) {
  if (is_url(path)) {
    return(open_remote(path, verb, whole, call = call))
  }
  if (inherits(path, "connection")) {
    if (con_open(path, "rb", call)) {
      on.exit(close(path), add = TRUE)
    }
    return(open_connection(path, backend, verb, call = call))
  }
  ptr <- if (is.character(path)) {
    check_string(path, call = call)
    open_file_(core_path(path, call), backend, 0)
  } else if (is.raw(path)) {
    open_raw_(path)
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

# How a part is read: "mmap" or "read" for a file (what "auto" chose),
# "memory" for a raw vector (or a small remote file held whole), "remote"
# for a file over HTTP.
part_kind <- function(part) {
  check_part(handle_backend_(part$ptr), part)
}

# Closes a part: its file or buffer, and a remote part's stream.
close_part <- function(part) {
  close_(part$ptr)
  if (!is.null(part$stream)) {
    http_close(part$stream)
  }
  invisible()
}

# Whether `part` is a remote file whose bytes are fetched for each read.
part_is_remote <- function(part) {
  !is.null(part$url) && is.null(part$memory)
}

# ---- remote files -------------------------------------------------------------

# Bytes asked for first: the header of most files (the length, then the
# JSON) fits, so one request reads it; a longer header takes a second.
remote_probe <- 64 * 1024
# Bytes of a remote read held at a time: a fetch is read in pieces of at
# most this size (rows of a larger tensor), each read into the result
# before the next arrives.
remote_piece <- 16 * 1024^2

# Opens the file at `url` as a part, reading its header in one or two
# range requests (at most the header plus 64 KiB): the first asks for the
# first 64 KiB, the second for the rest of a longer header. The header is
# validated against the file's length as a local file's is. A file that
# fits in the first answer is kept in memory (`memory = TRUE`) and needs
# no more requests. A server that ignores ranges (HTTP 200) is an error,
# unless `whole`: then the part keeps the response open as its `stream`,
# after the header, and reads the rest in file order (remote_bytes()).
#
# A transfer that fails while the first bytes arrive (a dropped
# connection) is tried again from the start, with backoff, up to
# `safetensors.http_retries` times, as later reads are; the requests' own
# retries count against the same budget.
open_remote <- function(url, verb = "open", whole = FALSE, call = parent.frame()) {
  check_curl(call = call)
  retries <- http_retries(call)
  failures <- http_failures()
  repeat {
    part <- tryCatch(
      open_remote_once(url, verb, whole, failures, call),
      safetensors_error_http = function(e) if (isTRUE(e$dropped) && failures$n < retries) e else stop(e)
    )
    if (!inherits(part, "error")) {
      return(part)
    }
    failures$n <- failures$n + 1
    Sys.sleep(http_backoff(failures$n))
  }
}

# One try of open_remote().
open_remote_once <- function(url, verb, whole, failures, call) {
  # Where the URL redirects to, for the requests that follow.
  cache <- new.env(parent = emptyenv())
  part <- list(ptr = NULL, label = url_redact(url), info = NULL, url = url, cache = cache)
  resp <- http_open(url, c(0, remote_probe - 1), accept = c(200, 206, 416), cache = cache, failures = failures, call = call)
  keep <- FALSE
  on.exit(if (!keep) http_close(resp), add = TRUE)
  if (resp$status == 416) {
    # Nothing to serve: an empty file, which fails as an empty file does.
    if (!identical(resp$total, 0)) {
      http_status_abort(url, 416, call = call)
    }
    ptr <- open_raw_(raw())
    part$memory <- TRUE
  } else if (resp$status == 200) {
    if (!whole) {
      http_no_range_abort(url, call)
    }
    if (is.na(resp$length)) {
      http_abort(url, 200, "The server ignores range requests and does not say how long the file is.", call = call)
    }
    prefix <- remote_read_exact(resp, min(8, resp$length), url, call)
    n <- check_part(header_len_(prefix), part, verb, call = call)
    prefix <- c(prefix, remote_read_exact(resp, min(n, resp$length - 8), url, call))
    ptr <- open_remote_(prefix, resp$length)
    resp$pos <- length(prefix)
    part$stream <- resp
    keep <- TRUE
  } else {
    size <- http_check_range(resp, 0, remote_probe - 1, NA, url, call)
    prefix <- remote_read_exact(resp, size, url, call)
    if (!http_at_end(resp)) {
      http_format_abort(url, "incomplete_buffer", sprintf("The server sent more than the %s bytes of the range 0-%s.", fmt_num(size), fmt_num(size - 1)), call)
    }
    http_close(resp)
    total <- resp$total
    if (length(prefix) >= total) {
      ptr <- open_raw_(prefix)
      part$memory <- TRUE
    } else {
      # Reads of the bytes it holds past the header need no request.
      part$prefix <- prefix
      n <- check_part(header_len_(prefix), part, verb, call = call)
      if (8 + n > length(prefix) && 8 + n <= total) {
        prefix <- c(prefix, http_fetch(url, length(prefix), 8 + n - 1, total = total, cache = cache, call = call))
      }
      ptr <- open_remote_(prefix, total)
    }
  }
  part$ptr <- check_part(ptr, part, verb, call = call)
  part$info <- check_part(handle_info_(part$ptr), part, call = call)
  part
}

# `n` bytes of a response's body; a shorter body is an error as a truncated
# file's is, a failed transfer an HTTP error (with field `dropped = TRUE`).
remote_read_exact <- function(resp, n, url, call) {
  bytes <- http_read(resp, n)
  if (is.character(bytes)) {
    http_abort(url, NA, bytes, call = call, dropped = TRUE)
  }
  if (length(bytes) < n) {
    http_format_abort(url, "incomplete_buffer", sprintf("The server sent %d of the %s bytes asked for.", length(bytes), fmt_num(n)), call)
  }
  bytes
}

# Reads bytes `from` to `from + n - 1` of a remote part, in pieces of
# `sizes` bytes passed to `fun(k, bytes)` in turn: those of the first
# answer (`part$prefix`, the first 64 KiB) from it, the rest with one range
# request; or from the part's stream (which must not be past `from`; bytes
# before it are skipped).
remote_bytes <- function(part, from, n, sizes, fun, call) {
  stream <- part$stream
  if (is.null(stream)) {
    prefix <- part$prefix
    have <- length(prefix)
    k <- 1L
    pos <- from
    while (k <= length(sizes) && pos + sizes[[k]] <= have) {
      fun(k, prefix[seq(pos + 1, length.out = sizes[[k]])])
      pos <- pos + sizes[[k]]
      k <- k + 1L
    }
    if (k > length(sizes)) {
      return(invisible())
    }
    rest <- sizes[k:length(sizes)]
    head <- NULL
    if (pos < have) {
      # A piece that starts in the prefix and ends after it.
      head <- prefix[(pos + 1):have]
      rest[[1]] <- rest[[1]] - length(head)
      pos <- have
    }
    deliver <- function(i, bytes) {
      if (i == 1L && !is.null(head)) {
        bytes <- c(head, bytes)
      }
      fun(k - 1L + i, bytes)
    }
    return(http_stream(part$url, pos, from + n - 1, rest, deliver, total = part$info$file_len, cache = part$cache, call = call))
  }
  if (from < stream$pos) {
    http_abort(part$url, 200, "The server ignores range requests, so the file can only be read in order.", call = call)
  }
  while (stream$pos < from) {
    skip <- min(from - stream$pos, remote_piece)
    remote_read_exact(stream, skip, part$url, call)
    stream$pos <- stream$pos + skip
  }
  for (k in seq_along(sizes)) {
    bytes <- remote_read_exact(stream, sizes[[k]], part$url, call)
    stream$pos <- stream$pos + sizes[[k]]
    fun(k, bytes)
  }
  invisible()
}

# Reads tensors `names` of a remote part as handle_read_() does: the core
# allocates them and names the byte ranges to fetch (one request per run of
# adjacent tensors), which arrive in pieces of at most `remote_piece`
# bytes, each read into the tensors before the next is fetched. A cli
# progress `bar` moves with each piece.
remote_read <- function(part, names, mode, threads, call, bar = NULL) {
  plan <- check_part(remote_plan_(part$ptr, names, mode, remote_piece), part, call = call)
  done <- 0L
  for (f in seq_along(plan$offset)) {
    sizes <- plan$pieces[[f]]
    remote_bytes(part, plan$offset[[f]], plan$length[[f]], sizes, function(k, bytes) {
      check_part(remote_feed_(plan$loader, done + k, bytes, threads), part, call = call)
      if (!is.null(bar)) {
        cli::cli_progress_update(inc = length(bytes), id = bar)
      }
    }, call = call)
    done <- done + length(sizes)
  }
  check_part(remote_finish_(plan$loader), part, call = call)
}

# The bytes a read of a remote part needs, given as `list(offset, length)`
# (absolute byte ranges, from the core), fetched one request each (none for
# those in the prefix), as the segments the core reads them from:
# `list(offsets, raw vectors)`.
remote_segments <- function(part, ranges, call) {
  raws <- vector("list", length(ranges$offset))
  for (i in seq_along(raws)) {
    remote_bytes(part, ranges$offset[[i]], ranges$length[[i]], ranges$length[[i]], function(k, bytes) {
      raws[[i]] <<- bytes
    }, call = call)
  }
  list(ranges$offset, raws)
}

# ---- connections ------------------------------------------------------------

# Opens connection `con` for reading (`mode = "rb"`) or writing (`"wb"`)
# when it is not open, and returns whether it did (the caller then closes
# it). A connection that can't be used is a classed error before anything
# is read or written: `safetensors_error_closed` for one closed already (an
# invalid connection), `safetensors_error_invalid_argument` for one open in
# text mode or for the other direction, `safetensors_error_io` for one that
# can't be opened; R's own condition is kept as `parent`.
con_open <- function(con, mode, call) {
  verb <- if (mode == "rb") "read" else "write"
  open <- tryCatch(isOpen(con), error = function(e) e)
  if (inherits(open, "error")) {
    st_abort(
      "closed",
      c(sprintf("Can't %s the connection.", verb), x = "It is closed: it is no longer a valid connection."),
      parent = open,
      call = call
    )
  }
  if (!open) {
    con_io(open(con, mode), verb, call)
    return(TRUE)
  }
  about <- summary(con)
  if (identical(about$text, "text")) {
    st_abort(
      "invalid_argument",
      c(
        sprintf("Can't %s the connection.", verb),
        x = "It is open in text mode ({.val {about$mode}}); a safetensors file is binary.",
        i = "Open it with {.code open(con, \"{mode}\")}, or pass it unopened."
      ),
      call = call
    )
  }
  if (!identical(about[[paste("can", verb)]], "yes")) {
    st_abort(
      "invalid_argument",
      c(
        sprintf("Can't %s the connection.", verb),
        x = "It is open for {if (verb == 'read') 'writing' else 'reading'} only ({.val {about$mode}})."
      ),
      call = call
    )
  }
  FALSE
}

# The value of `expr`, an operation on a connection that reads (`verb =
# "read"`) or writes; an error it gives, or a warning (R warns, for
# example, of a file it can't open before it fails, or of corrupt
# compressed data), is an error of class `safetensors_error_io`, with R's
# condition as `parent` (which the message shows).
con_io <- function(expr, verb, call) {
  fail <- function(cnd) {
    st_abort("io", sprintf("Can't %s the connection.", verb), parent = cnd, call = call)
  }
  withCallingHandlers(tryCatch(expr, error = fail), warning = fail)
}

# Up to `n` bytes of connection `con` (see con_io()).
con_read <- function(con, n, call) {
  con_io(readBin(con, "raw", n), "read", call)
}

# Reads the header length and the header from a connection, nothing more.
read_header_bytes <- function(con, part, call) {
  if (con_open(con, "rb", call)) {
    on.exit(close(con), add = TRUE)
  }
  prefix <- con_read(con, 8L, call)
  n <- check_part(header_len_(prefix), part, call = call)
  json <- con_read(con, n, call)
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

# Opens the open connection `con` as a part, reading its header through
# it. A connection that is a file (connection_file()) is opened as that
# file from the connection's position (read through the same engine as a
# path, with `backend`), and left positioned just after the data; any
# other is read into memory to its end (read_connection()). With `stream`,
# such a connection is not read further: the part is `list(label, info,
# prefix)` (no `ptr`), and the caller reads the data from `con`.
open_connection <- function(con, backend, verb = "open", stream = FALSE, call = parent.frame()) {
  part <- list(ptr = NULL, label = "<connection>", info = NULL)
  prefix <- read_header_bytes(con, part, call)
  info <- check_part(info_header_(prefix), part, call = call)
  file <- connection_file(con, prefix, info$file_len)
  if (!is.null(file)) {
    part$ptr <- check_part(open_file_(core_path(file$path, call), backend, file$at), part, verb, call = call)
    part$info <- check_part(handle_info_(part$ptr), part, call = call)
    seek(con, file$at + info$file_len)
    return(part)
  }
  if (stream) {
    part$info <- info
    part$prefix <- prefix
    return(part)
  }
  part$ptr <- check_part(open_raw_(read_connection(con, prefix, info, call)), part, verb, call = call)
  part$info <- check_part(handle_info_(part$ptr), part, call = call)
  part
}

# Where the open connection `con` reads when it is a file: `list(path, at)`
# (the file's path and where the safetensors file starts in it), or NULL.
# It is one when it has class "file" (a compressed file opened with file()
# has class "gzfile" and the like), is open for binary reading and
# seekable, and the file at its description (a path, relative to the
# working directory when the connection was opened) has the size the
# connection sees, with the bytes just read through it (`prefix`, the
# header) at that position, followed by exactly the `file_len -
# length(prefix)` bytes of data the header describes. The connection is
# left where it was; any disagreement or failure is NULL (the connection is
# then read as a stream).
connection_file <- function(con, prefix, file_len) {
  about <- summary(con)
  path <- about$description
  if (!identical(about$class, "file") || !grepl("b", about$mode, fixed = TRUE) ||
    !identical(about[["can read"]], "yes") || !isSeekable(con) || path %in% c("", "stdin")) {
    return(NULL)
  }
  tryCatch(
    {
      here <- seek(con)
      at <- here - length(prefix)
      seek(con, 0, origin = "end")
      size <- seek(con, here, origin = "start")
      if (!isTRUE(at >= 0 && size == at + file_len && file_test("-f", path) && file.size(path) == size)) {
        return(NULL)
      }
      if (!identical(file_bytes(path, at, length(prefix)), prefix)) {
        return(NULL)
      }
      list(path = path, at = at)
    },
    error = function(e) NULL,
    warning = function(w) NULL
  )
}

# Where the open connection `con` writes when it is a file: `list(path,
# at)` (the file's path and the connection's position), or NULL. It is one
# when it has class "file", is open for binary writing and seekable, and,
# once its buffer is flushed, the file at its description is a regular file
# whose size is the connection's position (so writing there appends, as
# the connection would). The caller still checks that the bytes it writes
# through the connection show up in that file before writing it directly.
connection_file_write <- function(con) {
  about <- summary(con)
  path <- about$description
  if (!identical(about$class, "file") || !grepl("b", about$mode, fixed = TRUE) ||
    !identical(about[["can write"]], "yes") || !isSeekable(con) || path %in% c("", "stdout", "stderr")) {
    return(NULL)
  }
  tryCatch(
    {
      flush(con)
      at <- seek(con, rw = "write")
      if (!isTRUE(at >= 0 && file_test("-f", path) && file.size(path) == at)) {
        return(NULL)
      }
      list(path = path, at = at)
    },
    error = function(e) NULL,
    warning = function(w) NULL
  )
}

# `n` bytes of the file at `path` from byte `at` on (fewer at its end).
file_bytes <- function(path, at, n) {
  con <- file(path, "rb")
  on.exit(close(con), add = TRUE)
  seek(con, at)
  readBin(con, "raw", n)
}

# Reads the rest of one safetensors file from connection `con` (open),
# after its header `prefix` (whose facts are `info`, info_header_()): the
# data the header describes, which must end the connection. Sizes come from
# the header, so the whole file is read into a vector allocated once.
read_connection <- function(con, prefix, info, call = parent.frame()) {
  part <- list(label = "<connection>")
  data <- read_exact(con, info$file_len - length(prefix), part, NULL, call)
  check_stream_end(con, info, part, call)
  c(prefix, data)
}

# A connection must end where the tensors' data end, as a file must (the
# reference rejects data after them, such as a zip archive appended to make
# a polyglot file). The check never waits for more bytes (see
# stream_has_more()).
check_stream_end <- function(con, info, part, call) {
  if (con_io(stream_has_more(con), "read", call)) {
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
  out <- con_read(con, n, call)
  if (length(out) < n) {
    # A connection may return less than asked before its end.
    more <- list(out)
    got <- length(out)
    repeat {
      chunk <- con_read(con, n - got, call)
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
    chunk <- con_read(con, min(size, n - done), call)
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
