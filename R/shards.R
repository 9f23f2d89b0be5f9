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
        "{.arg {arg}} must be a positive number of bytes or a size such as {.val 5GB} or {.val 500MiB}.",
        x = "It is {.obj_type_friendly {x}}{if (is_string(x)) paste0(' ', encodeString(x, quote = '\"')) else ''}."
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

# safe_save_file() with `max_shard_size`: writes the shards and their index,
# or a single file when everything fits in one shard (as transformers does).
save_shards <- function(spec, path, max_shard_size, sync, call = parent.frame()) {
  limit <- parse_size(max_shard_size, call = call)
  check_string(path, call = call)
  path <- path.expand(path)
  base <- if (dir.exists(path)) {
    file.path(path, "model.safetensors")
  } else {
    sub("\\.index\\.json$", "", path)
  }
  sizes <- spec_sizes(spec)
  shard <- group_by_size(sizes, limit)
  n <- max(c(0L, shard))
  bar <- if (progress_wanted(sizes)) progress_bar("Saving", path, sum(sizes))
  write <- function(target, k) {
    write_spec(spec_subset(spec, k), "file", target, sync, bar = bar, call = call)
  }
  if (n <= 1) {
    write(base, seq_along(sizes))
    return(base)
  }
  stem <- sub("\\.safetensors$", "", basename(base))
  files <- sprintf("%s-%05d-of-%05d.safetensors", stem, seq_len(n), n)
  for (s in seq_len(n)) {
    write(file.path(dirname(base), files[[s]]), which(shard == s))
  }
  index <- paste0(base, ".index.json")
  res <- write_index_(index, sum(sizes), spec$names, files[shard], sync)
  st_check(res, sprintf("Can't write %s.", describe_source(index)), call = call)
  index
}
