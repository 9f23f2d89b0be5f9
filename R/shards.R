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

# ---- saving -------------------------------------------------------------

# safe_save_file() to the file path or folder `path`: the checkpoint of that
# name (see "Files, folders and shard sets" in ?safe_save_file), a single
# file, or shards of at most `limit` bytes and their index when the tensors
# need more than one (as transformers does), replacing what was there as a
# whole. The core's save (src/rust/core/src/checkpoint.rs) locks the folder,
# cleans up after killed saves, names each shard's temporary file and
# commits. Returns the path written: `path` itself for a single file (its
# model.safetensors for a folder), the index for shards.
save_checkpoint <- function(spec, path, limit, sync, call = parent.frame()) {
  check_string(path, call = call)
  to <- save_target(path, call)
  given <- path
  shown <- to$shown
  check <- to$check
  ck <- check(begin_save(to$base))
  # Abandons the save on an error or an interrupt: its temporary files go,
  # the folder is released; after a commit it does nothing.
  on.exit(save_abort_(ck$save), add = TRUE)
  sizes <- spec_sizes(spec)
  shard <- group_by_size(sizes, limit)
  n <- max(c(0L, shard))
  bar <- if (progress_enabled() && progress_wanted(sizes)) progress_bar("Saving", given, sum(sizes))
  if (n <= 1) {
    # The file a folder or an index path stands for, else the path given.
    write_spec(spec, "file", ck$target, sync, bar = bar, label = shown, call = call)
    check(save_commit_single_(ck$save))
    return(shown)
  }
  files <- character(n)
  for (s in seq_len(n)) {
    sh <- check(save_shard_(ck$save, s, n))
    files[[s]] <- sh$name
    # Errors name the shard as it will be called, not its temporary file.
    label <- file.path(dirname(shown), sh$name)
    write_spec(spec_subset(spec, which(shard == s)), "file", sh$temp, sync, bar = bar, label = label, call = call)
  }
  index <- paste0(shown, ".index.json")
  check(save_commit_shards_(ck$save, spec$names, files[shard], sum(sizes), sync), index)
  index
}

# What a save to `path` (a file, an index or a folder) writes:
# `list(base, shown, check)`, the single file's path (a folder's
# model.safetensors, an index's file), the same as the caller spelled
# `path` (for the paths returned and messages), and a function that turns
# a Rust error into a classed one citing `call`. (Messages are built on
# error only: cli formatting takes milliseconds.)
save_target <- function(path, call) {
  given <- path
  path <- core_path(path, call)
  folder <- dir.exists(path)
  base <- if (folder) file.path(path, "model.safetensors") else sub("\\.index\\.json$", "", path)
  shown <- if (folder) file.path(given, "model.safetensors") else sub("\\.index\\.json$", "", given)
  check <- function(res, target = given) {
    if (inherits(res, "safetensors_rust_error")) st_check(res, sprintf("Can't write %s.", describe_source(target)), call = call)
    res
  }
  list(base = base, shown = shown, check = check)
}

# Begins a save to the checkpoint whose single file is `base`
# (save_begin_()). A folder that a writer of this session holds
# (safe_writer(), until closed) is an error at once rather than a wait for
# itself; a garbage collection first releases the folders of writers no
# longer referenced.
begin_save <- function(base) {
  if (folder_held_(base)) {
    gc(verbose = FALSE)
  }
  save_begin_(base)
}

# ---- reading ------------------------------------------------------------

# Reading state: whether a read_checkpoint() is running (reads inside it
# don't start their own).
checkpoint_state <- new.env(parent = emptyenv())

# Whether a read of `path` goes through read_checkpoint(): a local path,
# outside another such read.
retry_reads <- function(path) {
  is_string(path) && !is_url(path) && !is_hf_path(path) && !isTRUE(checkpoint_state$reading)
}

# Reads the checkpoint `path` (a file, an index or a folder) again if it
# was replaced while it was read. A reading function whose first statement
# is `if (retry_reads(path)) return(read_checkpoint(path, environment()))`
# has its body evaluated again, in its own frame (`env`, so that its
# errors name its call), with `path` set to the file `path` resolves to
# (resolve_folder()). A concurrent save may remove the single file a reader
# found (its shards replace it), the index (a single file replaces it) or
# a shard (another save's shards replace them): the reader then fails with
# safetensors_error_file_not_found, or open_shard_set() with
# safetensors_error_file_changed. When what `path` resolves to is the same
# after the failure, the failure is the answer; when it changed, the read
# starts over, up to 50 times, with waits from 1 ms to 50 ms. `call` names
# the caller in the error when no checkpoint can be found at all.
read_checkpoint <- function(path, env, call = env) {
  body <- body(sys.function(sys.parent()))
  checkpoint_state$reading <- TRUE
  on.exit(checkpoint_state$reading <- FALSE, add = TRUE)
  for (attempt in 1:50) {
    target <- resolve_folder(path, call = call)
    seen <- checkpoint_identity(target)
    assign("path", target, envir = env)
    res <- tryCatch(
      eval(body, env),
      safetensors_error_file_not_found = function(e) e,
      safetensors_error_file_changed = function(e) e
    )
    if (!inherits(res, "safetensors_error")) {
      return(res)
    }
    now <- tryCatch(checkpoint_identity(resolve_folder(path, call = call)), error = function(e) NULL)
    if (identical(now, seen) && !isTRUE(res$checkpoint_changed)) {
      break
    }
    Sys.sleep(min(0.001 * 2^(attempt - 1), 0.05))
  }
  stop(res)
}

# What identifies the checkpoint a reader found at `target` (a file or an
# index): its path, its size and modification time (a file replaced by
# another save, even one with the same tensors, has another), and an
# index's bytes.
checkpoint_identity <- function(target) {
  info <- file.info(target, extra_cols = FALSE)
  bytes <- if (is_index_path(target) && !is.na(info$size)) {
    tryCatch(readBin(target, "raw", info$size), error = function(e) NULL, warning = function(w) NULL)
  }
  list(target, info$size, as.numeric(info$mtime), bytes)
}

# Opens the shards of the index at `path` (a file or a URL) for a handle:
# `list(index, files, parts, names, part_of, label)`, the shards in
# file-name order, each shard's tensors in header order. The weight map is
# an allowlist (a shard's other tensors are hidden), and each tensor it
# names must be in the shard it names. The shards of an index URL are at
# URLs relative to it. A shard of a local index written by a save that
# is still renaming its shards into place is read under its temporary
# name while that exists; and the index is read again once every shard is
# open: if it changed (another save replaced the checkpoint meanwhile),
# the shards may be of two saves, and the result is an error of class
# safetensors_error_file_changed, which read_checkpoint() retries.
# `whole`: every tensor will be read (see open_part()).
open_shard_set <- function(path, backend, whole = FALSE, call = parent.frame()) {
  check_string(path, call = call)
  remote <- is_url(path)
  if (!remote) {
    path <- core_path(path, call)
  }
  idx <- read_index(path, call = call)
  files <- sort(unique(idx$files), method = "radix")
  label <- source_label(path)
  parts <- vector("list", length(files))
  done <- FALSE
  on.exit(
    if (!done) {
      for (p in parts) if (!is.null(p)) close_part(p)
    },
    add = TRUE
  )
  names <- character()
  part_of <- integer()
  for (f in seq_along(files)) {
    file <- files[[f]]
    if (remote) {
      part <- open_part(url_resolve(path, url_path_escape(file)), backend, whole = whole, call = call)
    } else {
      pending <- idx$pending[[match(file, idx$files)]]
      part <- open_shard(dirname(path), file, pending, backend, whole, call)
    }
    part$file <- file
    parts[[f]] <- part
    wanted <- idx$names[idx$files == file]
    have <- part$info$name
    absent <- wanted[!wanted %in% have]
    if (length(absent) > 0) {
      # A shard of another save, renamed over this one's after the index
      # was read, holds other tensors.
      if (!remote) stop_if_replaced(path, idx, label, call, parts[seq_len(f)])
      st_abort(
        "invalid_index",
        c(
          cli_escape(source_what(label)),
          x = "The weight map puts tensor {.val {absent[[1]]}} in {.file {file}}, which does not contain it."
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
  if (!remote) {
    stop_if_replaced(path, idx, label, call, parts)
  }
  done <- TRUE
  list(index = idx, files = files, parts = parts, names = names, part_of = part_of, label = label)
}

# An error of class safetensors_error_file_changed (which read_checkpoint()
# retries) if a save replaced the checkpoint while its shards were opened:
# the index at `path` is no longer `idx` (as read_index() read it), or a
# shard of `parts` (those opened so far, see open_shard()) is no longer at
# its path (or its temporary one). Both are needed: a save of the same
# tensors writes the same index bytes again, and then only the shards tell.
stop_if_replaced <- function(path, idx, label, call, parts = list()) {
  moved <- function(p) !file_is_at_(p$ptr, p$label) && !(!is.null(p$pending) && file_is_at_(p$ptr, p$pending))
  if (!identical(read_index_(path), idx) || any(vapply(parts, moved, logical(1)))) {
    st_abort(
      "file_changed",
      c(
        cli_escape(source_what(label)),
        x = "The checkpoint was replaced while its shards were opened (a save to it ran meanwhile).",
        i = "Read it again."
      ),
      checkpoint_changed = TRUE,
      call = call
    )
  }
}

# Opens shard `file` of a local index in folder `dir`: under its temporary
# name `pending` (NA if none) while a save renames it into place, else
# under its name. A temporary file renamed between the check and the open
# is found under its name. The part's `label` is the shard's path, and
# `pending` its temporary path.
open_shard <- function(dir, file, pending, backend, whole, call) {
  path <- file.path(dir, file)
  part <- NULL
  if (!is.na(pending) && file.exists(file.path(dir, pending))) {
    part <- tryCatch(
      open_part(file.path(dir, pending), backend, whole = whole, call = call),
      safetensors_error_file_not_found = function(e) NULL
    )
  }
  part <- part %||% open_part(path, backend, whole = whole, call = call)
  part$label <- path
  if (!is.na(pending)) part$pending <- file.path(dir, pending)
  part
}
