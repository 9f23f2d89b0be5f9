#' Save tensors to a safetensors file
#'
#' `safe_save_file()` writes a named list of tensors to a `.safetensors`
#' file, a sharded checkpoint or a connection, and `safe_serialize()`
#' returns the same bytes as a raw vector. A save to a path replaces what
#' was there as a whole and never leaves a partial or mixed checkpoint (see
#' "Files, folders and shard sets").
#'
#' Plain R vectors and arrays are written with these dtypes unless asked
#' otherwise: double as F64, integer as I32, logical as BOOL, raw as U8,
#' complex as C64, and bit64's integer64 as I64 (exactly: its values, not
#' the doubles that hold them). The `dtype` argument selects another dtype
#' (see also "The "dtype" attribute"); a dtype is named as in safetensors
#' files (`"BF16"`) or as numpy and torch name it (`"bfloat16"`, `"half"`,
#' `"int64"`, `"torch.float32"`), in any case. A single floating-point
#' dtype (`dtype = "BF16"`, "save my model in BF16") applies to the
#' floating-point tensors only: integer, logical and complex tensors keep
#' their dtypes unless named (`dtype = c(ids = "I64")`), and a list without
#' floating-point tensors is an error that says so. Any other single dtype
#' (`"I64"`, `"U8"`, `"BOOL"`, `"C64"`) applies to every tensor.
#'
#' Every value is written exactly, or, where the dtype is a narrower float
#' (F32, F16, BF16, F8, F6, F4), rounded to nearest, ties to even, once
#' (64-bit integers beyond 2^53 too, without rounding to a double first);
#' any other value is an error of class `safetensors_error_conversion` that
#' names it: out of range (2^63 as I64 and 2^64 as U64 included: they are
#' just past those dtypes' largest values, which no double holds), beyond
#' the largest value of a float dtype (F6 and F4 included, which other
#' tools saturate), a fraction for an integer dtype, `NaN` or an infinity
#' where the dtype has none, `NA` in an integer or logical vector. Nothing
#' is clamped or wrapped around. F8_E8M0 holds powers of two from 2^-127
#' to 2^127 and no zero: zero, negatives, and values that round below
#' 2^-127 are errors. `NA` in a double vector is stored as F64's `NA`, or
#' as `NaN` in a narrower float. The array `dim` becomes the shape, and
#' elements are stored so that Python's `t[i - 1, j - 1, ...]` is
#' `x[i, j, ...]`. A vector without `dim` is a 1-D tensor, except a length-one
#' vector with attribute `shape = integer(0)`, which is a scalar.
#'
#' Other objects (torch tensors, for example) are written through their
#' [safe_tensor_meta()] and [safe_tensor_buffer()] methods, one tensor at a
#' time, and a raw vector with `"dtype"` and `"shape"` attributes (as
#' `framework = "raw"` returns) is written as the bytes it holds. Either is
#' converted, by the rules above, when `dtype` asks for another dtype than
#' its own (a value that can't be converted is then named by its position
#' in the tensor's row-major order).
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
#' them with (a name in Latin-1 is converted). A string that can't be
#' converted (bytes that are not valid in its encoding, such as `"bad\xff"`
#' in a UTF-8 session, or a string marked `"bytes"`) is an error of class
#' `safetensors_error_invalid_argument` that shows it, before anything is
#' written; nothing is replaced. Every tensor needs a name, and one may be
#' the empty name `""`, which the format allows (PyTorch's forward hooks
#' name an output so): `list(w = x, y)` saves `y` as `""`, while a list
#' without names, or with two tensors without one, is an error that names
#' them.
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
#' connection is not written atomically, and is left positioned after the
#' file. A [file()] connection opened for binary writing (as
#' `torch::torch_save()` opens one) is written as the file it is: once the
#' header, written through the connection, shows up in the file at its
#' path, the engine writes the tensors (framework tensors, such as torch's)
#' into that file in place, without the copies of R's connection code. A
#' connection that can't be written is a classed error:
#' `safetensors_error_closed` for one already closed,
#' `safetensors_error_invalid_argument` for one open in text mode or for
#' reading only, `safetensors_error_io` for one that fails (R's own error as
#' the condition's `parent`).
#'
#' @param tensors A named list of tensors: R vectors or arrays (double,
#'   integer, logical, raw, complex or bit64's integer64), or objects with
#'   [safe_tensor_meta()] and [safe_tensor_buffer()] methods. Names must be
#'   unique and not `"__metadata__"` (see "Names and metadata").
#' @param path A file path, a folder (see "Files, folders and shard
#'   sets"), or a binary connection (opened for writing, or not yet opened,
#'   in which case it is opened and closed again).
#' @param ... `framework`, which safetensors 0.2.x accepted and ignored, is
#'   ignored too. Any other argument is an error of class
#'   `safetensors_error_invalid_argument` that names it and suggests the
#'   argument meant (`metdata = ` is `metadata =` misspelled).
#' @param metadata `NULL` (the default) for none, or a named list or
#'   character vector of single strings, stored as the file's
#'   `__metadata__`.
#' @param dtype `NULL` (the default) to use each tensor's `"dtype"` attribute
#'   or the default for its R type; a single dtype name such as `"BF16"` (or
#'   `"bfloat16"`, in any case), which a floating-point dtype applies to the
#'   floating-point tensors and any other dtype to all; or a named character
#'   vector of dtypes for the tensors it names. An unknown name is an error of class
#'   `safetensors_error_invalid_argument` suggesting the closest known one.
#' @param sync Whether to flush the file to disk (fsync) before renaming it
#'   over the target. Default `TRUE`. A connection is flushed to disk only
#'   when it is a file connection written in place (see above) and `sync =
#'   TRUE` is given explicitly; other connections never are, as R's own
#'   writes to connections are not.
#' @inheritSection safe_load_file Threads
#' @param max_shard_size `NULL` (the default) to write one file, or the
#'   largest shard of a sharded checkpoint: a number of bytes, or a string
#'   such as `"5GB"` (units B, kB, MB, GB, TB are powers of 1000; KiB, MiB,
#'   GiB, TiB powers of 1024; case is ignored). See "Sharded checkpoints".
#' @return `safe_save_file()` returns the path written, invisibly: `path`
#'   (the `model.safetensors` in it for a folder, the single file for an
#'   index path), or for a sharded checkpoint the path of its index.
#'   `safe_serialize()` returns a raw vector.
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
#' [safe_open()], [safe_load_file()], [safe_info()] and [safe_metadata()]
#' read a checkpoint from its index, its folder, or the path it was saved
#' to.
#' @section Files, folders and shard sets:
#' A save to a file path `dir/NAME` (or to a folder, which is
#' `dir/model.safetensors`, or to an index path `dir/NAME.index.json`)
#' replaces the checkpoint of that name, whatever its form was and
#' whatever form the save takes: the single file `dir/NAME`, or the index
#' `dir/NAME.index.json` and the shards it names. So loading the path given,
#' the folder, or the path returned gives exactly the tensors saved. A
#' folder reads as its `model.safetensors` if it has one, else its
#' `model.safetensors.index.json` (a single file takes precedence over an
#' index of the same name, as in transformers), and a file path that does
#' not exist as the index beside it. A single file saved over a shard set
#' removes the index and the shards it names; shards saved over a single
#' file remove it. Files that the replaced index doesn't name (other
#' checkpoints, configurations, tokenizers) are never touched. Shards keep
#' their standard names from one save to the next.
#'
#' A save never leaves a partial or mixed checkpoint. Its files are
#' written under temporary names first (`.NAME.<id>.tmp`, or no name at
#' all on Linux), and replace the old ones in one step: the single file is
#' renamed over its path; a shard set's index, which names the save's id
#' while its shards are still under their temporary names, is renamed into
#' place (and a single file it replaces removed), then the shards are
#' renamed to their names, the replaced checkpoint's other files removed,
#' and the index written again without the id. A save that fails (a value
#' that can't be converted, a full disk, a folder that can't be written, an
#' interrupt) leaves the old checkpoint exactly as it was and no new file;
#' its error names the file it was writing (a shard by its final name),
#' never a temporary one. Saves to one folder run one at a time (each
#' holds a lock on the folder, which it releases when it ends, as the
#' system does when its process dies).
#'
#' A save killed at any point (SIGKILL, a crash, a power cut after the
#' file system has the data) leaves a folder that loads as the complete
#' old or the complete new checkpoint. It may leave temporary files
#' (`.NAME.<id>.tmp`, `.NAME.index.json.<id>.old`, `.NAME.<pid>-<n>.tmp`)
#' and, if it was killed after its commit, files of the checkpoint it
#' replaced; the next save to that name finishes or removes them (a killed
#' save's committed shards are renamed into place, everything else
#' removed). Readers in other processes never get a mix of two saves:
#' a shard still under its temporary name is read there, and a reader
#' whose checkpoint is replaced while it opens it starts over (an error of
#' class `safetensors_error_file_changed` if that keeps happening 50
#' times). These guarantees need a local file system; on a network file
#' system without file locks, saves to one folder are not kept apart.
#'
#' A `path` that is a symbolic link is followed: the file it names is
#' replaced (and the link kept), or created if the link dangles; a link
#' to a folder is that folder; shards saved through a link are written
#' beside the file it names, and loading the link then reads their index.
#' A FIFO, a device (such as `/dev/null`) or a socket is refused, with an
#' error of class `safetensors_error_io`, before anything is written (a
#' save would otherwise replace it with a regular file); to write to one,
#' pass a connection, such as `file("/dev/null", "wb")`.
#' @section Progress:
#' In an interactive session whose output can redraw it (a terminal,
#' RStudio), saving more than 64 MiB of tensors to a file shows a progress
#' bar over the bytes written once it has taken two seconds, and removes it
#' when done; option `safetensors.progress = FALSE` turns it off (see
#' [safetensors-package]).
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
  check_required(tensors)
  check_required(path)
  # `...` exists for safetensors 0.2.x, whose writers accepted and ignored
  # arguments such as `framework`; anything else is a mistake (a misspelled
  # `metdata =` would otherwise write the file without its metadata).
  check_dots_empty(..., .allow = "framework", .example = "dtype = \"F32\"")
  check_not_hf(path)
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
  # A connection is flushed to disk only when asked to (`sync` given).
  write_spec(spec, "connection", path, sync = !missing(sync) && sync)
  invisible(path)
}

#' @rdname safe_save_file
#' @export
safe_serialize <- function(tensors, ..., metadata = NULL, dtype = NULL) {
  check_required(tensors)
  check_dots_empty(..., .allow = "framework", .example = "dtype = \"F32\"")
  write_spec(tensor_spec(tensors, dtype, metadata), "raw")
}
