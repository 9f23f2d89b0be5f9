# Progress bars for long loads and saves.
#
# The default paths read or write a whole file in one call into Rust, which
# can't update a bar. When a bar may be wanted (an interactive session, not
# knitr or testthat, option `safetensors.progress` not FALSE) and there is
# enough data for a bar to matter, loads read tensors in groups of about
# 64 MiB through a handle (R/open.R) and saves write tensor by tensor
# through a streaming writer (src/rust/src/progress.rs), updating a cli bar
# in between. cli shows the bar only once an operation has run for two
# seconds (option `cli.progress_show_after`). The results are the same
# either way.

# Tensors of a load are read in groups of about this many bytes.
progress_group_bytes <- function() {
  getOption("safetensors.progress_group_bytes", 64 * 2^20)
}

# Whether a progress bar may be shown: an interactive session, not knitr or
# testthat, and `safetensors.progress` not FALSE.
progress_enabled <- function() {
  opt <- getOption("safetensors.progress", TRUE)
  isTRUE(opt) && is_interactive()
}

# Whether the session is interactive, as rlang::is_interactive() decides
# (option `rlang_interactive` first; knitr, RStudio notebooks and testthat
# are not), without loading rlang on every load and save.
is_interactive <- function() {
  opt <- getOption("rlang_interactive")
  if (!is.null(opt)) {
    return(isTRUE(opt))
  }
  if (isTRUE(getOption("knitr.in.progress")) || isTRUE(getOption("rstudio.notebook.executing")) ||
    identical(Sys.getenv("TESTTHAT"), "true")) {
    return(FALSE)
  }
  interactive()
}

# Whether a load or save of `bytes` bytes gets a progress bar: less than two
# groups would hardly move the bar.
progress_wanted <- function(bytes) {
  progress_enabled() && sum(bytes) > progress_group_bytes()
}

# A cli progress bar over `total` bytes, closed when `.envir` exits.
progress_bar <- function(verb, label, total, .envir = parent.frame()) {
  # The format is interpolated in `.envir`, so the file name goes in as text.
  file <- paste0("{.file ", cli_escape(basename(label)), "}")
  cli::cli_progress_bar(
    format = paste(verb, file, "{cli::pb_bar} {cli::pb_percent} | ETA {cli::pb_eta}"),
    format_done = paste0(verb, " ", file, ": {cli::pb_total_bytes} in {cli::pb_elapsed}"),
    total = total,
    clear = TRUE,
    .envir = .envir
  )
}

# Splits tensors of `sizes` bytes, in order, into groups of about `limit`
# bytes (a larger tensor is a group of its own). Returns a list of index
# vectors.
byte_groups <- function(sizes, limit = progress_group_bytes()) {
  if (length(sizes) == 0) {
    return(list())
  }
  split(seq_along(sizes), shard_of(sizes, limit))
}

# ---- loads ----------------------------------------------------------------

# safe_load_file() of a file path (or raw vector) through a handle, so that
# a progress bar can be updated between groups of tensors, or tensors read
# straight into torch (load_handle()).
load_through_handle <- function(path, tensors, framework, args, backend, call = parent.frame()) {
  part <- open_part(path, backend, call = call)
  h <- new_handle(list(part), part$info$name, rep(1L, length(part$info$name)), framework, args, backend,
    label = part$label, metadata = part$info$metadata, kind = backend
  )
  on.exit(close(h), add = TRUE)
  load_handle(h, tensors, framework, args, call = call)
}

# Reads the tensors `tensors` (all by default) of handle `h` as
# safe_load_file() returns them, with a progress bar when they are large
# and a bar may be shown.
load_handle <- function(h, tensors, framework, args, call = parent.frame()) {
  nms <- if (is.null(tensors)) {
    names(h)
  } else {
    vapply(tensors, function(t) tensor_name(h, t, call = call), character(1), USE.NAMES = FALSE)
  }
  mode <- if (framework == "r") "array" else "raw"
  bar <- NULL
  sizes <- NULL
  if (progress_enabled()) {
    tab <- handle_table(h)
    sizes <- tab$bytes[match(nms, tab$name)]
    if (progress_wanted(sizes)) {
      bar <- progress_bar("Loading", hget(h, "label"), sum(sizes))
    }
  }
  if (torch_direct(framework)) {
    res <- torch_read_handle(h, nms, args, call = call, bar = bar)
    return(as_loaded(res$tensors, combined_header(h), res$max_offset))
  }
  res <- read_parts(h, nms, mode, call = call, bar = bar, sizes = sizes)
  res$header <- combined_header(h)
  finish_load(res, framework, args, call = call)
}

# ---- saves ----------------------------------------------------------------

# The bytes of each tensor of a tensor_spec().
spec_sizes <- function(spec) {
  numel <- vapply(spec[[4]], prod, numeric(1))
  ceiling(numel * unname(dtype_bits[unlist(spec[[3]])]) / 8)
}

# The tensors `k` of a tensor_spec(), with its metadata.
spec_subset <- function(spec, k) {
  c(lapply(spec[1:5], function(v) v[k]), spec[6:7])
}

# Writes `spec` to the file `target`: in one call, or tensor by tensor with
# a streaming writer when `bar` (a cli progress bar over bytes) is given.
# `label` names the file in error messages.
write_spec <- function(target, spec, sync, bar = NULL, label = target, call = parent.frame()) {
  if (anyNA(spec[[5]])) {
    # Framework tensors, whose bytes are fetched one tensor at a time.
    return(write_stream(spec, file_sink(target, sync, label = label, call = call), bar = bar, call = call))
  }
  what <- function() sprintf("Can't write %s.", describe_source(label))
  if (is.null(bar)) {
    res <- do.call(write_file_, c(list(target), spec, list(sync, st_threads())))
    if (inherits(res, "safetensors_rust_error")) {
      st_check(res, what(), call = call)
    }
    return(res)
  }
  w <- do.call(writer_open_, c(list(target), spec, list(st_threads())))
  if (inherits(w, "safetensors_rust_error")) {
    st_check(w, what(), call = call)
  }
  # Removes the temporary file at once on an error or an interrupt; after a
  # commit it does nothing.
  on.exit(writer_abort_(w), add = TRUE)
  sizes <- spec_sizes(spec)
  for (i in seq_along(spec[[1]])) {
    res <- writer_write_(w, i - 1, spec[[1]][i], spec[[2]][i], spec[[3]][i], spec[[4]][i], spec[[5]][i])
    if (inherits(res, "safetensors_rust_error")) {
      st_check(res, what(), call = call)
    }
    cli::cli_progress_update(inc = sizes[[i]], id = bar)
  }
  res <- writer_commit_(w, sync)
  if (inherits(res, "safetensors_rust_error")) {
    st_check(res, what(), call = call)
  }
  res
}
