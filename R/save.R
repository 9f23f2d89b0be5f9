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
#' otherwise: double as F64, integer as I32, logical as BOOL, raw as U8 and
#' complex as C64. An object's `"dtype"` attribute (set by [safe_load_file()])
#' or the `dtype` argument selects another dtype; conversions to narrower
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
#'   integer, logical, raw or complex), or objects with
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
#'   or the default for its R type, a single dtype name such as `"F32"` for
#'   all tensors, or a named character vector of dtypes for some of them.
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
    write_spec(path.expand(path), spec, sync, bar = bar, label = path)
  } else if (inherits(path, "connection")) {
    # An unopened connection is opened only once the tensors are known to be
    # writable: opening a file connection for writing empties the file.
    if (anyNA(spec[[5]])) {
      write_stream(spec, connection_sink(path))
    } else {
      bytes <- st_check(do.call(serialize_, c(spec, list(st_threads()))), "Can't serialize the tensors.")
      if (!isOpen(path)) {
        open(path, "wb")
        on.exit(close(path), add = TRUE)
      }
      writeBin(bytes, path)
    }
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
  spec <- tensor_spec(tensors, dtype, metadata)
  if (anyNA(spec[[5]])) {
    return(write_stream(spec, raw_sink()))
  }
  st_check(do.call(serialize_, c(spec, list(st_threads()))), "Can't serialize the tensors.")
}

#' Raw bytes and description of a framework tensor
#'
#' Generics that [safe_save_file()] and [safe_serialize()] call for tensors
#' that are not plain R vectors: `safe_tensor_meta()` describes the tensor
#' as `list(shape, dtype)` (the shape outermost first, the dtype a
#' safetensors name such as `"F32"`), and `safe_tensor_buffer()` returns its
#' bytes as a raw vector, row-major and little-endian, exactly as they go in
#' the file. Methods for `torch_tensor` are included; other packages (such as
#' pjrt) add methods for their own classes.
#'
#' The writers call `safe_tensor_meta()` for every tensor first (so a
#' tensor they can't write fails before anything is written), then
#' `safe_tensor_buffer()` for one tensor at a time while writing, so only
#' one tensor's bytes are held at a time. A buffer whose length disagrees
#' with the meta is an error of class `safetensors_error_invalid_argument`.
#'
#' @section torch tensors:
#' `safe_tensor_meta()` maps torch's dtype to the file's (see
#' [safetensors_frameworks] for the list); a dtype safetensors has no name
#' for (`torch_cdouble()`, quantized types) is an error of class
#' `safetensors_error_unsupported_dtype`. `safe_tensor_buffer()` copies the
#' tensor's logical values once into the raw vector: non-contiguous tensors
#' (transposed, sliced, expanded) are written as they print, tensors on a
#' GPU are copied to the host, and there is no size limit (torch's
#' `buffer_from_torch_tensor()` copies the underlying storage, ignoring
#' strides and offsets, and takes a 32-bit size: safetensors 0.2.x wrote
#' such tensors with the wrong bytes and crashed on 2 GiB). When writing files,
#' connections or [safe_serialize()] results, torch tensors are copied in
#' pieces of 16 MiB rather than whole (except transposed or permuted ones,
#' whose last dimension is strided). `requires_grad` is not stored.
#'
#' @param x A tensor.
#' @return `safe_tensor_meta()`: a list with elements `shape` and `dtype`.
#'   `safe_tensor_buffer()`: a raw vector.
#' @seealso [safetensors_frameworks] for reading tensors into a framework.
#' @export
#' @examples
#' # A minimal tensor class stored as raw bytes
#' bytes_tensor <- function(bytes, shape) {
#'   structure(list(bytes = bytes, shape = shape), class = "bytes_tensor")
#' }
#' safe_tensor_meta.bytes_tensor <- function(x) list(shape = x$shape, dtype = "U8")
#' safe_tensor_buffer.bytes_tensor <- function(x) x$bytes
#' registerS3method("safe_tensor_meta", "bytes_tensor", safe_tensor_meta.bytes_tensor)
#' registerS3method("safe_tensor_buffer", "bytes_tensor", safe_tensor_buffer.bytes_tensor)
#' raw <- safe_serialize(list(x = bytes_tensor(as.raw(1:6), c(2, 3))))
#' safe_deserialize(raw)$x
#' @examplesIf rlang::is_installed("torch") && torch::torch_is_installed()
#'
#' # torch tensors: the logical values of a transposed tensor, row-major
#' x <- torch::torch_tensor(matrix(1:6, 2, 3), dtype = torch::torch_int32())$t()
#' safe_tensor_meta(x)
#' readBin(safe_tensor_buffer(x), "integer", 6)
#' path <- tempfile(fileext = ".safetensors")
#' safe_save_file(list(x = x), path)
#' safe_load_file(path, framework = "torch")$x
#' safe_load_file(path)$x
safe_tensor_buffer <- function(x) {
  UseMethod("safe_tensor_buffer")
}

#' @rdname safe_tensor_buffer
#' @export
safe_tensor_meta <- function(x) {
  UseMethod("safe_tensor_meta")
}

#' @export
safe_tensor_buffer.default <- function(x) {
  no_tensor_method(x, "safe_tensor_buffer")
}

#' @export
safe_tensor_meta.default <- function(x) {
  no_tensor_method(x, "safe_tensor_meta")
}

no_tensor_method <- function(x, generic, call = parent.frame(2)) {
  st_abort(
    "invalid_argument",
    c(
      "Can't write an object of class {.cls {class(x)}} as a tensor.",
      i = "Tensors are R vectors or arrays, or objects with a {.fn {generic}} method."
    ),
    call = call
  )
}

check_ignored_dots <- function(..., call = parent.frame()) {
  nms <- names(list(...)) %||% rep("", ...length())
  unknown <- setdiff(nms, "framework")
  if (length(unknown) > 0) {
    unknown[unknown == ""] <- "<unnamed>"
    st_warn("ignored_argument", "Ignoring argument{?s} in {.arg ...}: {.arg {unknown}}.")
  }
}

# The R type each R vector type is written as by default.
default_dtype <- c(
  double = "F64", integer = "I32", logical = "BOOL", raw = "U8", complex = "C64"
)

# Describes `tensors` for the Rust writer: the values, names, dtypes, shapes
# (row-major), whether values need the column-major to row-major permutation
# (R arrays) or are bytes to copy (framework buffers), and the metadata.
tensor_spec <- function(tensors, dtype, metadata, call = parent.frame()) {
  if (!is.list(tensors) || (is.object(tensors) && !inherits(tensors, "safetensors_tensors"))) {
    st_abort(
      "invalid_argument",
      "{.arg tensors} must be a named list of tensors, not {.obj_type_friendly {tensors}}.",
      call = call
    )
  }
  nms <- names(tensors)
  if (length(tensors) > 0 && (is.null(nms) || anyNA(nms))) {
    st_abort("invalid_argument", "{.arg tensors} must be a named list; every tensor needs a name.", call = call)
  }
  nms <- nms %||% character()
  dup <- unique(nms[duplicated(nms)])
  if (length(dup) > 0) {
    st_abort(
      "duplicate_name",
      c("Each tensor name must be unique.", x = "Repeated: {.val {dup}}."),
      call = call
    )
  }
  if ("__metadata__" %in% nms) {
    st_abort("invalid_argument", "A tensor can't be named {.val __metadata__}; that key holds the metadata.", call = call)
  }
  dtypes <- resolve_dtypes(tensors, nms, dtype, call)
  n <- length(tensors)
  values <- vector("list", n)
  shapes <- vector("list", n)
  permute <- logical(n)
  for (i in seq_len(n)) {
    x <- tensors[[i]]
    if (is.object(x)) {
      # Framework tensors: described now, their bytes fetched one at a time
      # while writing (write_stream()), so that only one tensor's buffer
      # exists at a time. `permute` NA marks them.
      meta <- safe_tensor_meta(x)
      values[i] <- list(x)
      shapes[[i]] <- as.numeric(unlist(meta$shape))
      dtypes[[i]] <- meta$dtype
      permute[[i]] <- NA
    } else if (is.raw(x) && is.null(dim(x)) && !is.null(attr(x, "shape")) && !is.null(attr(x, "dtype"))) {
      values[i] <- list(x)
      shapes[[i]] <- as.numeric(attr(x, "shape"))
    } else if (typeof(x) %in% names(default_dtype)) {
      values[i] <- list(x)
      shapes[[i]] <- r_shape(x)
      permute[[i]] <- TRUE
    } else {
      st_abort(
        "invalid_argument",
        "Tensor {.val {nms[[i]]}} must be an R vector or array, not {.obj_type_friendly {x}}.",
        call = call
      )
    }
    if (!dtypes[[i]] %in% safe_dtypes) {
      st_abort(
        "invalid_argument",
        c("Tensor {.val {nms[[i]]}} has unknown dtype {.val {dtypes[[i]]}}.", i = "Known dtypes: {.val {safe_dtypes}}."),
        call = call
      )
    }
  }
  metadata <- check_metadata(metadata, call)
  list(
    values, nms, dtypes, shapes, permute,
    if (is.null(metadata)) NULL else names(metadata),
    if (is.null(metadata)) NULL else unname(metadata)
  )
}

r_shape <- function(x) {
  dim(x) %||% if (length(x) == 1 && identical(attr(x, "shape"), integer(0))) integer(0) else length(x)
}

# The dtype of each tensor: the `dtype` argument, else the tensor's "dtype"
# attribute, else the default for its R type.
resolve_dtypes <- function(tensors, nms, dtype, call) {
  out <- vapply(tensors, function(x) {
    d <- attr(x, "dtype", exact = TRUE)
    if (is_string(d)) d else default_dtype[typeof(x)] %||% NA_character_
  }, character(1), USE.NAMES = FALSE)
  out[is.na(out)] <- "U8"
  if (is.null(dtype)) {
    return(out)
  }
  if (!is.character(dtype) || anyNA(dtype) || length(dtype) == 0) {
    st_abort("invalid_argument", "{.arg dtype} must be a character vector of dtype names.", call = call)
  }
  bad <- setdiff(dtype, safe_dtypes)
  if (length(bad) > 0) {
    st_abort(
      "invalid_argument",
      c("{.arg dtype} has unknown dtype{?s} {.val {bad}}.", i = "Known dtypes: {.val {safe_dtypes}}."),
      call = call
    )
  }
  if (is.null(names(dtype))) {
    if (length(dtype) != 1) {
      st_abort("invalid_argument", "{.arg dtype} must be a single dtype or a vector named by tensor.", call = call)
    }
    out[] <- dtype
    return(out)
  }
  unknown <- setdiff(names(dtype), nms)
  if (length(unknown) > 0) {
    st_abort("tensor_not_found", "{.arg dtype} names tensor{?s} not in {.arg tensors}: {.val {unknown}}.", call = call)
  }
  out[match(names(dtype), nms)] <- unname(dtype)
  out
}

check_metadata <- function(metadata, call) {
  if (is.null(metadata)) {
    return(NULL)
  }
  ok_values <- if (is.list(metadata)) {
    all(vapply(metadata, function(v) is.character(v) && length(v) == 1 && !is.na(v), logical(1)))
  } else {
    is.character(metadata) && !anyNA(metadata)
  }
  if (!ok_values || (length(metadata) > 0 && (is.null(names(metadata)) || anyNA(names(metadata))))) {
    st_abort(
      "invalid_argument",
      "{.arg metadata} must be a named list of single strings or a named character vector.",
      call = call
    )
  }
  out <- vapply(metadata, identity, character(1), USE.NAMES = FALSE)
  names(out) <- names(metadata) %||% character()
  if (anyDuplicated(names(out))) {
    st_abort("invalid_argument", "{.arg metadata} names must be unique.", call = call)
  }
  out
}

# Framework tensor `i` of `spec` as bytes, checked against its description.
framework_bytes <- function(spec, i, call, size = NULL) {
  name <- spec[[2]][[i]]
  bytes <- safe_tensor_buffer(spec[[1]][[i]])
  if (!is.raw(bytes)) {
    st_abort(
      "invalid_argument",
      "{.fn safe_tensor_buffer} must return a raw vector, not {.obj_type_friendly {bytes}} (tensor {.val {name}}).",
      call = call
    )
  }
  size <- size %||% tensor_bytes(spec[[3]][[i]], spec[[4]][[i]])
  if (length(bytes) != size) {
    st_abort(
      "invalid_argument",
      c(
        "The buffer of tensor {.val {name}} has {length(bytes)} bytes, but its dtype and shape need {size}.",
        i = "{.fn safe_tensor_buffer} and {.fn safe_tensor_meta} disagree."
      ),
      tensor = name,
      call = call
    )
  }
  bytes
}

# Writes `spec` tensor by tensor to `sink`: the header first, then each
# tensor's bytes, a framework tensor's fetched only when its turn comes and
# dropped after, so at most one framework buffer is in memory at a time (and
# R arrays are converted one at a time). Returns what the sink's finish()
# returns.
write_stream <- function(spec, sink, bar = NULL, call = parent.frame()) {
  lay <- st_check(
    stream_layout_(spec[[2]], spec[[3]], spec[[4]], spec[[6]], spec[[7]]),
    sink$what,
    call = call
  )
  sink$start(sum(lay$sizes) + length(lay$prefix))
  on.exit(sink$abort(), add = TRUE)
  sink$write(lay$prefix, 0)
  # Writes tensor data, moving the cli progress bar if there is one.
  put <- function(bytes, from) {
    sink$write(bytes, from)
    if (!is.null(bar)) {
      cli::cli_progress_update(inc = length(bytes) - from, id = bar)
    }
  }
  permute <- spec[[5]]
  for (i in seq_along(permute)) {
    if (is.na(permute[[i]]) && inherits(spec[[1]][[i]], "torch_tensor")) {
      written <- 0
      torch_write_chunks(spec[[1]][[i]], function(bytes) {
        put(bytes, 0)
        written <<- written + length(bytes)
      })
      if (written != lay$sizes[[i]]) {
        st_abort("invalid_argument", "Tensor {.val {spec[[2]][[i]]}} changed size while it was written.", call = call)
      }
    } else if (is.na(permute[[i]])) {
      put(framework_bytes(spec, i, call, lay$sizes[[i]]), 0)
    } else if (permute[[i]]) {
      # One tensor as a file; its data are the last bytes.
      one <- st_check(
        serialize_(spec[[1]][i], spec[[2]][i], spec[[3]][i], spec[[4]][i], TRUE, NULL, NULL, st_threads()),
        sink$what,
        call = call
      )
      put(one, length(one) - lay$sizes[[i]])
    } else {
      put(spec[[1]][[i]], 0)
    }
  }
  out <- sink$finish()
  on.exit()
  out
}

# Sinks for write_stream(): start(total), write(bytes, from) (bytes `from`,
# 0-based, to the end), finish(), abort(); `what` heads their error
# messages, raised in the caller's `call`.
file_sink <- function(path, sync, label = path, call = parent.frame()) {
  what <- sprintf("Can't write %s.", describe_source(label))
  w <- NULL
  list(
    what = what,
    start = function(total) w <<- st_check(stream_open_(path), what, call = call),
    write = function(bytes, from) st_check(stream_write_(w, bytes, from), what, call = call),
    finish = function() {
      st_check(stream_commit_(w, sync), what, call = call)
      invisible()
    },
    abort = function() if (!is.null(w)) stream_abort_(w)
  )
}

connection_sink <- function(con) {
  opened <- FALSE
  list(
    what = "Can't write the connection.",
    start = function(total) {
      if (!isOpen(con)) {
        open(con, "wb")
        opened <<- TRUE
      }
    },
    # R arrays come as a one-tensor file (`from` > 0): rare beside framework
    # tensors, and the only case that copies.
    write = function(bytes, from) writeBin(if (from == 0) bytes else bytes[-seq_len(from)], con),
    finish = function() {
      if (opened) close(con)
      invisible()
    },
    abort = function() if (opened) close(con)
  )
}

raw_sink <- function(call = parent.frame()) {
  what <- "Can't serialize the tensors."
  out <- NULL
  pos <- 0
  list(
    what = what,
    start = function(total) out <<- st_check(alloc_raw_(total), what, call = call),
    write = function(bytes, from) {
      st_check(raw_put_(out, pos, bytes, from), what, call = call)
      pos <<- pos + length(bytes) - from
    },
    finish = function() out,
    abort = function() NULL
  )
}
