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
#' the doubles that hold them). An object's `"dtype"` attribute (set by
#' [safe_load_file()]) or the `dtype` argument selects another dtype; a
#' dtype is named as in safetensors files (`"BF16"`) or as numpy and torch
#' name it (`"bfloat16"`, `"half"`, `"int64"`, `"torch.float32"`), in any
#' case. Conversions to narrower
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
#' A connection is written from its current position; it need not be
#' seekable (`gzcon()`, pipes, sockets). One that is not yet open is opened
#' only once the tensors are known to be writable, and closed again. A
#' connection is not written atomically.
#'
#' Tensors are stored in the order given, and `metadata` first with its keys
#' sorted, in the compact, space-padded header Python's `safetensors` writes;
#' so saving what [safe_load_file()] returned, with the file's
#' `__metadata__`, reproduces a file Python wrote byte for byte (when Python
#' wrote its metadata keys in sorted order, as it always does for one key).
#'
#' @param tensors A named list of tensors: R vectors or arrays (double,
#'   integer, logical, raw, complex or bit64's integer64), or objects with
#'   [safe_tensor_meta()] and [safe_tensor_buffer()] methods. Names must be
#'   unique and not `"__metadata__"`; the empty name is allowed.
#' @param path A file path, or a binary connection (opened for writing, or
#'   not yet opened, in which case it is opened and closed again).
#' @param ... Ignored, for compatibility with safetensors 0.2.x (which
#'   accepted and ignored arguments such as `framework`). Other names give a
#'   warning.
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
#' (or a directory `"dir"`), shards `dir/model-00001-of-00003.safetensors`
#' and so on, each with the same `metadata`, and the index
#' `dir/model.safetensors.index.json`: `{"metadata": {"total_size": N},
#' "weight_map": {tensor: shard file}}`, where `N` is the sum of the tensors'
#' sizes in bytes. If everything fits in one shard, a single file is written
#' at `path` and no index, as transformers does. Each file is written
#' atomically, the index last; shards of an earlier save with a different
#' number of shards are not removed. [safe_open()] and [safe_load_file()]
#' read the checkpoint through its index.
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
  check_ignored_dots(...)
  check_bool(sync)
  spec <- tensor_spec(tensors, dtype, metadata)
  if (!is.null(max_shard_size)) {
    if (!is.character(path)) {
      st_abort("invalid_argument", "{.arg path} must be a file or directory path when {.arg max_shard_size} is given.")
    }
    return(invisible(save_shards(spec, path, max_shard_size, sync)))
  }
  if (is.character(path)) {
    check_string(path)
    bar <- NULL
    if (progress_enabled()) {
      sizes <- spec_sizes(spec)
      if (progress_wanted(sizes)) {
        bar <- progress_bar("Saving", path, sum(sizes))
      }
    }
    write_spec(spec, "file", path.expand(path), sync, bar = bar, label = path)
  } else if (inherits(path, "connection")) {
    write_spec(spec, "connection", path)
  } else {
    st_abort(
      "invalid_argument",
      "{.arg path} must be a file path or a connection, not {.obj_type_friendly {path}}."
    )
  }
  invisible(path)
}

#' @rdname safe_save_file
#' @export
safe_serialize <- function(tensors, ..., metadata = NULL, dtype = NULL) {
  check_ignored_dots(...)
  write_spec(tensor_spec(tensors, dtype, metadata), "raw")
}

check_ignored_dots <- function(..., call = parent.frame()) {
  nms <- names(list(...)) %||% rep("", ...length())
  unknown <- setdiff(nms, "framework")
  if (length(unknown) > 0) {
    unknown[unknown == ""] <- "<unnamed>"
    st_warn("ignored_argument", "Ignoring argument{?s} in {.arg ...}: {.arg {unknown}}.")
  }
}
