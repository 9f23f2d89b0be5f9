#' Open a safetensors file without reading it
#'
#' `safe_open()` reads and validates a file's header and returns a handle
#' that reads tensors, or slices of them, only when asked. Opening an 8 GB
#' checkpoint takes the time of reading its header; listing its tensors
#' reads nothing more; reading one tensor or a few rows of one reads only
#' those bytes. [safe_slice()] is the function form of `h$slice()`.
#'
#' @section Reading from a handle:
#' * `names(h)`: tensor names, in the order the header lists them; `length(h)`: their number.
#' * `h[["w"]]` or `h$w`: tensor `w`, as [safe_load_file()] would return
#'   it (`h[[i]]` also takes a position). `h[c("a", "b")]` returns a named
#'   list; `as.list(h)` reads every tensor, as [safe_load_file()] returns
#'   them.
#' * The methods of Python's `safe_open()` (and of safetensors 0.2.x's
#'   class), for code ported from them: `h$keys()`, the names sorted as
#'   Python sorts them (by code point; `names(h)` keeps the header's
#'   order); `h$get_tensor("w")`, as `h[["w"]]`; `h$get_slice("w")`, as
#'   `h$slice("w")`, whose `$get_shape()` and `$get_dtype()` give its shape
#'   and dtype; `h$metadata()`, the `__metadata__` by name (a named
#'   character vector, or `NULL`), as [safe_metadata()] returns it.
#' * `h$slice`, `h$keys`, `h$get_tensor`, `h$get_slice` and `h$metadata`
#'   are these methods even for a file with a tensor of that name; read such
#'   a tensor with `h[["keys"]]`, which always means the tensor. Tab
#'   completion after `h$` offers both the methods and the tensors.
#' * `h$slice("w")`: a slice object; indexing it as an array,
#'   `h$slice("w")[1:10, ]`, reads only the bytes of the selected elements
#'   and returns what `h[["w"]][1:10, ]` would (keeping the `"dtype"`
#'   attribute). A slice object acts as the array it stands for: `dim()` is
#'   the tensor's shape, `length()` its number of elements, `as.array()`
#'   reads it whole, and `str()` shows its type, dimensions and first
#'   values (reading only those).
#' * `format(h)`, `print(h)`: a table of name, dtype, shape and size, and
#'   the metadata, fitted to `getOption("width")` (or `width =`): long
#'   names are cut in the middle, and columns that don't fit are left out.
#'   [safe_info()] and [safe_metadata()] accept handles.
#' * `close(h)`: releases the file (or memory map) at once. Using a closed
#'   handle is an error of class `safetensors_error_closed`; closing twice
#'   is harmless. Handles are also released when garbage-collected, and a
#'   handle saved with `saveRDS()` comes back closed.
#'
#' @section Slice indices:
#' A slice takes one index per dimension (`[]` alone means the whole
#' tensor), with R's 1-based, inclusive meaning:
#' * an empty index (`x[, 1]`): the whole dimension;
#' * positive whole numbers, as single indices (`2`), ranges (`3:7`),
#'   stepped ranges (`seq(1, 9, by = 2)`) or any vector (`c(5, 1, 1)`, in
#'   that order, repeats allowed). Zeros are dropped and fractions truncated,
#'   as R does. Ranges and stepped ranges are read as strided runs; other
#'   vectors element by element;
#' * negative whole numbers exclude (`-1`, `-(1:3)`); they can't be mixed
#'   with positive ones;
#' * a logical vector no longer than the dimension, recycled (`c(TRUE,
#'   FALSE)` selects odd positions);
#' * `drop = TRUE` (the default) drops extents of one as arrays do;
#'   `drop = FALSE` keeps them.
#'
#' An index beyond the extent (including a negative one, which R would
#' silently ignore), `NA`, a character index, or a number of indices other
#' than the tensor's rank is an error of class
#' `safetensors_error_invalid_slice`; nothing wraps around. A scalar tensor
#' can only be read whole (`[]`). For sub-byte dtypes (F4, F6) a slice must
#' start and end on byte boundaries (class `safetensors_error_misaligned`).
#' For frameworks other than `"r"`, the constructor receives the slice's
#' bytes and shape, with `drop = TRUE` removing every extent of one.
#'
#' @section Files that change:
#' A file truncated, rewritten or replaced in place while a handle is open
#' gives an error of class `safetensors_error_file_changed` on the next
#' read, and one that changes while a read is in progress gives the same
#' error at the end of that read, never a crash or silently wrong values
#' (see "Backends" in [safe_load_file()]). A file replaced by renaming
#' another over it (as [safe_save_file()] does) is not affected: the handle
#' keeps reading the old file until it is closed.
#'
#' On Windows, a file that a handle memory-maps (a local file, by default)
#' can't be replaced or deleted until the handle is closed:
#' [safe_save_file()] to that path is then an error of class
#' `safetensors_error_io` that says so, and the file is left as it was.
#' With `backend = "read"`, the file can be replaced while open, as on
#' Linux and macOS.
#'
#' @section Remote files:
#' `path` may be an `http://` or `https://` URL, of a file or of a shard
#' index (whose shards are at URLs relative to it), such as a Hugging Face
#' Hub URL `https://huggingface.co/<repo>/resolve/<revision>/<file>`.
#' Nothing is downloaded but what is read: opening reads the header with
#' one HTTP range request for the first 64 KiB (and a second for the rest
#' of a longer header), each tensor read takes one request for its bytes
#' (tensors adjacent in the file share one), and a slice fetches only the
#' rows or blocks it selects (runs less than 16 KiB apart in one request);
#' bytes within the first 64 KiB came with the header and are not fetched
#' again. The bytes are validated exactly as a
#' local file's; a server that sends other bytes than those asked for gets
#' the errors a damaged file gets, and a file that changes on the server
#' while a handle is open gives `safetensors_error_file_changed`. A file of
#' at most 64 KiB is read whole by the first request and kept in memory.
#' A handle remembers where the URL redirects to (a Hub URL redirects to a
#' CDN) and asks there directly afterwards.
#'
#' This needs the \pkg{curl} package (an error of class
#' `safetensors_error_package_not_installed` says how to install it) and a
#' server that answers range requests (one that doesn't gives an error of
#' class `safetensors_error_http`; [safe_load_file()] reads whole files
#' from it). Failures are errors of class `safetensors_error_http`, with
#' fields `status` (the HTTP status, `NA` without a response) and `url`
#' (credentials in it redacted). Credentials, timeouts and retries are set
#' by options and the `HF_TOKEN` environment variable: see "Remote files"
#' in [safetensors-package].
#'
#' @param path A path to a `.safetensors` file, a path to a sharded
#'   checkpoint's index (a file ending in `.json`, such as
#'   `model.safetensors.index.json`; see [safe_save_file()]), an `http://`
#'   or `https://` URL of either (see "Remote files"), a folder holding a
#'   checkpoint (see "Folders" in [safe_load_file()]), a Hugging Face Hub
#'   path `hf://owner/name/...` (read from the Hub cache, else over HTTP:
#'   see [safetensors-hub]), a raw vector holding a whole file, or a binary
#'   connection (read into memory). For `safe_slice()`, also a handle from
#'   `safe_open()`; anything else is opened and closed again.
#'   (`safe_slice()` called it `x` in 0.4.0; `x =` still works.)
#' @param framework What tensors become: `"r"` (the default) for R arrays,
#'   `"raw"` for raw vectors, or a framework registered in
#'   [safetensors_frameworks] such as `"torch"`.
#' @param ... For `safe_open()`: passed on to the framework's tensor
#'   constructor, for example `device = "cuda"` for torch; must be empty for
#'   `"r"` and `"raw"`. For `safe_slice()`: one index per dimension of the
#'   tensor, as for `h$slice(name)[...]` (see "Slice indices").
#' @inheritParams safe_load_file
#' @param int64 What I64 and U64 tensors become with `framework = "r"`:
#'   `"double"` (the default), `"integer64"` (bit64's class) or
#'   `"character"` (exact decimal strings); see [safe_load_file()]. The
#'   handle keeps the choice for every read and slice. For `safe_slice()`,
#'   `NULL` (the default) uses the handle's choice (`"double"` for a path).
#' @param uint8 What U8 tensors become with `framework = "r"`: `"integer"`
#'   (the default) or `"raw"` (one byte per value); see [safe_load_file()].
#'   For `safe_slice()`, `NULL` (the default) uses the handle's choice
#'   (`"integer"` for a path).
#' @return `safe_open()`: a handle of class `safetensors_file` (for an
#'   `hf://` path, with attribute `"origin"`, see [safetensors-hub]).
#'   `safe_slice()`: the selected part of the tensor.
#' @seealso [safe_load_file()] to read everything, [safe_info()] for the
#'   header as a data frame.
#' @export
#' @examples
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' h <- safe_open(path)
#' h
#' names(h)
#' h$bias
#' h[["weight"]]
#'
#' # Slices read only the selected elements
#' h$slice("weight")[2, ]
#' h$slice("weight")[, c(1, 3), drop = FALSE]
#' dim(h$slice("weight"))
#' safe_slice(h, "weight", 1, 2:3)
#' close(h)
#'
#' # Python's f.get_slice("weight")[0:1, ::2], in R
#' safe_slice(path, "weight", 1, seq(1, 3, by = 2), drop = FALSE)
#'
#' # Python's spellings of the same
#' h <- safe_open(path)
#' h$keys()
#' h$get_tensor("bias")
#' h$get_slice("weight")[1, ]
#' h$get_slice("weight")$get_shape()
#' h$metadata()
#' str(as.list(h))
#' close(h)
#' @examplesIf interactive() && rlang::is_installed("curl")
#'
#' # A model on the Hugging Face Hub: its header, then one tensor and a
#' # slice of another, without downloading the rest
#' url <- "https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors"
#' h <- safe_open(url)
#' h
#' wte <- grep("wte.weight$", names(h), value = TRUE)
#' h$slice(wte)[1:5, 1:8]
#' close(h)
#'
#' # 64-bit integers as exact strings
#' h <- safe_open(safe_serialize(list(id = c(2^53, 2^53 + 2)), dtype = "int64"), int64 = "character")
#' h$id
#' close(h)
safe_open <- function(path, framework = "r", ..., backend = c("auto", "mmap", "read"),
                      int64 = c("double", "integer64", "character"), uint8 = c("integer", "raw")) {
  check_required(path)
  if (retry_reads(path)) {
    return(read_checkpoint(path, environment()))
  }
  path <- resolve_folder(path)
  framework <- check_framework(framework)
  backend <- read_backend(arg_choice(backend, backends), framework)
  choices <- read_choices(int64, uint8, framework)
  args <- list(...)
  check_framework_args(framework, args)
  if (is_hf_path(path)) {
    return(hf_read(path, whole = FALSE, function(path, origin) {
      open_handle(path, framework, args, backend, choices = choices)
    }))
  }
  open_handle(path, framework, args, backend, choices = choices)
}

# A handle over `path` (checked, folders resolved): a file, raw vector, URL
# or shard index. `whole`: every tensor will be read, in file order (see
# open_part()).
open_handle <- function(path, framework, args, backend, whole = FALSE, choices = NULL, call = parent.frame()) {
  if (is_index_path(path)) {
    return(open_index(path, framework, args, backend, whole = whole, choices = choices, call = call))
  }
  part <- open_part(path, backend, whole = whole, call = call)
  new_handle(list(part), part$info$name, rep(1L, length(part$info$name)), framework, args, backend,
    label = part$label, metadata = part$info$metadata,
    kind = part_kind(part),
    choices = choices
  )
}

# A handle over the shards of the index at `path` (see open_shard_set()),
# presenting the tensors of its weight map as one set. `whole`: every
# tensor will be read (see open_part()). `choices`: the `int64` and
# `uint8` choices (read_choices()).
open_index <- function(path, framework, args, backend, whole = FALSE, choices = NULL, call = parent.frame()) {
  set <- open_shard_set(path, backend, whole = whole, call = call)
  new_handle(set$parts, set$names, set$part_of, framework, args, backend,
    label = set$label,
    metadata = if (length(set$parts) > 0) set$parts[[1]]$info$metadata,
    kind = "shards",
    index = set$index,
    choices = choices
  )
}

# A handle: the parts (open files), and for each visible tensor its name and
# part. `metadata` is the file's (or first shard's) __metadata__; `kind` is
# "mmap", "read", "memory", "remote" or "shards"; `choices` the `int64` and
# `uint8` choices (read_choices(); NULL for the defaults).
new_handle <- function(parts, names, part_of, framework, args, backend, label, metadata, kind, index = NULL,
                       choices = NULL) {
  pos <- integer(length(names))
  for (p in unique(part_of)) {
    at <- which(part_of == p)
    pos[at] <- match(names[at], parts[[p]]$info$name)
  }
  structure(
    list(
      parts = parts,
      names = names,
      part_of = part_of,
      pos = pos,
      framework = framework,
      args = args,
      backend = backend,
      label = label,
      metadata = metadata,
      kind = kind,
      index = index,
      choices = choices
    ),
    class = "safetensors_file"
  )
}

hget <- function(x, field) .subset2(x, field)

# What the Rust reader makes of the tensors of handle `x` for `framework`
# (read_mode()), with the handle's `int64` and `uint8` choices unless
# `choices` gives others.
handle_mode <- function(x, framework = hget(x, "framework"), choices = hget(x, "choices")) {
  read_mode(framework, choices$int64, choices$uint8)
}

#' @export
names.safetensors_file <- function(x) {
  hget(x, "names")
}

#' @export
length.safetensors_file <- function(x) {
  length(hget(x, "names"))
}

# `exact` is accepted as lists accept it; names always match exactly.
#' @export
`[[.safetensors_file` <- function(x, i, ..., exact = TRUE) {
  check_one_index(...)
  name <- tensor_name(x, i)
  read_tensors(x, name)[[1]]
}

#' @export
`$.safetensors_file` <- function(x, name) {
  handle_method(x, name) %||% read_tensors(x, tensor_name(x, name))[[1]]
}

#' @export
`[.safetensors_file` <- function(x, i, ...) {
  check_one_index(...)
  if (missing(i)) {
    i <- names(x)
  }
  nms <- vapply(i, function(j) tensor_name(x, j), character(1), USE.NAMES = FALSE)
  out <- read_tensors(x, nms)
  names(out) <- nms
  out
}

# A handle is indexed by one vector of names or positions, as a list is.
check_one_index <- function(..., call = parent.frame()) {
  if (...length() > 0) {
    n <- ...length() + 1
    st_abort(
      "invalid_argument",
      c(
        "A handle takes one index, not {n}.",
        i = "Choose tensors by name or position, as in {.code h[[\"w\"]]} or {.code h[c(\"a\", \"b\")]}."
      ),
      call = call
    )
  }
}

# The names `h$name` gives a method for rather than a tensor: R's
# `slice()`, and Python's `keys()`, `get_tensor()`, `get_slice()` and
# `metadata()`. A tensor of one of these names is read with `h[["keys"]]`.
handle_methods <- c("slice", "keys", "get_tensor", "get_slice", "metadata")

# Method `name` of handle `x` (a closure over it), or NULL if `name` is not
# one of `handle_methods`. Python's `keys()` sorts the names (by code
# point, as Python compares strings); `metadata()` returns the
# `__metadata__` as safe_metadata() does. Like `names(h)`, `keys()` and
# `metadata()` answer from the header, also once the handle is closed.
handle_method <- function(x, name) {
  # Errors in the methods cite the user's `h$get_tensor("w")` (see
  # error_frame()).
  .st_entry <- TRUE
  switch(name,
    slice = ,
    get_slice = function(name, ...) {
      check_required(name)
      check_dots_empty(...)
      new_slice(x, name)
    },
    get_tensor = function(name, ...) {
      check_required(name)
      check_dots_empty(...)
      read_tensors(x, tensor_name(x, name))[[1]]
    },
    keys = function(...) {
      check_dots_empty(...)
      sort(names(x), method = "radix")
    },
    metadata = function(...) {
      check_dots_empty(...)
      hget(x, "metadata")
    }
  )
}

#' @rawNamespace S3method(utils::.DollarNames, safetensors_file)
.DollarNames.safetensors_file <- function(x, pattern = "") {
  nms <- unique(c(handle_methods, names(x)))
  nms[grepl(pattern, nms)]
}

#' @rawNamespace S3method(utils::str, safetensors_file)
str.safetensors_file <- function(object, ...) {
  cat(
    "<safetensors_file> ", format_label(object), ": ", length(object), " tensors",
    if (!handle_is_open(object)) " (closed)", "\n",
    sep = ""
  )
  invisible()
}

#' @export
close.safetensors_file <- function(con, ...) {
  for (p in hget(con, "parts")) {
    close_part(p)
  }
  invisible()
}

handle_is_open <- function(x) {
  all(vapply(hget(x, "parts"), function(p) is_open_(p$ptr), logical(1)))
}

# The name of tensor `i` (a name or a position) of handle `x`.
tensor_name <- function(x, i, call = parent.frame()) {
  nms <- hget(x, "names")
  if (is_string(i)) {
    at <- match(i, nms)
    if (is.na(at)) {
      st_abort(
        "tensor_not_found",
        "Tensor {.val {i}} is not in {format_label(x)}.",
        tensor = i,
        call = call
      )
    }
    # The handle's own string: UTF-8, whatever encoding `i` is marked with.
    return(nms[[at]])
  }
  if (is.numeric(i) && length(i) == 1 && !is.na(i) && i >= 1 && i <= length(nms) && i == trunc(i)) {
    return(nms[[i]])
  }
  st_abort(
    "invalid_argument",
    "A tensor must be chosen by its name or a position from 1 to {length(nms)}, not {value_friendly(i)}.",
    call = call
  )
}

# The label of handle `x` as messages show it.
format_label <- function(x) {
  format_file(hget(x, "label"))
}

# The 0.2.x header entry (dtype, shape, data_offsets) of each named tensor.
header_entries <- function(x, names) {
  at <- match(names, hget(x, "names"))
  parts <- hget(x, "parts")
  part_of <- hget(x, "part_of")[at]
  out <- vector("list", length(names))
  for (p in unique(part_of)) {
    k <- which(part_of == p)
    header <- parts[[p]]$info$header
    out[k] <- header[match(names[k], names(header))]
  }
  names(out) <- names
  out
}

# The 0.2.x header of the whole handle: every visible tensor's entry, in the
# handle's order, with the metadata first.
combined_header <- function(x) {
  parts <- hget(x, "parts")
  if (length(parts) == 1) {
    return(parts[[1]]$info$header)
  }
  out <- header_entries(x, hget(x, "names"))
  meta <- hget(x, "metadata")
  if (!is.null(meta)) {
    out <- c(list("__metadata__" = as.list(meta)), out)
  }
  out
}

# Reads tensors `names` (a character vector of visible names) from the parts
# that hold them, as the Rust reader returns them, in the order asked.
# With a cli progress `bar`, each part is read in pieces (read_in_pieces()),
# a remote one as it is fetched, moving the bar after each.
read_parts <- function(x, names, mode, call = parent.frame(), bar = NULL) {
  at <- match(names, hget(x, "names"))
  part_of <- hget(x, "part_of")[at]
  parts <- hget(x, "parts")
  tensors <- vector("list", length(names))
  inexact <- numeric(length(names))
  int_min <- numeric(length(names))
  na <- numeric(length(names))
  max_offset <- 0
  for (p in unique(part_of)) {
    k <- which(part_of == p)
    part <- parts[[p]]
    if (part_is_remote(part)) {
      # Fetched in pieces, which move the bar.
      res <- remote_read(part, names[k], mode, st_threads(), call = call, bar = bar)
      tensors[k] <- unname(res$tensors)
      inexact[k] <- res$inexact
      int_min[k] <- res$int_min
      na[k] <- res$na
      max_offset <- max(max_offset, res$max_offset)
      next
    }
    res <- if (is.null(bar)) {
      check_part(handle_read_(part$ptr, names[k], mode, st_threads()), part, call = call)
    } else {
      read_in_pieces(part, names[k], mode, st_threads(), bar, call = call)
    }
    tensors[k] <- unname(res$tensors)
    inexact[k] <- res$inexact
    int_min[k] <- res$int_min
    na[k] <- res$na
    max_offset <- max(max_offset, res$max_offset)
  }
  names(tensors) <- names
  list(tensors = tensors, inexact = inexact, int_min = int_min, na = na, max_offset = max_offset)
}

# Reads tensors `names` of a local part as handle_read_() does, in pieces
# of about progress_group_bytes() (whole tensors together, or rows of a
# larger one, so that the bar moves within a large tensor too), moving the
# cli progress `bar` by each piece's bytes.
read_in_pieces <- function(part, names, mode, threads, bar, call = parent.frame()) {
  plan <- check_part(handle_plan_(part$ptr, names, mode, progress_group_bytes(call)), part, call = call)
  for (p in seq_along(plan$pieces)) {
    check_part(handle_read_piece_(part$ptr, plan$loader, p, threads), part, call = call)
    cli::cli_progress_update(inc = plan$pieces[[p]], id = bar)
  }
  check_part(remote_finish_(plan$loader), part, call = call)
}

# Reads tensors as the handle's framework makes them; a named list.
read_tensors <- function(x, names, call = parent.frame()) {
  read_handle(x, names, hget(x, "framework"), hget(x, "args"), call = call)$tensors
}

# Reads tensors `names` of handle `x` as `framework` makes them:
# `list(tensors, max_offset)`, the tensors a named list without attributes.
# A framework with the read fast path (framework_hooks()) gets them piece
# by piece into its own memory; any other from raw vectors.
read_handle <- function(x, names, framework, args, call = parent.frame()) {
  hooks <- framework_hooks(framework)
  if (!is.null(hooks)) {
    return(read_into_framework(x, names, framework, hooks, args, call = call))
  }
  mode <- handle_mode(x, framework)
  res <- read_parts(x, names, mode, call = call)
  res$header <- header_entries(x, names)
  list(tensors = strip_loaded(finish_load(res, framework, args, call = call)), max_offset = res$max_offset)
}

# Reads tensors `names` of handle `h` into tensors the framework allocates,
# through the fast path of its entry `hooks` (framework_hooks()): in file
# order, part by part. Returns list(tensors, max_offset) as read_handle()
# does; a cli progress `bar` moves after each tensor.
read_into_framework <- function(h, names, framework, hooks, args, call = parent.frame(), bar = NULL) {
  at <- match(names, hget(h, "names"))
  parts <- hget(h, "parts")
  part_of <- hget(h, "part_of")[at]
  pos <- hget(h, "pos")[at]
  info_of <- function(field) lapply(seq_along(names), function(k) parts[[part_of[[k]]]]$info[[field]][[pos[[k]]]])
  dtypes <- unlist(info_of("dtype"))
  shapes <- info_of("shape")
  check_framework_dtypes(dtypes, names, hooks$dtypes, framework, call = call)
  begin <- unlist(info_of("begin"))
  out <- vector("list", length(names))
  finish <- hooks$finish %||% function(x, ...) x
  # In file order: a part streamed from a server that ignores ranges can
  # only be read forwards, and a disk reads faster so.
  for (p in unique(part_of[order(part_of)])) {
    k <- which(part_of == p)
    k <- k[order(begin[k])]
    part <- parts[[p]]
    read_part_pieces(
      part, names[k], dtypes[k], shapes[k],
      target = function(j) do.call(hooks$new, c(list(dtypes[[k[[j]]]], as.numeric(unlist(shapes[[k[[j]]]]))), args)),
      fill = hooks$fill,
      done = function(j, x) {
        i <- k[[j]]
        out[i] <<- list(do.call(finish, c(list(x), args)))
        if (!is.null(bar)) {
          cli::cli_progress_update(inc = tensor_bytes(dtypes[[i]], shapes[[i]]), id = bar)
        }
      },
      views = isTRUE(hooks$views),
      call = call,
      setup = hooks$setup,
      memory = hooks$memory
    )
  }
  end <- vapply(seq_along(names), function(k) {
    info <- parts[[part_of[[k]]]]$info
    8 + info$header_len + info$end[[pos[[k]]]]
  }, numeric(1))
  names(out) <- names
  list(tensors = out, max_offset = if (length(end) > 0) max(end) else 0)
}

#' @export
format.safetensors_file <- function(x, ..., n = 20, width = getOption("width", 80)) {
  closed <- !handle_is_open(x)
  # The label (a path or URL), cut in the middle to fit the line.
  room <- width - nchar("<safetensors_file> ") - if (closed) nchar(" (closed)") else 0
  head <- paste0("<safetensors_file> ", truncate_middle(hget(x, "label"), max(12, room)))
  if (closed) {
    return(paste(head, "(closed)"))
  }
  nms <- hget(x, "names")
  info <- handle_table(x)
  parts <- hget(x, "parts")
  src <- switch(hget(x, "kind"),
    mmap = "memory-mapped",
    read = "read on demand",
    memory = "in memory",
    remote = "read over HTTP on demand",
    shards = sprintf(
      "%d shards, %s", length(parts),
      if (is_url(hget(x, "label"))) "read over HTTP on demand" else if (length(parts) > 0 && part_kind(parts[[1]]) == "mmap") "memory-mapped" else "read on demand"
    )
  )
  about <- sprintf(
    "%d tensor%s, %s, %s",
    length(nms), if (length(nms) == 1) "" else "s", format_bytes(sum(info$bytes)), src
  )
  origin <- attr(x, "origin")
  # Wrapped to fit (strwrap() keeps lines shorter than its width); the
  # origin is a path to copy, so it stays whole.
  lines <- c(
    head,
    if (!is.null(origin)) paste("From", describe_origin(origin)),
    strwrap(about, width + 1, exdent = 2)
  )
  if (length(nms) > 0) {
    show <- seq_len(min(n, length(nms)))
    cols <- list(
      encodeString(info$name[show]),
      info$dtype[show],
      vapply(info$shape[show], format_shape, character(1)),
      vapply(info$bytes[show], format_bytes, character(1))
    )
    lines <- c(lines, format_columns(
      c("name", "dtype", "shape", "size"), cols,
      width = width, shrink = c(TRUE, FALSE, FALSE, FALSE)
    ))
    if (length(nms) > n) {
      lines <- c(lines, sprintf("  # ... and %d more", length(nms) - n))
    }
  }
  meta <- hget(x, "metadata")
  if (length(meta) > 0) {
    lines <- c(lines, "Metadata:", format_metadata(meta, width))
  }
  lines
}

#' @export
print.safetensors_file <- function(x, ..., n = 20) {
  cat(format(x, ..., n = n), sep = "\n")
  invisible(x)
}

# The header facts of every visible tensor of a handle, as vectors
# (`shape` a list); `begin` and `end` are absolute offsets in its file.
handle_table <- function(x) {
  parts <- hget(x, "parts")
  part_of <- hget(x, "part_of")
  counts <- vapply(parts, function(p) length(p$info$name), numeric(1))
  at <- (cumsum(c(0, counts))[part_of] + hget(x, "pos"))
  pick <- function(field) do.call(c, lapply(parts, function(p) p$info[[field]]))[at]
  start <- vapply(parts, function(p) 8 + p$info$header_len, numeric(1))[part_of]
  begin <- pick("begin")
  end <- pick("end")
  list(
    name = hget(x, "names"),
    dtype = pick("dtype"),
    shape = pick("shape"),
    numel = pick("numel"),
    bytes = end - begin,
    begin = start + begin,
    end = start + end,
    file = vapply(parts, function(p) p$file %||% p$label, character(1))[part_of]
  )
}

# The slice object of tensor `name` that `h$slice(name)` returns; R/slice.R
# reads from it.
new_slice <- function(x, name, call = parent.frame()) {
  name <- tensor_name(x, name, call = call)
  at <- match(name, hget(x, "names"))
  part <- hget(x, "parts")[[hget(x, "part_of")[[at]]]]
  pos <- hget(x, "pos")[[at]]
  structure(
    list(
      handle = x,
      name = name,
      dtype = part$info$dtype[[pos]],
      shape = part$info$shape[[pos]]
    ),
    class = "safetensors_slice"
  )
}
