#' Convert a checkpoint in bounded memory
#'
#' `safe_convert()` reads a checkpoint and writes a new one, changing the
#' dtypes of its tensors, renaming them, keeping some, sharding it or
#' merging its shards, block by block: it reads a block of rows of a
#' tensor, converts it, and writes it at its place with [safe_writer()],
#' so memory stays bounded (about 64 MiB) whatever the size of the model.
#'
#' Floating-point conversions round to nearest, ties to even, bit for bit
#' as PyTorch's `$to()` and numpy (and ml_dtypes) do; infinities and NaN
#' stay what they are. A finite value beyond the new dtype's range (above
#' 65504 as F16, say, where `$to()` would give an infinity) is an error of
#' class `safetensors_error_conversion`, as for [safe_save_file()], and
#' so is a fraction or an out-of-range value for an integer dtype: nothing
#' is written at `path` then.
#'
#' @param source The checkpoint to read: anything [safe_open()] opens (a
#'   file, a shard index, a folder holding a checkpoint, an `http(s)://`
#'   URL of a file or index, a Hugging Face Hub path `hf://owner/name`).
#'   Remote files are read a block at a time with range requests.
#' @param path Where to write, as for [safe_save_file()]: a file path, or
#'   a folder (its `model.safetensors`). What `path` held is replaced as a
#'   whole once the new checkpoint is complete; a failure or an interrupt
#'   leaves it as it was.
#' @param dtype The dtypes to write, in any spelling [safe_save_file()]
#'   takes: `NULL` (the default) keeps each tensor's; a single
#'   floating-point dtype (`"BF16"`, `"F16"`, `"F32"`, ...) converts every
#'   floating-point tensor and leaves integer and boolean ones alone (as
#'   "save the model in bfloat16" means); another single dtype converts
#'   every tensor; a vector named by tensor (the names written, after
#'   `rename`) converts those tensors.
#' @param rename `NULL` (the default), a function of the names returning
#'   the new names (`NA` to skip a tensor), or a named character vector of
#'   regular-expression replacements applied in order, each to every match
#'   (`c("^model\\." = "", "self_attn" = "attn")`), where a replacement
#'   `NA` skips the tensors its pattern matches, as for [safe_load_model()].
#'   Two tensors that would get one name, a name that becomes `""`, or a
#'   function that fails are an error of class `safetensors_error_rename`.
#' @param select The tensors to keep (before `rename`): `NULL` (the
#'   default) keeps all; a character vector of names; or a single string
#'   that is not a tensor name, a regular expression (Perl syntax) that the
#'   names to keep match. A name or a pattern that selects nothing is an
#'   error of class `safetensors_error_tensor_not_found`.
#' @param metadata The new file's `__metadata__`: `NULL` (the default)
#'   keeps the source's (for shards, that of the first), or a named
#'   character vector or list of strings that replaces it (`character()`
#'   for none).
#' @param max_shard_size As for [safe_save_file()]: the largest shard, in
#'   bytes or as a size such as `"5GB"`; default `NULL`, one file, which
#'   merges the shards of a sharded source.
#' @param sync Whether to flush the file to disk before it is renamed into
#'   place; default `TRUE`.
#' @return The path written (the index for shards), invisibly.
#' @seealso [safe_writer()], to write a checkpoint block by block from R.
#' @export
#' @examples
#' src <- system.file("extdata", "example.safetensors", package = "safetensors")
#' safe_info(src)
#' out <- tempfile(fileext = ".safetensors")
#' # Floating-point tensors to bfloat16
#' safe_convert(src, out, dtype = "BF16")
#' safe_info(out)
#'
#' # Keep the floating-point tensors, under other names
#' safe_convert(src, out, select = c("weight", "bias"), rename = c("^" = "linear."))
#' names(safe_load_file(out))
#' unlink(out)
safe_convert <- function(source, path, dtype = NULL, rename = NULL, select = NULL, metadata = NULL,
                         max_shard_size = NULL, sync = TRUE) {
  check_required(source)
  check_required(path)
  check_string(path)
  check_not_hf(path)
  check_bool(sync)
  check_rename(rename)
  limit <- if (is.null(max_shard_size)) Inf else parse_size(max_shard_size)
  if (!is.null(metadata)) metadata <- check_metadata(metadata, environment())
  h <- safe_open(source, framework = "raw", backend = "read")
  on.exit(close(h), add = TRUE)
  tab <- handle_table(h)
  keep <- convert_select(select, tab$name)
  new <- rename_names(tab$name[keep], rename, call = environment())
  keep <- keep[!is.na(new)]
  new <- new[!is.na(new)]
  own <- tab$dtype[keep]
  chosen <- chosen_dtypes(dtype, own, new, environment())
  to <- ifelse(is.na(chosen), own, chosen)
  meta <- if (is.null(metadata)) check_metadata(hget(h, "metadata"), environment()) else metadata
  lay <- list(names = new, dtypes = to, shapes = lapply(tab$shape[keep], as.numeric))
  w <- open_writer(path, lay, meta, limit, sync)
  on.exit(if (identical(w$state, "open")) writer_discard(w), add = TRUE)
  sizes <- tab$bytes[keep]
  bar <- if (progress_wanted(sizes)) progress_bar("Converting", source_label(path), sum(sizes))
  for (j in seq_along(keep)) {
    convert_tensor(h, w, tab$name[[keep[[j]]]], j, own[[j]], to[[j]], lay$shapes[[j]], bar)
  }
  invisible(close(w))
}

# The positions in `names` of the tensors `select` keeps (see
# ?safe_convert), in the order of `names`.
convert_select <- function(select, names, call = parent.frame()) {
  if (is.null(select)) {
    return(seq_along(names))
  }
  if (!is.character(select) || anyNA(select) || length(select) == 0) {
    st_abort("invalid_argument", "{.arg select} must be tensor names or a regular expression, not {value_friendly(select)}.", call = call)
  }
  if (length(select) == 1 && !select %in% names) {
    hit <- tryCatch(suppressWarnings(grepl(select, names, perl = TRUE)), error = function(e) {
      st_abort("invalid_argument", "{.arg select} is neither a tensor name nor a valid regular expression: {.val {select}}.", call = call)
    })
    if (!any(hit)) {
      st_abort("tensor_not_found", "{.arg select} matches no tensor name: {.val {select}}.", call = call)
    }
    return(which(hit))
  }
  absent <- setdiff(select, names)
  if (length(absent) > 0) {
    st_abort("tensor_not_found", "{.arg select} names tensor{?s} not in the source: {.val {absent}}.", tensor = absent[[1]], call = call)
  }
  which(names %in% select)
}

# Bytes of the source read per block.
convert_block_bytes <- 16 * 2^20

# Copies tensor `name` of handle `h` (dtype `from`, shape `shape`) to
# tensor `j` of writer `w` (dtype `to`), a block of rows at a time,
# moving progress `bar` (NULL for none). From a local file or a raw
# vector, the rows go from the source to the writer in Rust
# (convert_rows_()), so no R vector is made per block; a remote file's are
# fetched as a slice of raw bytes.
convert_tensor <- function(h, w, name, j, from, to, shape, bar, call = parent.frame()) {
  rank <- length(shape)
  total <- shape_rows(shape)
  row_bytes <- max(1, prod(shape[-1]) * max(dtype_bits(from), dtype_bits(to)) / 8)
  per <- max(1, floor(convert_block_bytes / row_bytes))
  # Blocks of sub-byte tensors start and end on byte boundaries.
  if ((dtype_bits(from) %% 8 != 0 || dtype_bits(to) %% 8 != 0) && per < total) {
    per <- max(8, per - per %% 8)
  }
  at <- match(name, hget(h, "names"))
  part <- hget(h, "parts")[[hget(h, "part_of")[[at]]]]
  remote <- part_is_remote(part)
  r0 <- 0
  repeat {
    n <- min(per, total - r0)
    if (remote) {
      idx <- if (rank == 0 || n == total) list(whole_index) else c(list(seq(r0 + 1, length.out = n)), rep(list(whole_index), rank - 1))
      bytes <- read_slice(h, name, idx, drop = FALSE, call = call)
      writer_put(w, j, r0, n, bytes, "bytes", from, call)
      done <- length(bytes)
    } else {
      done <- writer_check(w, j, convert_rows_(part$ptr, name, w$files[[w$shard[[j]]]], w$pos[[j]], r0, n), call)
    }
    if (!is.null(bar)) cli::cli_progress_update(inc = done, id = bar)
    r0 <- r0 + n
    if (r0 >= total) break
  }
  invisible()
}
