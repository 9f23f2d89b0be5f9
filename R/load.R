#' Load tensors from a safetensors file
#'
#' `safe_load_file()` reads the tensors of a `.safetensors` file, and
#' `safe_deserialize()` those of a file held in a raw vector. By default each
#' tensor becomes a plain R array (no torch needed); `framework = "torch"`
#' and other registered frameworks build their own tensor objects.
#'
#' With `framework = "r"` (the default), each dtype becomes:
#'
#' * F64, F32, F16, BF16 and every F8, F6 and F4 type: `double`;
#' * I8, I16, I32, U16: `integer`, except that an I32 tensor holding
#'   -2147483648 (`NA` in R integers) is returned as `double`, with a warning;
#' * U8: `integer`, or with `uint8 = "raw"` a `raw` array (R's raw type is
#'   exactly uint8: one byte per value instead of four, for images and
#'   packed quantized weights);
#' * U32: `double` (exact);
#' * I64, U64: `double`, with a warning of class
#'   `safetensors_warning_precision` when a value is beyond 2^53 and so not
#'   exactly representable; or as `int64` chooses (below);
#' * BOOL: `logical`;
#' * C64: `complex`.
#'
#' A tensor of shape `(d0, d1, ...)` becomes an array with
#' `dim = c(d0, d1, ...)`, and `x[i, j, ...]` equals Python's
#' `t[i - 1, j - 1, ...]`. A scalar (shape `[]`) becomes a vector of length
#' one without `dim`, with attribute `shape = integer(0)`. Each array keeps
#' the file's dtype in attribute `"dtype"`, so [safe_save_file()] writes it
#' back with the same dtype and bytes (raw arrays as U8, integer64
#' vectors exactly).
#'
#' @section 64-bit integers:
#' `int64` chooses what I64 and U64 tensors become:
#' * `"double"` (the default): doubles, exact up to 2^53 in magnitude, the
#'   others rounded with a warning (as above);
#' * `"integer64"`: the class of the bit64 package (a Suggested package,
#'   `install.packages("bit64")`; without it the error has class
#'   `safetensors_error_package_not_installed`), exact for every I64 value
#'   but -2^63, which is integer64's `NA`, and every U64 value up to
#'   2^63 - 1; larger U64 values become `NA`. Both give a warning of class
#'   `safetensors_warning_range`;
#' * `"character"`: exact decimal strings (`"-9223372036854775808"`,
#'   `"18446744073709551615"`), for any value.
#'
#' Either way the array keeps the file's dtype in attribute `"dtype"`.
#' [safe_save_file()] writes integer64 vectors back exactly, as I64 by
#' default (or the dtype of their `"dtype"` attribute: U64 for a loaded U64
#' tensor); `NA` can't be written. Character arrays can't be written: convert
#' them first, for example with `bit64::as.integer64()`.
#'
#' @param path A path to a `.safetensors` file, a path to a sharded
#'   checkpoint's index (a file name ending in `.json`, such as
#'   `model.safetensors.index.json`), an `http://` or `https://` URL of
#'   either, a folder holding a checkpoint (see "Folders"), a Hugging Face
#'   Hub path `hf://owner/name/...` (a file or a folder; read from the Hub
#'   cache, where a whole read stores it first: see [safetensors-hub]), a
#'   raw vector holding a whole file, or a binary
#'   connection (opened for reading, or not yet opened). A URL is read with HTTP range
#'   requests: the header, then (without `tensors`) the data in one request
#'   streamed into the result piece by piece, so that no second copy of the
#'   file is held; with `tensors`, one request per run of adjacent tensors
#'   asked for. A whole file is also read from a server that ignores range
#'   requests. See "Remote files" in [safe_open()]. A connection
#'   is read from its current position to its end (it need not be
#'   seekable), which must be where the tensor data its header describes
#'   end; with a framework other than `"r"` it is read tensor by tensor,
#'   never holding the whole file in memory. That nothing follows the data
#'   is checked without waiting: on a socket, among the bytes already
#'   arrived (a writer may keep it open); pipes, FIFOs, URLs and `gzcon()`
#'   connections are not checked.
#' @param buffer A raw vector holding a whole safetensors file.
#' @param ... Passed on to the framework's tensor constructor, for example
#'   `device = "cuda"` for torch. Must be empty for `framework = "r"` and
#'   `"raw"`.
#' @param framework What each tensor becomes: `"r"` (the default) for R
#'   arrays, `"raw"` for each tensor's bytes as a raw vector with `"dtype"`
#'   and `"shape"` attributes, or the name of a framework registered in
#'   [safetensors_frameworks], such as `"torch"`.
#' @param tensors Names of the tensors to read, in the order wanted. `NULL`
#'   (the default) reads all of them, in the order the header lists them. Only the bytes of the
#'   tensors asked for are read from the file.
#' @param backend How a file's bytes are reached: `"auto"` (the default),
#'   `"mmap"` or `"read"`; see "Backends". The same in [safe_open()] and
#'   [safe_load_model()].
#' @param int64 What I64 and U64 tensors become with `framework = "r"`:
#'   `"double"` (the default), `"integer64"` (bit64's class) or
#'   `"character"` (exact decimal strings). See "64-bit integers".
#' @param uint8 What U8 tensors become with `framework = "r"`: `"integer"`
#'   (the default) or `"raw"`, a raw array with the tensor's `dim`, one byte
#'   per value.
#' @section Backends:
#' `backend` chooses how the bytes of a file (or of the file a file
#' connection reads) are reached:
#' * `"auto"` (the default): the fastest for the file and what it is read
#'   into. R arrays and bytes (`framework = "r"` and `"raw"`) are read with
#'   positioned reads, which fill them as fast as a map or faster and hold
#'   less memory. Frameworks that copy tensors themselves
#'   (torch, [safe_load_model()]) get a memory map for a file on a local
#'   file system, positioned reads for a file on a network or FUSE file
#'   system (NFS, SMB/CIFS, 9p, sshfs and other FUSE file systems, Ceph,
#'   AFS, Lustre and the like on Linux; one not marked local on macOS; a
#'   network drive or share on Windows), where a map would fault page by
#'   page over the network and the file may change on another machine.
#' * `"mmap"`: a memory map, on any file system.
#' * `"read"`: positioned reads (`pread`) into the result, or, for a
#'   framework that copies tensors itself (torch), into a staging buffer
#'   that the next piece is read into on a helper thread while torch copies
#'   the current one.
#'
#' Whatever `backend`, tensors read into CPU torch tensors of their own
#' dtype (but BOOL and C64; new tensors, or a module's in
#' [safe_load_model()]) are read straight into them with positioned reads,
#' which fill memory faster than a copy from a map; the map serves the
#' tensors torch converts.
#'
#' Either way, the memory held is the result's: the pages of a map are let
#' go of as they are copied. Raw vectors are read where they are, and URLs
#' with HTTP range requests, whatever `backend`.
#'
#' A file that changes while it is read gives an error of class
#' `safetensors_error_file_changed`, never a crash or silently wrong values:
#' its size and modification time are checked before each read and after
#' each copy. A map is where this matters most: reading a page of a mapped
#' file that another process truncated raises a bus error (SIGBUS), which
#' would end R. The package guards every map it reads (on Linux and macOS;
#' Windows refuses to truncate a mapped file): such a page reads as zeros,
#' and the read that met it ends with that error. A file replaced by
#' renaming another over it (as [safe_save_file()] does) is not a change:
#' what was opened keeps reading the old file.
#'
#' @section Threads:
#' Large reads and writes are split between threads (each R vector is still
#' allocated once, by R's main thread). The number of threads is the option
#' `safetensors.threads`, by default the number of available cores but at
#' most 2; `options(safetensors.threads = 1)` turns threads off (see
#' [safetensors-package]).
#' @return A named list of tensors, in the order the header lists them (or the order of
#'   `tensors`), with two attributes as in safetensors 0.2.x: `"metadata"`,
#'   the parsed header (one `list(dtype, shape, data_offsets)` per tensor, and
#'   the file's `__metadata__` as a named list of strings), and
#'   `"max_offset"`, the file offset just past the last tensor read. Read
#'   from an `hf://` path, it also has attribute `"origin"`: the
#'   repository, revision, commit and file it came from (see
#'   [safetensors-hub]).
#'
#'   For a sharded checkpoint, the tensors of the index's weight map (shard
#'   by shard, in header order within each shard), with the tensors' header
#'   entries (offsets relative to their shard) and the first shard's
#'   `__metadata__` as `"metadata"`, and the largest such offset in any
#'   shard as `"max_offset"`.
#'
#'   The list has class `c("safetensors_tensors", "list")` only so that
#'   `print()` shows one line per tensor (name, dtype, shape and its first
#'   values; `print(x, n = )` sets how many tensors, 20 by default) and
#'   `print()` and `str()` sum up the `"metadata"` attribute in one line
#'   instead of printing the whole header; in every other way it is a plain
#'   named list (`x[1:2]`, `c()` and `lapply()` return plain lists, and
#'   `x$w` prints in full).
#' @section Folders:
#' A folder is read from its shard index `model.safetensors.index.json`,
#' else its only file ending in `.safetensors.index.json`, else its
#' `model.safetensors`, else (if it holds no index) its only `.safetensors`
#' file, whatever its name: a folder holding just `weights.safetensors` is
#' read from that file. A folder with several indexes or files and none of
#' the usual names, or with none, is an error of class
#' `safetensors_error_file_not_found` that lists them; give the path of the
#' one to read. Other files (configurations, tokenizers) are ignored.
#' @section Progress:
#' In an interactive session whose output can redraw it (a terminal,
#' RStudio), loading more than 64 MiB of tensors from a file or a URL shows
#' a progress bar over the bytes read (moving within a large tensor too)
#' once it has taken two seconds, and removes it when done; option
#' `safetensors.progress = FALSE` turns it off (see [safetensors-package]).
#' @seealso [safe_save_file()] to write files, [safe_serialize()] to write
#'   raw vectors, [safe_open()] to read tensors one at a time.
#' @export
#' @examples
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' x <- safe_load_file(path)
#' str(x)
#' x$weight[1, ]
#' attr(x, "metadata")[["__metadata__"]]
#'
#' # A file held in memory
#' safe_deserialize(readBin(path, "raw", file.size(path)))$bias
#'
#' # U8 tensors as raw arrays, one byte per value
#' img <- array(as.raw(0:23), c(2, 3, 4))
#' x <- safe_deserialize(safe_serialize(list(img = img)), uint8 = "raw")
#' x$img[2, 3, ]
#' @examplesIf rlang::is_installed("torch") && torch::torch_is_installed()
#'
#' # torch tensors, as safetensors 0.2.x returned them
#' w <- safe_load_file(path, framework = "torch", device = "cpu")$weight
#' w$dtype
#' w
safe_load_file <- function(path, ..., framework = "r", tensors = NULL, backend = c("auto", "mmap", "read"),
                           int64 = c("double", "integer64", "character"), uint8 = c("integer", "raw")) {
  check_required(path)
  if (retry_reads(path)) {
    return(read_checkpoint(path, environment()))
  }
  path <- resolve_folder(path)
  framework <- check_framework(framework)
  backend <- read_backend(arg_choice(backend, backends), framework)
  choices <- read_choices(int64, uint8, framework)
  tensors <- check_tensor_names(tensors)
  if (is_hf_path(path)) {
    return(hf_read(path, whole = is.null(tensors), function(path, origin) {
      safe_load_file(path, ..., framework = framework, tensors = tensors, backend = backend, int64 = int64, uint8 = uint8)
    }))
  }
  args <- list(...)
  if (is_index_path(path)) {
    return(load_index(path, tensors, framework, args, backend, choices))
  }
  if (inherits(path, "connection")) {
    return(load_connection(path, tensors, framework, args, backend, choices))
  }
  if (is_url(path) || !is.null(framework_hooks(framework))) {
    return(load_through_handle(path, tensors, framework, args, backend, choices))
  }
  if (is.character(path) && progress_enabled()) {
    check_string(path)
    size <- file.size(path.expand(path))
    if (!is.na(size) && progress_wanted(size)) {
      return(load_through_handle(path, tensors, framework, args, backend, choices))
    }
  }
  mode <- read_mode(framework, choices$int64, choices$uint8)
  res <- if (is.character(path)) {
    check_string(path)
    load_file_(core_path(path), 0, tensors, mode, backend, st_threads())
  } else if (is.raw(path)) {
    load_raw_(path, tensors, mode, st_threads())
  } else {
    st_abort(
      "invalid_argument",
      "{.arg path} must be a file path, a raw vector or a connection, not {.obj_type_friendly {path}}."
    )
  }
  # The message is built only on error (cli formatting takes milliseconds).
  finish_load(st_check(res, sprintf("Can't read %s.", describe_source(path))), framework, args)
}

# safe_load_file() for an index: the tensors asked for (all by default), with
# the combined header as the "metadata" attribute.
load_index <- function(path, tensors, framework, args, backend, choices = NULL, call = parent.frame()) {
  h <- open_index(path, framework, args, backend, whole = is.null(tensors), choices = choices, call = call)
  on.exit(close(h), add = TRUE)
  load_handle(h, tensors, framework, args, call = call)
}

#' @rdname safe_load_file
#' @export
safe_deserialize <- function(buffer, ..., framework = "r", tensors = NULL,
                             int64 = c("double", "integer64", "character"), uint8 = c("integer", "raw")) {
  check_required(buffer)
  if (!is.raw(buffer)) {
    st_abort("invalid_argument", "{.arg buffer} must be a raw vector, not {.obj_type_friendly {buffer}}.")
  }
  framework <- check_framework(framework)
  choices <- read_choices(int64, uint8, framework)
  tensors <- check_tensor_names(tensors)
  if (!is.null(framework_hooks(framework))) {
    return(load_through_handle(buffer, tensors, framework, list(...), "auto"))
  }
  mode <- read_mode(framework, choices$int64, choices$uint8)
  res <- st_check(load_raw_(buffer, tensors, mode, st_threads()), "Can't read the raw vector.")
  finish_load(res, framework, list(...))
}

# `tensors` checked, in UTF-8 (as the core compares names).
check_tensor_names <- function(tensors, call = parent.frame()) {
  if (!is.null(tensors) && !(is.character(tensors) && !anyNA(tensors))) {
    st_abort(
      "invalid_argument",
      "{.arg tensors} must be a character vector of tensor names or `NULL`, not {value_friendly(tensors)}.",
      call = call
    )
  }
  if (is.null(tensors)) {
    return(NULL)
  }
  tensors <- utf8_strings(tensors, "tensor name", call)
  # The result could not be saved back, or indexed by name.
  check_unique(tensors, "invalid_argument", "{.arg tensors} must name each tensor once.", call)
  tensors
}

# safe_load_file() for a connection (opened, binary, if it is not, and
# closed again). A connection that is a file is read through the same
# engine as its path, and left positioned after the data (open_connection());
# another is read to its end: into memory for framework "r" and "raw",
# tensor by tensor into the framework's tensors for the others
# (load_stream()), never holding the whole file in memory.
load_connection <- function(con, tensors, framework, args, backend, choices, call = parent.frame()) {
  if (con_open(con, "rb", call)) {
    on.exit(close(con), add = TRUE)
  }
  part <- open_connection(con, backend, verb = "read", stream = framework != "r", call = call)
  if (is.null(part$ptr)) {
    return(load_stream(con, part, tensors, framework, args, call = call))
  }
  h <- new_handle(list(part), part$info$name, rep(1L, length(part$info$name)), framework, args, backend,
    label = part$label, metadata = part$info$metadata, kind = part_kind(part), choices = choices
  )
  on.exit(close(h), add = TRUE)
  load_handle(h, tensors, framework, args, call = call)
}

# safe_load_file() for a connection that is not a file and a framework
# other than "r": the header was read (`part`, open_connection()); reads
# each tensor in data order, straight into its framework tensor (with no
# copy of the whole file in memory), skipping those not asked for, then
# checks that the connection ends there.
load_stream <- function(con, part, tensors, framework, args, call = parent.frame()) {
  check_framework_args(framework, args, call = call)
  info <- part$info
  wanted <- tensors %||% info$name
  absent <- wanted[!wanted %in% info$name]
  if (length(absent) > 0) {
    st_abort(
      "tensor_not_found",
      c(cli_escape(source_what(part$label)), x = "Tensor {.val {absent[[1]]}} is not in the file."),
      tensor = absent[[1]],
      call = call
    )
  }
  hooks <- framework_hooks(framework)
  if (!is.null(hooks)) {
    check_framework_dtypes(info$dtype[match(wanted, info$name)], wanted, hooks$dtypes, framework, call = call)
    if (is.function(hooks$setup)) {
      hooks$setup(environment())
    }
  } else if (framework != "raw") {
    constructor <- safetensors_frameworks[[framework]]$constructor
  }
  start <- 8 + info$header_len
  out <- vector("list", length(wanted))
  max_offset <- 0
  # The bytes come in the order of the data section, whatever order the
  # header lists the tensors in.
  for (i in order(info$begin, info$end)) {
    nm <- info$name[[i]]
    nbytes <- info$end[[i]] - info$begin[[i]]
    k <- which(wanted == nm)
    if (length(k) == 0) {
      read_chunks(con, nbytes, 8 * 1024^2, part, nm, call)
      next
    }
    value <- if (!is.null(hooks)) {
      read_stream_into(con, nm, info$dtype[[i]], info$shape[[i]], hooks, args, part, call)
    } else {
      raw <- read_exact(con, nbytes, part, nm, call)
      if (framework == "raw") {
        structure(raw, dtype = info$dtype[[i]], shape = info$shape[[i]])
      } else {
        meta <- info$header[[match(nm, names(info$header))]]
        do.call(constructor, c(list(raw, meta), args))
      }
    }
    out[k] <- list(value)
    max_offset <- max(max_offset, start + info$end[[i]])
  }
  check_stream_end(con, info, part, call)
  names(out) <- wanted
  as_loaded(out, info$header, max_offset)
}

# safe_load_file() of a file path, URL (or raw vector) through a handle, so
# that a progress bar can be updated between pieces of the data, tensors
# read straight into torch, or a remote file's tensors fetched in pieces
# (load_handle()). `choices`: the `int64` and `uint8` choices
# (read_choices()).
load_through_handle <- function(path, tensors, framework, args, backend, choices = NULL, call = parent.frame()) {
  part <- open_part(path, backend, whole = is.null(tensors), call = call)
  h <- new_handle(list(part), part$info$name, rep(1L, length(part$info$name)), framework, args, backend,
    label = part$label, metadata = part$info$metadata, kind = part_kind(part), choices = choices
  )
  on.exit(close(h), add = TRUE)
  load_handle(h, tensors, framework, args, call = call)
}

# as.list() of a handle: every tensor, as safe_load_file() returns them.
#' @export
as.list.safetensors_file <- function(x, ...) {
  load_handle(x, NULL, hget(x, "framework"), hget(x, "args"))
}

# Reads the tensors `tensors` (all by default) of handle `h` as
# safe_load_file() returns them, with a progress bar when they are large
# and a bar may be shown.
load_handle <- function(h, tensors, framework, args, call = parent.frame()) {
  nms <- if (is.null(tensors)) {
    names(h)
  } else {
    vapply(tensors, function(t) tensor_name(h, t, call = call), character(1), USE.NAMES = FALSE)
  }
  mode <- handle_mode(h, framework)
  bar <- NULL
  if (progress_enabled()) {
    tab <- handle_table(h)
    sizes <- tab$bytes[match(nms, tab$name)]
    if (progress_wanted(sizes)) {
      bar <- progress_bar("Loading", hget(h, "label"), sum(sizes))
    }
  }
  hooks <- framework_hooks(framework)
  if (!is.null(hooks)) {
    res <- read_into_framework(h, nms, framework, hooks, args, call = call, bar = bar)
    return(as_loaded(res$tensors, combined_header(h), res$max_offset))
  }
  res <- read_parts(h, nms, mode, call = call, bar = bar)
  res$header <- combined_header(h)
  finish_load(res, framework, args, call = call)
}
