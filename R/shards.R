# Sharded checkpoints as transformers writes them: shards
# `model-00001-of-0000N.safetensors` beside `model.safetensors.index.json`,
# whose weight map names the shard of every tensor. [safe_open()] and
# [safe_load_file()] read them through the index; [safe_save_file()] writes
# them given `max_shard_size`. The index is parsed and written in Rust
# (src/rust/src/shards.rs), so no JSON package is needed.

# Whether `path` names a shard index rather than a safetensors file.
is_index_path <- function(path) {
  is_string(path) && grepl("\\.json$", path, ignore.case = TRUE)
}

# Opens every shard of the index at `path` and presents the tensors of the
# weight map as one handle: shards in file-name order, each shard's tensors
# in file order. The weight map is an allowlist (a shard's other tensors are
# hidden), and each tensor it names must be in the shard it names.
open_index <- function(path, framework, args, backend, call = parent.frame()) {
  check_string(path, call = call)
  path <- path.expand(path)
  idx <- check_part(read_index_(path), list(label = path), call = call)
  files <- sort(unique(idx$files), method = "radix")
  dir <- dirname(path)
  parts <- vector("list", length(files))
  done <- FALSE
  on.exit(
    if (!done) {
      for (p in parts) if (!is.null(p)) close_(p$ptr)
    },
    add = TRUE
  )
  names <- character()
  part_of <- integer()
  for (f in seq_along(files)) {
    part <- open_part(file.path(dir, files[[f]]), backend, call = call)
    part$file <- files[[f]]
    parts[[f]] <- part
    wanted <- idx$names[idx$files == files[[f]]]
    have <- part$info$name
    absent <- wanted[!wanted %in% have]
    if (length(absent) > 0) {
      st_abort(
        "invalid_index",
        c(
          cli_escape(source_what(path)),
          x = "The weight map puts tensor {.val {absent[[1]]}} in {.file {files[[f]]}}, which does not contain it."
        ),
        tensor = absent[[1]],
        format = TRUE,
        call = call
      )
    }
    keep <- have[have %in% wanted]
    names <- c(names, keep)
    part_of <- c(part_of, rep(f, length(keep)))
  }
  done <- TRUE
  new_handle(parts, names, part_of, framework, args, backend,
    label = path,
    metadata = if (length(parts) > 0) parts[[1]]$info$metadata,
    kind = "shards",
    index = idx
  )
}

# safe_load_file() for an index: the tensors asked for (all by default), with
# the combined header as the "metadata" attribute.
load_index <- function(path, tensors, framework, args, backend, call = parent.frame()) {
  h <- open_index(path, framework, args, backend, call = call)
  on.exit(close(h), add = TRUE)
  load_handle(h, tensors, framework, args, call = call)
}

# Bits per element of each dtype.
dtype_bits <- c(
  BOOL = 8, F4 = 4, F6_E2M3 = 6, F6_E3M2 = 6, U8 = 8, I8 = 8, F8_E5M2 = 8,
  F8_E4M3 = 8, F8_E8M0 = 8, F8_E4M3FNUZ = 8, F8_E5M2FNUZ = 8, I16 = 16,
  U16 = 16, F16 = 16, BF16 = 16, I32 = 32, U32 = 32, F32 = 32, C64 = 64,
  F64 = 64, I64 = 64, U64 = 64
)

# Bytes of a tensor of `dtype` and `shape` (not whole for sub-byte dtypes
# whose bits don't fill the last byte, which no valid tensor has).
tensor_bytes <- function(dtype, shape) {
  prod(as.numeric(unlist(shape))) * dtype_bits[[dtype]] / 8
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

# Splits tensors of `sizes` bytes, in order, into shards of at most `limit`
# bytes; a tensor larger than `limit` gets a shard of its own. Returns the
# shard number of each tensor.
shard_of <- function(sizes, limit) {
  out <- integer(length(sizes))
  shard <- 0L
  used <- Inf
  for (i in seq_along(sizes)) {
    if (used + sizes[[i]] > limit) {
      shard <- shard + 1L
      used <- 0
    }
    out[[i]] <- shard
    used <- used + sizes[[i]]
  }
  out
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
  shard <- shard_of(sizes, limit)
  n <- max(c(0L, shard))
  bar <- if (progress_wanted(sizes)) progress_bar("Saving", path, sum(sizes))
  write <- function(target, k) {
    write_spec(target, spec_subset(spec, k), sync, bar = bar, call = call)
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
  res <- write_index_(index, sum(sizes), spec[[2]], files[shard], sync)
  st_check(res, sprintf("Can't write %s.", describe_source(index)), call = call)
  index
}
