# Sharded checkpoints as transformers writes them: shards
# `model-00001-of-0000N.safetensors` beside `model.safetensors.index.json`,
# whose weight map names the shard of every tensor. This file reads the
# index (for R/open.R, which opens the shards as one handle) and writes
# shard sets (for safe_save_file() with `max_shard_size`, through
# R/write.R). The index is parsed and written in Rust
# (src/rust/src/shards.rs), so no JSON package is needed; an index URL is
# fetched over HTTP (R/http.R).

# The index at `path` (a file or a URL): `list(names, files, metadata)`.
read_index <- function(path, call = parent.frame()) {
  if (is_url(path)) {
    # The limit of the format's headers, as for index files.
    bytes <- http_get(path, limit = 1e8, call = call)
    return(check_part(parse_index_(bytes), list(label = url_redact(path)), call = call))
  }
  check_part(read_index_(path), list(label = path), call = call)
}

# Parses a size such as "5GB", "500MB", "2GiB" or a number of bytes.
parse_size <- function(x, arg = "max_shard_size", call = parent.frame()) {
  bad <- function() {
    st_abort(
      "invalid_argument",
      c(
        paste(
          "{.arg {arg}} must be a positive number of bytes or a size such as {.val 5GB} or {.val 500MiB},",
          "not {value_friendly(x)}."
        ),
        i = if (is_string(x)) "Units: B, kB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024)."
      ),
      call = call
    )
  }
  if (is.numeric(x) && length(x) == 1 && !is.na(x) && x >= 1 && is.finite(x)) {
    return(floor(x))
  }
  if (!is_string(x)) bad()
  m <- regmatches(x, regexec("^\\s*([0-9]+(\\.[0-9]+)?)\\s*([A-Za-z]*)\\s*$", x))[[1]]
  if (length(m) == 0) bad()
  units <- c(
    B = 1, KB = 1e3, MB = 1e6, GB = 1e9, TB = 1e12,
    KIB = 2^10, MIB = 2^20, GIB = 2^30, TIB = 2^40
  )
  unit <- toupper(m[[4]])
  if (unit == "") unit <- "B"
  if (!unit %in% names(units)) bad()
  size <- floor(as.numeric(m[[2]]) * units[[unit]])
  if (size < 1) bad()
  size
}

# safe_save_file() into a checkpoint: shards of at most `limit` bytes and
# their index, or a single file when everything fits in one shard (as
# transformers does), replacing the checkpoint that was there as a whole
# (see the section "Sharded checkpoints" of ?safe_save_file): new files
# under names the old checkpoint doesn't use, then the commit (the index
# replaced, or removed for a single file), then the old files removed.
save_shards <- function(spec, path, limit, sync, call = parent.frame()) {
  check_string(path, call = call)
  path <- core_path(path, call)
  base <- if (dir.exists(path)) {
    file.path(path, "model.safetensors")
  } else {
    sub("\\.index\\.json$", "", path)
  }
  dir <- dirname(base)
  index <- paste0(base, ".index.json")
  old <- committed_files(dir, base, index)
  sizes <- spec_sizes(spec)
  shard <- group_by_size(sizes, limit)
  n <- max(c(0L, shard))
  bar <- if (progress_wanted(sizes)) progress_bar("Saving", path, sum(sizes))
  write <- function(target, k) {
    write_spec(spec_subset(spec, k), "file", target, sync, bar = bar, call = call)
  }
  if (n <= 1) {
    write(base, seq_along(sizes))
    # The commit: without the old index, the folder is the new file.
    remove_files(c(if (file.exists(index)) index, setdiff(old, normalizePath(base))))
    return(base)
  }
  stem <- sub("\\.safetensors$", "", basename(base))
  files <- sprintf("%s-%05d-of-%05d.safetensors", stem, seq_len(n), n)
  if (any(normalizePath(file.path(dir, files), mustWork = FALSE) %in% old)) {
    files <- sprintf("%s-%05d-of-%05d.b.safetensors", stem, seq_len(n), n)
  }
  for (s in seq_len(n)) {
    write(file.path(dir, files[[s]]), which(shard == s))
  }
  # The commit: the new index replaces the old one (or the single file,
  # which the index takes precedence over) in one step.
  res <- write_index_(index, sum(sizes), spec$names, files[shard], sync)
  st_check(res, sprintf("Can't write %s.", describe_source(index)), call = call)
  remove_files(setdiff(old, normalizePath(file.path(dir, files))))
  index
}

# The files of the checkpoint `dir` holds now: the shards its index names
# (full paths) and the single file `base`, whichever exist. An index that
# can't be read names nothing (it is replaced all the same).
committed_files <- function(dir, base, index) {
  shards <- if (file.exists(index)) {
    idx <- tryCatch(read_index_(index), error = function(e) NULL)
    if (is.list(idx) && !inherits(idx, "safetensors_rust_error")) file.path(dir, unique(idx$files))
  }
  existing <- c(shards, base)
  normalizePath(existing[file.exists(existing)])
}

# Removes files of a replaced checkpoint; one that can't be removed (open
# elsewhere, on Windows) is left, unreferenced.
remove_files <- function(files) {
  for (f in files) {
    unlink(f)
  }
  invisible()
}
