# Progress bars for long loads and saves, and nothing else: whether one
# is wanted, and the bar itself.
#
# A load or save with a bar gives R control back between steps so that it
# can update it: loads read about 64 MiB per call (whole tensors, or rows
# of a larger one) through a handle (R/open.R), saves write about 64 MiB
# per call of the writer (R/write.R), so the bar moves within a large
# tensor too. A bar is wanted in an interactive session (not knitr or
# testthat) whose output can redraw a line (cli::is_dynamic_tty(): a
# terminal, RStudio; elsewhere each update would stay behind as a line of
# its own), when option `safetensors.progress` is not FALSE and there is
# enough data for it to matter; cli shows it only once an operation has run
# for two seconds (option `cli.progress_show_after`), and removes it when
# done. The results are the same either way.

# With a progress bar, loads read and saves write about this many bytes
# between updates of the bar (option `safetensors.progress_group_bytes`,
# default 64 MiB); loads and saves of less get no bar.
progress_group_bytes <- function(call = parent.frame()) {
  number_option("safetensors.progress_group_bytes", 64 * 2^20, 1, Inf, call)
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
# groups would hardly move the bar, and an output that can't redraw a line
# would keep every update of it. (cli is loaded only here, once a large
# load or save may want a bar.)
progress_wanted <- function(bytes) {
  progress_enabled() && sum(bytes) > progress_group_bytes() && cli::is_dynamic_tty()
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
