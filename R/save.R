#' Save tensors to a safetensors file
#'
#' `safe_save_file()` writes a named list of tensors to a `.safetensors`
#' file (or a connection), and `safe_serialize()` returns the same bytes as a
#' raw vector. Files are written atomically: the data goes to a temporary
#' file in the target's directory, which is flushed and then renamed over the
#' target, so a failed save never leaves a partial file and never damages an
#' existing one.
#'
#' Plain R vectors and arrays are written with these dtypes unless asked
#' otherwise: double as F64, integer as I32, logical as BOOL, raw as U8,
#' complex as C64, and bit64's integer64 as I64 (exactly: its values, not
#' the doubles that hold them). The `dtype` argument selects another dtype
#' (see also "The "dtype" attribute"); a dtype is named as in safetensors
#' files (`"BF16"`) or as numpy and torch name it (`"bfloat16"`, `"half"`,
#' `"int64"`, `"torch.float32"`), in any case. Conversions to narrower
#' floats (F32, F16, BF16, F8, F6, F4) round to nearest, ties to even, and a
#' value that does not fit the target dtype (out of range, a fraction for an
#' integer dtype, `NA` in an integer or logical vector) is an error of class
#' `safetensors_error_conversion`. The array `dim` becomes the shape, and
#' elements are stored so that Python's `t[i - 1, j - 1, ...]` is
#' `x[i, j, ...]`. A vector without `dim` is a 1-D tensor, except a length-one
#' vector with attribute `shape = integer(0)`, which is a scalar.
#'
#' Other objects (torch tensors, for example) are written through their
#' [safe_tensor_meta()] and [safe_tensor_buffer()] methods, one tensor at a
#' time, and a raw vector with `"dtype"` and `"shape"` attributes (as
#' `framework = "raw"` returns) is written as the bytes it holds.
#'
#' @section The "dtype" attribute:
#' [safe_load_file()] gives each array the dtype of its file in attribute
#' `"dtype"`, so that an array saved back unchanged keeps its dtype and
#' bytes. Without `dtype`, that attribute chooses the dtype, but never loses
#' information silently: it is used only if the dtype holds every value
#' exactly (`NaN` included). An array computed from a loaded one usually
#' keeps the attribute (R's arithmetic keeps attributes), so
#' `safe_save_file(list(w = w + 1/3), f)` of an F16 `w` is an error of
#' class `safetensors_error_conversion` that says the dtype came from the
#' attribute: choose a dtype with the `dtype` argument (which rounds, as
#' above) or drop the attribute (`attr(w, "dtype") <- NULL`, which writes
#' double as F64).
#'
#' @section Names and metadata:
#' Tensor names and metadata are written as UTF-8, whatever encoding R marks
#' them with (a name in Latin-1 is converted); a string that can't be
#' converted is an error before anything is written. Every tensor needs a
#' name (a list named only in part, `list(a = 1, 2)`, is an error); a list
#' returned by [safe_load_file()] saves back with the names its file had,
#' the empty name included.
#'
#' @section Layout:
#' The header lists the tensors in the order given; the data are stored by
#' alignment, largest element first (F64, I64, U64, C64, then 4-, 2- and
#' 1-byte elements, then the sub-byte dtypes), in the order given among
#' equals, as Python's `safetensors` does, so that every tensor starts at a
#' multiple of its element size and memory-mapping readers can use it in
#' place. [safe_load_file()] returns tensors in the order the header lists
#' them, so a list comes back in the order it was saved. `metadata` comes
#' first, with its keys sorted, in the compact, space-padded header Python's
#' `safetensors` writes; so saving what [safe_load_file()] returned, with
#' the file's `__metadata__`, reproduces a file Python wrote byte for byte
#' (when Python wrote its metadata keys in sorted order, as it always does
#' for one key).
#'
#' On Windows, a file open elsewhere without sharing, or memory-mapped (by
#' a [safe_open()] handle, in this or another process), can't be replaced:
#' the save is then an error of class `safetensors_error_io` that says the
#' target is in use, and the target is left as it was; close the handle
#' first. On Linux and macOS the handle keeps reading the old file.
#'
#' A connection is written from its current position; it need not be
#' seekable (`gzcon()`, pipes, sockets). One that is not yet open is opened
#' only once the tensors are known to be writable, and closed again. A
#' connection is not written atomically.
#'
#' @param tensors A named list of tensors: R vectors or arrays (double,
#'   integer, logical, raw, complex or bit64's integer64), or objects with
#'   [safe_tensor_meta()] and [safe_tensor_buffer()] methods. Names must be
#'   unique and not `"__metadata__"` (see "Names and metadata").
#' @param path A file path, a folder (see "Sharded checkpoints"), or a
#'   binary connection (opened for writing, or not yet opened, in which case
#'   it is opened and closed again).
#' @param ... `framework`, which safetensors 0.2.x accepted and ignored, is
#'   ignored too. Any other argument is an error of class
#'   `safetensors_error_invalid_argument` that names it and suggests the
#'   argument meant (`metdata = ` is `metadata =` misspelled).
#' @param metadata `NULL` (the default) for none, or a named list or
#'   character vector of single strings, stored as the file's
#'   `__metadata__`.
#' @param dtype `NULL` (the default) to use each tensor's `"dtype"` attribute
#'   or the default for its R type, a single dtype name such as `"F32"` (or
#'   `"float32"`, in any case) for all tensors, or a named character vector
#'   of dtypes for some of them. An unknown name is an error of class
#'   `safetensors_error_invalid_argument` suggesting the closest known one.
#' @param sync Whether to flush the file to disk (fsync) before renaming it
#'   over the target. Default `TRUE`.
#' @inheritSection safe_load_file Threads
#' @param max_shard_size `NULL` (the default) to write one file, or the
#'   largest shard of a sharded checkpoint: a number of bytes, or a string
#'   such as `"5GB"` (units B, kB, MB, GB, TB are powers of 1000; KiB, MiB,
#'   GiB, TiB powers of 1024; case is ignored). See "Sharded checkpoints".
#' @return `safe_save_file()` returns the path written, invisibly: `path`,
#'   or for a sharded checkpoint the path of its index. `safe_serialize()`
#'   returns a raw vector.
#' @section Sharded checkpoints:
#' With `max_shard_size`, the tensors are split, in order, into shards of at
#' most that many bytes of tensor data (a larger tensor gets a shard of its
#' own) and written as transformers does: for `path = "dir/model.safetensors"`
#' (or a folder `"dir"`), shards `dir/model-00001-of-00003.safetensors`
#' and so on, each with the same `metadata`, and the index
#' `dir/model.safetensors.index.json`: `{"metadata": {"total_size": N},
#' "weight_map": {tensor: shard file}}`, where `N` is the sum of the tensors'
#' sizes in bytes. If everything fits in one shard, a single file is written
#' at `path` and no index, as transformers does. A folder given as `path`
#' without `max_shard_size` gets a single `model.safetensors`.
#'
#' A checkpoint is written as a whole: it replaces the checkpoint that was
#' there (its index and shards, or its single file), and a crash or a kill
#' at any point leaves the folder holding either the complete old
#' checkpoint or the complete new one, never a mix. The new shards are
#' written first under names the old checkpoint doesn't use (when its
#' shards have the usual names, the new ones are
#' `model-00001-of-00003.b.safetensors` and so on); the new index then
#' replaces the old one in one step, and the old shards are deleted. Other
#' files in the folder (configurations, tokenizers) are left alone.
#' [safe_open()], [safe_load_file()], [safe_info()] and [safe_metadata()]
#' read a checkpoint from its index or its folder.
#' @section Progress:
#' In an interactive session, saving more than 64 MiB of tensors to a file
#' shows a progress bar once it has taken two seconds; option
#' `safetensors.progress = FALSE` turns it off (see [safetensors-package]).
#' @seealso [safe_load_file()]
#' @export
#' @examples
#' x <- list(weight = matrix(rnorm(6), 2, 3), step = 10L, mask = c(TRUE, FALSE))
#' path <- tempfile(fileext = ".safetensors")
#' safe_save_file(x, path, metadata = list(format = "pt"))
#' str(safe_load_file(path))
#'
#' # Store doubles as F16
#' safe_save_file(x, path, dtype = c(weight = "F16"))
#' safe_load_file(path)$weight
#'
#' bytes <- safe_serialize(x)
#' length(bytes)
#' unlink(path)
#'
#' # A sharded checkpoint
#' dir <- tempfile()
#' dir.create(dir)
#' big <- list(a = runif(100), b = runif(100), c = runif(100))
#' index <- safe_save_file(big, file.path(dir, "model.safetensors"), max_shard_size = 1000)
#' list.files(dir)
#' names(safe_load_file(index))
#' unlink(dir, recursive = TRUE)
safe_save_file <- function(tensors, path, ..., metadata = NULL, dtype = NULL, sync = TRUE,
                           max_shard_size = NULL) {
  check_save_dots(..., formals = c("tensors", "path", "metadata", "dtype", "sync", "max_shard_size"))
  check_bool(sync)
  spec <- tensor_spec(tensors, dtype, metadata)
  limit <- if (is.null(max_shard_size)) Inf else parse_size(max_shard_size)
  if (is.character(path)) {
    return(invisible(save_checkpoint(spec, path, limit, sync)))
  }
  if (!inherits(path, "connection")) {
    st_abort(
      "invalid_argument",
      "{.arg path} must be a file path or a connection, not {.obj_type_friendly {path}}."
    )
  }
  if (!is.null(max_shard_size)) {
    st_abort("invalid_argument", "{.arg path} must be a file or directory path when {.arg max_shard_size} is given.")
  }
  write_spec(spec, "connection", path)
  invisible(path)
}

#' @rdname safe_save_file
#' @export
safe_serialize <- function(tensors, ..., metadata = NULL, dtype = NULL) {
  check_save_dots(..., formals = c("tensors", "metadata", "dtype"))
  write_spec(tensor_spec(tensors, dtype, metadata), "raw")
}

# `...` exists for safetensors 0.2.x, whose writers accepted and ignored
# arguments such as `framework`; anything else is a mistake (a misspelled
# `metdata =` would otherwise write the file without its metadata).
check_save_dots <- function(..., formals, call = parent.frame()) {
  nms <- names(list(...)) %||% rep("", ...length())
  unknown <- nms[nms != "framework"]
  if (length(unknown) == 0) {
    return(invisible())
  }
  named <- unknown[unknown != ""]
  n_unnamed <- sum(unknown == "")
  message <- if (length(named) > 0) "Unknown argument{?s} in {.arg ...}: {.arg {named}}." else "{.arg ...} must be empty."
  if (n_unnamed > 0) {
    message <- c(message, x = "{n_unnamed} argument{?s} without a name: name {?it/them}, as in {.code dtype = \"F32\"}.")
  }
  for (a in named) {
    guess <- closest_name(a, formals)
    if (!is.null(guess)) {
      message <- c(message, i = sprintf("Did you mean {.arg %s} instead of {.arg %s}?", guess, cli_escape(a)))
    }
  }
  st_abort("invalid_argument", message, call = call)
}
