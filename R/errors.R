# Errors and warnings of the package, all raised through these helpers so
# their classes stay consistent:
#   c("safetensors_error_<kind>", ["safetensors_error_format",]
#     "safetensors_error", "rlang_error", "error", "condition")

# `message` is a cli template, interpolated in the caller's environment.
st_abort <- function(kind, message, ..., format = FALSE, call = parent.frame(),
                     .envir = parent.frame()) {
  class <- c(
    paste0("safetensors_error_", kind),
    if (isTRUE(format)) "safetensors_error_format",
    "safetensors_error"
  )
  cli::cli_abort(message, class = class, ..., call = call, .envir = .envir)
}

st_warn <- function(kind, message, ..., .envir = parent.frame()) {
  class <- c(paste0("safetensors_warning_", kind), "safetensors_warning")
  cli::cli_warn(message, class = class, ..., .envir = .envir)
}

# Turns the condition data a Rust entry point returns on failure into a
# classed R error; any other value passes through.
st_check <- function(res, what, call = parent.frame()) {
  if (!inherits(res, "safetensors_rust_error")) {
    return(res)
  }
  if (identical(res$kind, "interrupted")) {
    # Ctrl-C must give the prompt back at once: no cli formatting (its first
    # use in a session takes a large part of a second).
    stop(rlang::error_cnd(
      c("safetensors_error_interrupted", "safetensors_error"),
      message = "Interrupted by the user.",
      call = call
    ))
  }
  st_abort(
    res$kind,
    c(cli_escape(what), x = cli_escape(sentence(res$message))),
    tensor = res$tensor,
    format = res$format,
    call = call
  )
}

# Text that cli must print as is.
cli_escape <- function(x) {
  gsub("}", "}}", gsub("{", "{{", x, fixed = TRUE), fixed = TRUE)
}

sentence <- function(x) {
  x <- paste0(toupper(substr(x, 1, 1)), substr(x, 2, nchar(x)))
  ifelse(grepl("[.?!]$", x), x, paste0(x, "."))
}

# What a source is called in messages.
describe_source <- function(path) {
  if (is.character(path)) {
    cli::format_inline("{.file {path}}")
  } else if (is.raw(path)) {
    "the raw vector"
  } else {
    "the connection"
  }
}
