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
    # Ctrl-C must give the prompt back at once: no cli formatting and no
    # loading of cli or rlang (their first use in a session takes a large
    # part of a second). The fields are those rlang::error_cnd() gives.
    stop(structure(
      list(message = "Interrupted by the user.", trace = NULL, parent = NULL, call = frame_call(call)),
      class = c("safetensors_error_interrupted", "safetensors_error", "rlang_error", "error", "condition")
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

# The call of the frame whose environment is `env` (a call passes through).
frame_call <- function(env) {
  if (!is.environment(env)) {
    return(env)
  }
  frames <- sys.frames()
  for (i in rev(seq_along(frames))) {
    if (identical(frames[[i]], env)) {
      return(sys.call(i))
    }
  }
  NULL
}

# Text that cli must print as is.
cli_escape <- function(x) {
  gsub("}", "}}", gsub("{", "{{", x, fixed = TRUE), fixed = TRUE)
}

sentence <- function(x) {
  x <- paste0(toupper(substr(x, 1, 1)), substr(x, 2, nchar(x)))
  ifelse(grepl("[.?!]$", x), x, paste0(x, "."))
}
