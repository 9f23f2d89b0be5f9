#' Write a file tensor by tensor, or block by block
#'
#' `safe_writer()` writes a checkpoint larger than memory: declare its
#' tensors first (names, dtypes and shapes), then write each tensor whole
#' or in blocks of rows with `w$write()`, in any order, and `close(w)`.
#' Only the block being written is in memory. The header is known from the
#' declaration, so every block goes straight to its place in the file.
#'
#' @section Writing:
#' * `w$write(name, x, rows = NULL)` writes tensor `name` whole, or with
#'   `rows`, the rows of its first dimension that `x` holds: a range of
#'   whole numbers in order, 1-based (`rows = 1:1000`, then
#'   `rows = 1001:2000`), as in `x[rows, , ]`. Blocks may come in any order
#'   and be of any size. `x` is:
#'   * an R vector or array of the block's values, which `x[i, j]` gives
#'     as Python's `t[i-1, j-1]` (as [safe_save_file()] writes arrays):
#'     an array whose `dim` is the block's shape, or a vector of its
#'     length, read in R's column-major order as `array(x, dim)` would
#'     (for a one-dimensional tensor, any vector). Values are converted to
#'     the declared dtype as `safe_save_file(dtype = )` converts them:
#'     floating-point dtypes round to nearest, ties to even, and a value a
#'     dtype can't hold (a fraction or `NA` for an integer dtype, out of
#'     range) is an error of class `safetensors_error_conversion`;
#'   * a raw vector without `dim`: the block's bytes as stored (row-major,
#'     little-endian), in the declared dtype, or in the dtype of its
#'     `"dtype"` attribute (as `safe_load_file(framework = "raw")` returns
#'     tensors), converted;
#'   * a tensor of a framework such as torch (see [safetensors_frameworks]),
#'     converted from its dtype to the declared one.
#'
#'   It returns the writer, invisibly.
#' * `close(w)` checks that every row of every tensor was written and
#'   commits the file (or shard set) as [safe_save_file()] does: renamed
#'   into place at once, replacing what the path held as a whole. It
#'   returns the path written (the index for shards), invisibly. Closing
#'   again does nothing.
#' * `w$abort()` discards everything written; nothing is left at `path`.
#' * `print(w)` lists the tensors declared and the rows written of each.
#'
#' @section Errors:
#' A `w$write()` that fails writes nothing that counts: the writer stays
#' usable, the rows it was given count as not written, and the block can
#' be written again. Its errors:
#' * `safetensors_error_tensor_not_found`: `name` was not declared;
#' * `safetensors_error_already_written`: some of the rows were written
#'   already (a block written twice, or overlapping another);
#' * `safetensors_error_shape_mismatch`: `x` is not the shape of the rows
#'   (fields `tensor` and `expected`, the shape they need), or a raw
#'   vector's length is not their size in bytes;
#' * `safetensors_error_conversion`: a value the declared dtype can't hold;
#' * `safetensors_error_misaligned`: rows of a sub-byte tensor (F4, F6)
#'   that don't start and end on a byte boundary;
#' * `safetensors_error_invalid_argument`: `rows` is not a range of rows of
#'   the tensor, or `x` is not a tensor.
#'
#' `close(w)` while rows are missing is an error of class
#' `safetensors_error_incomplete_write` naming the tensors (field
#' `tensors`); nothing is written at `path`, and the writer stays open, so
#' that the missing rows can be written and `close(w)` called again (or
#' `w$abort()`). A writer that is interrupted, or garbage-collected
#' without being closed, leaves nothing at `path`. Using a closed writer is
#' an error of class `safetensors_error_closed`.
#'
#' @section The folder:
#' The file is written as [safe_save_file()] writes it: under a temporary
#' name (anonymous where the system allows, so a killed R process leaves
#' nothing), holding the lock of the folder, as safe_save_file() does,
#' until it is closed. Other processes saving to that folder wait until
#' then; a save to that folder from the same R session is an error of
#' class `safetensors_error_io` (it would wait for itself).
#'
#' @param path Where to write: a file path, or a folder (the checkpoint
#'   `model.safetensors` in it); as for [safe_save_file()]. The file is
#'   written under a temporary name until closed.
#' @param layout The tensors to write, as a data frame with columns `name`
#'   (character), `dtype` (dtype names, any spelling [safe_save_file()]
#'   takes, such as `"BF16"` or `"float32"`) and `shape` (a list of
#'   integer vectors, outermost dimension first, as in Python; `integer(0)`
#'   for a scalar). Other columns are ignored, so [safe_info()] of another
#'   file is a layout. The tensors are written in this order in the file.
#' @param metadata A named character vector or list of strings, the
#'   file's `__metadata__`; default `NULL`, none.
#' @param max_shard_size As for [safe_save_file()]: the largest shard, in
#'   bytes or as a size such as `"5GB"`; tensors are grouped into shards in
#'   the order of `layout`. Default `NULL`: one file.
#' @param sync Whether to flush the file to disk before it is renamed into
#'   place; default `TRUE`, as [safe_save_file()].
#' @return A writer, an object of class `safetensors_writer`.
#' @seealso [safe_convert()], which streams a checkpoint through a writer.
#' @export
#' @examples
#' path <- tempfile(fileext = ".safetensors")
#' layout <- data.frame(name = c("w", "b"), dtype = c("BF16", "F32"))
#' layout$shape <- list(c(1000L, 4L), 4L)
#' w <- safe_writer(path, layout)
#' # The 1000 rows of `w` in two blocks, the second first
#' w$write("w", matrix(2, 500, 4), rows = 501:1000)
#' w$write("w", matrix(1, 500, 4), rows = 1:500)
#' w
#' w$write("b", c(0.5, 0.25, 0, 1))
#' close(w)
#' safe_info(path)
#'
#' # A file's layout, from another file
#' src <- system.file("extdata", "example.safetensors", package = "safetensors")
#' info <- safe_info(src)
#' w <- safe_writer(path, info, metadata = safe_metadata(src))
#' for (name in info$name) w$write(name, safe_load_file(src, tensors = name)[[1]])
#' close(w)
#' unlink(path)
safe_writer <- function(path, layout, metadata = NULL, max_shard_size = NULL, sync = TRUE) {
  check_required(path)
  check_required(layout)
  check_string(path)
  check_not_hf(path)
  check_bool(sync)
  lay <- check_layout(layout)
  metadata <- check_metadata(metadata, environment())
  limit <- if (is.null(max_shard_size)) Inf else parse_size(max_shard_size)
  open_writer(path, lay, metadata, limit, sync)
}

# The layout of safe_writer(): `list(names, dtypes, shapes)`, the shapes as
# double vectors (outermost first).
check_layout <- function(layout, call = parent.frame()) {
  cols <- c("name", "dtype", "shape")
  if (!is.list(layout) || !all(cols %in% names(layout))) {
    st_abort(
      "invalid_argument",
      c(
        "{.arg layout} must be a data frame with columns {.field name}, {.field dtype} and {.field shape}.",
        i = if (is.list(layout) && length(names(layout)) > 0) "Its columns are {.field {names(layout)}}.",
        i = "{.fn safe_info} of a file gives one."
      ),
      call = call
    )
  }
  n <- length(layout$name)
  if (!is.character(layout$name) || anyNA(layout$name) ||
    length(layout$dtype) != n || length(layout$shape) != n) {
    st_abort("invalid_argument", "{.arg layout} must have a name (a string), a dtype and a shape for each tensor.", call = call)
  }
  nms <- utf8_strings(layout$name, "tensor name", call)
  check_unique(nms, "duplicate_name", "Each tensor name in {.arg layout} must be unique.", call)
  if ("__metadata__" %in% nms) {
    st_abort("invalid_argument", "A tensor can't be named {.val __metadata__}; that key holds the metadata.", call = call)
  }
  if (!is.character(layout$dtype) || anyNA(layout$dtype)) {
    st_abort("invalid_argument", "{.field dtype} of {.arg layout} must be dtype names, such as {.val F32}.", call = call)
  }
  dtypes <- as_dtype(layout$dtype, nms, call = call)
  shapes <- lapply(seq_len(n), function(i) {
    s <- layout$shape[[i]]
    ok <- is.numeric(s) && is.null(dim(s)) && !anyNA(s) && all(s >= 0) && all(s == floor(s)) && all(s < 2^53)
    if (!ok) {
      st_abort(
        "invalid_argument",
        "The shape of tensor {.val {nms[[i]]}} in {.arg layout} must be whole numbers from 0, not {value_friendly(s)}.",
        tensor = nms[[i]],
        call = call
      )
    }
    as.numeric(s)
  })
  list(names = nms, dtypes = dtypes, shapes = shapes)
}

# A writer of the tensors `lay` (check_layout()) to the checkpoint `path`
# names (as save_checkpoint() resolves it), in shards of at most `limit`
# bytes: the save begun (the folder locked, killed saves cleaned up), and
# one block file per shard (src/rust/src/writer.rs), each under its
# temporary name. The writer is an environment of class
# safetensors_writer; its methods are closures over it.
open_writer <- function(path, lay, metadata, limit, sync, call = parent.frame()) {
  to <- save_target(path, call)
  shown <- to$shown
  check <- to$check
  sizes <- vapply(seq_along(lay$names), function(i) tensor_bytes(lay$dtypes[[i]], lay$shapes[[i]]), numeric(1))
  shard <- group_by_size(sizes, limit)
  n <- max(c(0L, shard))
  ck <- check(begin_save(to$base))
  w <- new.env(parent = emptyenv())
  w$save <- ck$save
  w$names <- lay$names
  w$dtypes <- lay$dtypes
  w$shapes <- lay$shapes
  w$sizes <- sizes
  w$shard <- shard
  # Each tensor's position in its shard's file.
  w$pos <- as.integer(stats::ave(seq_along(shard), shard, FUN = seq_along))
  w$sync <- sync
  w$state <- "open"
  w$label <- shown
  w$files <- list()
  w$file_names <- character()
  ok <- FALSE
  on.exit(if (!ok) writer_discard(w), add = TRUE)
  desc <- function(k, metadata) {
    list(
      tensors = list(), names = lay$names[k], dtypes = lay$dtypes[k], shapes = lay$shapes[k],
      kinds = character(), exact = logical(), metadata = metadata, from = character()
    )
  }
  threads <- st_threads(call)
  if (n <= 1) {
    w$files <- list(check(placed_open_(desc(seq_along(lay$names), metadata), ck$target, sync, threads)))
    w$shard[] <- 1L
  } else {
    for (s in seq_len(n)) {
      sh <- check(save_shard_(ck$save, s, n))
      w$file_names[[s]] <- sh$name
      w$files[[s]] <- check(placed_open_(desc(which(shard == s), metadata), sh$temp, sync, threads),
        file.path(dirname(shown), sh$name))
    }
    w$result <- paste0(shown, ".index.json")
  }
  w$result <- w$result %||% shown
  w$write <- writer_method_write(w)
  w$abort <- writer_method_abort(w)
  ok <- TRUE
  class(w) <- "safetensors_writer"
  w
}

# Abandons every file of writer `w` and its save: nothing is left at its
# path, and its folder is released.
writer_discard <- function(w) {
  for (f in w$files) placed_abort_(f)
  if (!is.null(w$save)) save_abort_(w$save)
  invisible()
}

writer_method_write <- function(w) {
  # Errors cite the user's `w$write(...)` (see error_frame()).
  .st_entry <- TRUE
  function(name, x, rows = NULL) {
    check_required(name)
    check_required(x)
    writer_write(w, name, x, rows)
    invisible(w)
  }
}

writer_method_abort <- function(w) {
  .st_entry <- TRUE
  function() {
    if (identical(w$state, "open")) {
      writer_discard(w)
      w$state <- "aborted"
    }
    invisible(w)
  }
}

# An error unless writer `w` is open.
check_writer_open <- function(w, call) {
  if (!identical(w$state, "open")) {
    st_abort(
      "closed",
      "The writer of {.file {w$label}} is {if (identical(w$state, 'aborted')) 'aborted' else 'closed'}.",
      call = call
    )
  }
}

# The rows of tensor shape `shape`: its first extent, 1 for a scalar.
shape_rows <- function(shape) if (length(shape) == 0) 1 else shape[[1]]

# Writes block `rows` (NULL: all) of tensor `name` of writer `w` from `x`.
writer_write <- function(w, name, x, rows, call = parent.frame()) {
  check_writer_open(w, call)
  if (!is_string(name)) {
    st_abort("invalid_argument", "{.arg name} must be a single string, not {.obj_type_friendly {name}}.", call = call)
  }
  i <- match(name, w$names)
  if (is.na(i)) {
    near <- closest_name(name, w$names)
    st_abort(
      "tensor_not_found",
      c(
        "Tensor {.val {name}} was not declared in the writer's layout.",
        i = if (!is.null(near)) "Did you mean {.val {near}}?"
      ),
      tensor = name,
      call = call
    )
  }
  shape <- w$shapes[[i]]
  r <- writer_rows(rows, shape, name, call)
  block <- if (length(shape) == 0) shape else c(r[[2]], shape[-1])
  input <- block_input(x, block, w$dtypes[[i]], name, call)
  writer_put(w, i, r[[1]], r[[2]], input$x, input$kind, input$from, call)
}

# Writes rows `[r0, r0 + n)` (0-based) of tensor `i` of writer `w` from
# `x` of `kind` (see placed_write_()); `from`: the dtype of bytes.
writer_put <- function(w, i, r0, n, x, kind, from, call) {
  writer_check(w, i, placed_write_(w$files[[w$shard[[i]]]], w$pos[[i]], r0, n, x, kind, from), call)
}

# `res`, unless it is an error of the Rust side in writing tensor `i` of
# writer `w`: then that error, classed.
writer_check <- function(w, i, res, call) {
  if (inherits(res, "safetensors_rust_error")) {
    st_check(res, sprintf("Can't write tensor \"%s\" to %s.", w$names[[i]], describe_source(w$label)), call = call)
  }
  res
}

# `rows` of a tensor of `shape` as c(first row, count), 0-based.
writer_rows <- function(rows, shape, name, call) {
  total <- shape_rows(shape)
  if (is.null(rows)) {
    return(c(0, total))
  }
  if (length(shape) == 0) {
    st_abort(
      "invalid_argument",
      "Tensor {.val {name}} is a scalar, written whole: {.arg rows} must be {.code NULL}.",
      tensor = name, call = call
    )
  }
  ok <- is.numeric(rows) && is.null(dim(rows)) && length(rows) > 0 && !anyNA(rows) &&
    all(rows == floor(rows)) && all(diff(rows) == 1)
  if (!ok) {
    st_abort(
      "invalid_argument",
      c(
        "{.arg rows} must be a range of row numbers in order, such as {.code 1:100}, not {value_friendly(rows)}.",
        i = "Write other rows with another call."
      ),
      tensor = name, call = call
    )
  }
  if (rows[[1]] < 1 || rows[[length(rows)]] > total) {
    st_abort(
      "invalid_argument",
      c(
        "{.arg rows} must be within the {total} row{?s} of tensor {.val {name}}.",
        x = if (rows[[1]] == rows[[length(rows)]]) "Row {rows[[1]]} was given." else "Rows {rows[[1]]} to {rows[[length(rows)]]} were given."
      ),
      tensor = name, call = call
    )
  }
  c(rows[[1]] - 1, length(rows))
}

# What writer_put() takes for the block `x` of shape `block` (rows of a
# tensor of dtype `dtype`): `list(x, kind, from)`.
block_input <- function(x, block, dtype, name, call) {
  mismatch <- function(what) {
    st_abort(
      "shape_mismatch",
      c(
        "The block of tensor {.val {name}} must have shape {format_shape(block)}.",
        x = what
      ),
      tensor = name,
      expected = block,
      call = call
    )
  }
  if (is_integer64(x) || (!is.object(x) && typeof(x) %in% names(default_dtypes()) && !(is.raw(x) && is.null(dim(x))))) {
    d <- dim(x)
    if (is.null(d)) {
      if (length(x) != prod(block)) {
        mismatch(sprintf("It has %s value%s, not %s.", format_count(length(x)), if (length(x) == 1) "" else "s", format_count(prod(block))))
      }
    } else if (length(d) != max(1, length(block)) || any(d != if (length(block) == 0) 1 else block)) {
      mismatch(sprintf("It has shape %s.", format_shape(d)))
    }
    return(list(x = x, kind = if (is_integer64(x)) "integer64" else "values", from = ""))
  }
  if (is.raw(x)) {
    shape <- attr(x, "shape", exact = TRUE)
    if (!is.null(shape) && (length(shape) != length(block) || any(shape != block))) {
      mismatch(sprintf("Its {.val shape} attribute is %s.", format_shape(shape)))
    }
    d <- attr(x, "dtype", exact = TRUE)
    from <- if (is_string(d)) as_dtype(d, name, call = call) else dtype
    need <- tensor_bytes(from, block)
    if (length(x) != need) {
      mismatch(sprintf("It has %s bytes; its rows need %s as %s.", format_count(length(x)), format_count(need), from))
    }
    return(list(x = x, kind = "bytes", from = from))
  }
  if (is.object(x) && !is.data.frame(x) && !is.factor(x)) {
    meta <- safe_tensor_meta(x)
    shape <- as.numeric(unlist(meta$shape))
    if (length(shape) != length(block) || any(shape != block)) {
      mismatch(sprintf("It has shape %s.", format_shape(shape)))
    }
    from <- as_dtype(meta$dtype, name, call = call)
    spec <- list(tensors = list(x), names = name, shapes = list(block), from = from)
    return(list(x = framework_bytes(spec, 1, call), kind = "bytes", from = from))
  }
  st_abort(
    "invalid_argument",
    "The block of tensor {.val {name}} must be an R vector or array, a raw vector or a framework's tensor, not {.obj_type_friendly {x}}.",
    tensor = name,
    call = call
  )
}

# The rows written of each tensor of writer `w`, in the layout's order.
writer_rows_written <- function(w) {
  out <- numeric(length(w$names))
  for (s in seq_along(w$files)) {
    k <- which(w$shard == s)
    out[k] <- placed_rows_(w$files[[s]])
  }
  out
}

# Whether each tensor of writer `w` is complete.
writer_complete <- function(w) {
  total <- vapply(w$shapes, shape_rows, numeric(1))
  empty <- vapply(w$shapes, function(s) prod(s) == 0, logical(1))
  empty | writer_rows_written(w) == total
}

#' @export
close.safetensors_writer <- function(con, ...) {
  check_dots_empty(...)
  w <- con
  if (!identical(w$state, "open")) {
    return(invisible(if (identical(w$state, "closed")) w$result))
  }
  done <- writer_complete(w)
  if (!all(done)) {
    missing <- w$names[!done]
    written <- writer_rows_written(w)[!done]
    total <- vapply(w$shapes[!done], shape_rows, numeric(1))
    lines <- sprintf(
      "%s: %s of %s row%s written.", cli_escape(encodeString(missing, quote = "\"")),
      vapply(written, format_count, ""), vapply(total, format_count, ""), ifelse(total == 1, "", "s")
    )
    if (length(lines) > 10) lines <- c(lines[1:10], sprintf("... and %d more.", length(lines) - 10))
    st_abort(
      "incomplete_write",
      c(
        "Can't close the writer of {.file {w$label}}: {length(missing)} tensor{?s} {?is/are} not fully written.",
        stats::setNames(lines, rep("x", length(lines))),
        i = "Write the missing rows and close it again, or discard the file with {.code w$abort()}."
      ),
      tensors = missing,
      call = environment()
    )
  }
  check <- function(res, target = w$label) {
    if (inherits(res, "safetensors_rust_error")) st_check(res, sprintf("Can't write %s.", describe_source(target)), call = environment())
    res
  }
  # Whatever happens now, the writer is over: on an error nothing is left.
  on.exit(if (!identical(w$state, "closed")) {
    writer_discard(w)
    w$state <- "aborted"
  }, add = TRUE)
  if (length(w$files) == 1 && length(w$file_names) == 0) {
    check(placed_commit_(w$files[[1]]))
    check(save_commit_single_(w$save))
  } else {
    for (s in seq_along(w$files)) {
      check(placed_commit_(w$files[[s]]), file.path(dirname(w$label), w$file_names[[s]]))
    }
    check(save_commit_shards_(w$save, w$names, w$file_names[w$shard], sum(w$sizes), w$sync), w$result)
  }
  w$state <- "closed"
  invisible(w$result)
}

#' @export
format.safetensors_writer <- function(x, ..., n = 20, width = getOption("width", 80)) {
  w <- x
  state <- w$state
  k <- length(w$names)
  head <- sprintf(
    "<safetensors_writer> %s (%s): %s tensor%s, %s",
    format_file(w$label), state, format_count(k), if (k == 1) "" else "s", format_bytes(sum(w$sizes))
  )
  if (state != "open") {
    return(head)
  }
  written <- writer_rows_written(w)
  total <- vapply(w$shapes, shape_rows, numeric(1))
  done <- writer_complete(w)
  head <- c(head, sprintf("%s of %s written", format_count(sum(done)), format_count(k)))
  head <- paste(head, collapse = "; ")
  show <- seq_len(min(k, n))
  table <- format_columns(
    c("name", "dtype", "shape", "rows written"),
    list(
      w$names[show], w$dtypes[show],
      vapply(w$shapes[show], format_shape, character(1)),
      ifelse(
        done[show], "all",
        sprintf("%s of %s", vapply(written[show], format_count, ""), vapply(total[show], format_count, ""))
      )
    ),
    width = width
  )
  c(head, table, if (k > n) sprintf("# ... and %s more", format_count(k - n)))
}

#' @export
print.safetensors_writer <- function(x, ..., n = 20) {
  cat(format(x, n = n), sep = "\n")
  invisible(x)
}
