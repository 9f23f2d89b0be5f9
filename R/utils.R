# Small helpers every other file may use (only R/errors.R is below). See
# ARCHITECTURE.md for the layers of the R code.

`%||%` <- function(x, y) if (is.null(x)) y else x

is_string <- function(x) {
  is.character(x) && length(x) == 1 && !is.na(x)
}

# The argument checks name the caller's argument with rlang::caller_arg(),
# called only on failure, as rlang is loaded only by errors (a default
# argument would do the same, but R CMD check doesn't see uses there).
check_string <- function(x, arg = NULL, call = parent.frame()) {
  if (!is_string(x)) {
    arg <- arg %||% rlang::caller_arg(x)
    st_abort(
      "invalid_argument",
      "{.arg {arg}} must be a single string, not {value_friendly(x)}.",
      call = call
    )
  }
}

check_bool <- function(x, arg = NULL, call = parent.frame()) {
  if (!(is.logical(x) && length(x) == 1 && !is.na(x))) {
    arg <- arg %||% rlang::caller_arg(x)
    st_abort(
      "invalid_argument",
      "{.arg {arg}} must be `TRUE` or `FALSE`, not {value_friendly(x)}.",
      call = call
    )
  }
}

# `arg`, one of `choices` (their first when `arg` is all of them, the
# default): exact matches only, a classed error otherwise, quoting the value
# given and suggesting the choice it was probably meant to be.
arg_choice <- function(arg, choices, name = deparse1(substitute(arg)), call = parent.frame()) {
  if (identical(arg, choices)) {
    return(choices[[1]])
  }
  if (!is_string(arg) || !arg %in% choices) {
    one_of <- or_list(encodeString(choices, quote = '"'))
    given <- if (is_string(arg)) encodeString(arg, quote = '"') else value_friendly(arg)
    meant <- if (is_string(arg)) closest_name(arg, choices)
    st_abort(
      "invalid_argument",
      c(
        "{.arg {name}} must be one of {one_of}, not {given}.",
        i = if (!is.null(meant)) "Did you mean {.val {meant}}?"
      ),
      call = call
    )
  }
  arg
}

# An error of `kind` if strings `x` repeat one: `message`, then the
# repeated ones.
check_unique <- function(x, kind, message, call = parent.frame()) {
  dup <- unique(x[duplicated(x)])
  if (length(dup) > 0) {
    st_abort(kind, c(message, x = "Repeated: {.val {dup}}."), call = call)
  }
}

# An error for a required argument left out, naming it (R's own error is
# unclassed, and comes from wherever the argument is first used).
check_required <- function(x, arg = deparse(substitute(x)), call = parent.frame()) {
  if (missing(x)) {
    st_abort("invalid_argument", "{.arg {arg}} is absent but must be supplied.", call = call)
  }
}

# `...` of a function that takes nothing there: it exists so that the
# arguments after it are named, or so that a mistaken argument is a classed
# error citing the function rather than R's "unused argument". Each
# argument in it is an error that names it, with the argument of the
# function the user called that a misspelled name was probably meant to be
# (among `.formals`, by default the function's own). Arguments named in
# `.allow` are accepted and ignored. For unnamed arguments, `.example` shows
# a named argument of the function; without it, they are shown by value,
# with the arguments the function takes.
check_dots_empty <- function(..., .allow = NULL, .example = NULL, .formals = NULL, .call = parent.frame()) {
  if (...length() == 0) {
    return(invisible())
  }
  args <- list(...)
  nms <- names(args) %||% rep("", length(args))
  nms[is.na(nms)] <- ""
  args <- args[!nms %in% setdiff(.allow, "")]
  nms <- nms[!nms %in% setdiff(.allow, "")]
  if (length(args) == 0) {
    return(invisible())
  }
  takes <- setdiff(names(frame_formals(.call)), c("...", .allow))
  formals <- .formals %||% takes
  named <- nms[nms != ""]
  unnamed <- vapply(args[nms == ""], format_arg_value, character(1), USE.NAMES = FALSE)
  meant <- character()
  for (a in named) {
    guess <- closest_name(a, formals)
    if (!is.null(guess)) {
      meant <- c(meant, i = sprintf("Did you mean {.arg %s} instead of {.arg %s}?", guess, cli_escape(a)))
    }
  }
  example <- .example
  fn <- called_function(.call)
  only <- if (length(unnamed) > 0 && is.null(.example) && !is.null(fn)) {
    if (length(takes) == 0) "{.code {fn}()} takes no arguments." else "{.code {fn}()} takes only {.arg {takes}}."
  }
  st_abort(
    "invalid_argument",
    c(
      "{.arg ...} must be empty.",
      x = if (length(named) > 0) "Unknown argument{?s}: {.arg {named}}.",
      x = if (length(unnamed) > 0 && !is.null(.example)) {
        "{length(unnamed)} argument{?s} without a name: name {?it/them}, as in {.code {example}}."
      },
      x = if (length(unnamed) > 0 && is.null(.example)) {
        "{cli::qty(length(unnamed))}Argument{?s} without a name: {.code {unnamed}}."
      },
      meant,
      i = only
    ),
    call = .call
  )
}

# The name of the function the user called (see error_frame()) as code
# shows it (`safe_info`, `h$keys`), or NULL for an S3 method or an
# anonymous function.
called_function <- function(env) {
  j <- entry_index(env)
  if (is.na(j) || !is.null(get0(".Generic", envir = sys.frame(j), inherits = FALSE))) {
    return(NULL)
  }
  fn <- sys.call(j)[[1]]
  if (is.symbol(fn) || (is.call(fn) && identical(fn[[1]], as.name("$")))) deparse1(fn) else NULL
}

# A value as code in a message: short atomic values deparsed, others
# described, as `<a double matrix>`.
format_arg_value <- function(x) {
  if (is.atomic(x) && !is.object(x) && length(x) <= 5 && is.null(dim(x))) {
    text <- deparse1(x)
    if (nchar(text) <= 40) {
      return(text)
    }
  }
  paste0("<", cli::format_inline("{.obj_type_friendly {x}}"), ">")
}

# The formal arguments of the function the user called, as errors cite it
# (entry_index()) for the frame `env`, or NULL.
frame_formals <- function(env) {
  j <- entry_index(env)
  if (is.na(j)) NULL else formals(sys.function(j))
}

# A bad value as messages quote it: the value itself when it is a single
# string, number or logical (`the string "bogus"`, `the number 0`, `TRUE`,
# `NA`), `NULL`, else its type (`a character vector`, `a list`). Called on
# the error path only (it loads cli).
value_friendly <- function(x) {
  if (is.null(x)) {
    return("`NULL`")
  }
  if (is.atomic(x) && !is.object(x) && length(x) == 1 && is.null(dim(x))) {
    if (is.logical(x) || (is.character(x) && is.na(x)) || (is.numeric(x) && is.na(x) && !is.nan(x))) {
      return(paste0("`", format(x), "`"))
    }
    if (is.character(x) && nchar(x, "width", allowNA = TRUE) %in% 0:60) {
      return(paste("the string", encodeString(x, quote = '"')))
    }
    if (is.numeric(x)) {
      return(paste("the number", format(x, digits = 15)))
    }
  }
  cli::format_inline("{.obj_type_friendly {x}}")
}

# "a", "a or b", "a, b or c".
or_list <- function(x) {
  if (length(x) <= 1) {
    return(paste(x, collapse = ""))
  }
  paste(paste(x[-length(x)], collapse = ", "), "or", x[[length(x)]])
}

# The one of `choices` that `x` was probably meant to be (the same but for
# case, a unique prefix, or a typo away), or NULL.
closest_name <- function(x, choices) {
  if (!is_string(x) || length(choices) == 0 || !nzchar(x)) {
    return(NULL)
  }
  same <- choices[tolower(choices) == tolower(x)]
  if (length(same) == 1) {
    return(same)
  }
  prefix <- choices[startsWith(tolower(choices), tolower(x))]
  if (length(prefix) == 1) {
    return(prefix)
  }
  d <- utils::adist(tolower(x), tolower(choices))[1, ]
  near <- choices[d == min(d) & d <= max(1, nchar(x) %/% 3) & d < nchar(x)]
  if (length(near) == 1) near else NULL
}

# Option `name`: a number from `lower` to `upper` (`Inf`: no limit), or
# `default` when it is not set.
number_option <- function(name, default, lower, upper, call) {
  x <- getOption(name, default)
  if (!(is.numeric(x) && length(x) == 1 && !is.na(x) && x >= lower && x <= upper)) {
    range <- if (is.infinite(upper)) "a number of at least {lower}" else "a number from {lower} to {upper}"
    st_abort(
      "invalid_argument",
      paste0("Option {.code {name}} must be ", range, ", not {value_friendly(x)}."),
      call = call
    )
  }
  x
}

# The thread count passed to the Rust core: option `safetensors.threads`,
# or 0 for the core's default (the available cores, at most 2).
st_threads <- function(call = parent.frame()) {
  n <- getOption("safetensors.threads")
  if (is.null(n)) {
    return(0L)
  }
  if (!is.numeric(n) || length(n) != 1 || is.na(n) || n < 1 || n != trunc(n)) {
    st_abort(
      "invalid_argument",
      c(
        "Option {.code safetensors.threads} must be a positive whole number, not {value_friendly(n)}.",
        i = "Set it to {.code NULL} for the default (the available cores, at most 2), or to 1 to turn threads off."
      ),
      call = call
    )
  }
  as.integer(min(n, 256))
}

# Splits items of `sizes` bytes, in order, into consecutive groups of at
# most `limit` bytes; an item larger than `limit` is a group of its own.
# Returns the group number (from 1) of each item.
group_by_size <- function(sizes, limit) {
  out <- integer(length(sizes))
  group <- 0L
  used <- Inf
  for (i in seq_along(sizes)) {
    if (used + sizes[[i]] > limit) {
      group <- group + 1L
      used <- 0
    }
    out[[i]] <- group
    used <- used + sizes[[i]]
  }
  out
}

# `x` in UTF-8, whatever encoding R marks its strings with: every string
# that reaches the Rust core must be UTF-8 (a file's header is, and Python
# reads nothing else). A string that can't be converted (bytes invalid in
# its encoding, or marked "bytes") is an error naming it, before anything
# is done; nothing is replaced (enc2utf8() would write "\xff" as "<ff>").
utf8_strings <- function(x, what, call) {
  if (length(x) == 0) {
    return(x)
  }
  enc <- Encoding(x)
  native <- enc == "unknown" & !validUTF8(x)
  out <- x
  if (any(native) && !l10n_info()[["UTF-8"]]) {
    # Bytes in the session's encoding: those iconv() can convert.
    out[native] <- iconv(x[native], "", "UTF-8")
    native <- native & is.na(out)
  }
  bad <- which(native | enc == "bytes" | (enc == "UTF-8" & !validUTF8(x)))
  if (length(bad) > 0) {
    i <- bad[[1]]
    why <- if (enc[[i]] == "bytes") "marked as bytes" else "not valid in its encoding"
    st_abort(
      "invalid_argument",
      c(
        "Each {what} must be text that can be written as UTF-8.",
        x = paste0("The {what} at position {i}, \"", cli_escape(escape_bytes(x[[i]])), "\", is {why}."),
        i = "Mark its encoding with {.fn Encoding}, or convert it with {.fn iconv}."
      ),
      call = call
    )
  }
  out <- enc2utf8(out)
  out
}

# A string as readable ASCII text: its bytes outside printable ASCII as
# "\xff" escapes (and backslashes doubled), once, whatever its encoding.
escape_bytes <- function(x) {
  b <- as.integer(charToRaw(x))
  keep <- b >= 0x20 & b < 0x7f
  out <- ifelse(keep, vapply(b, function(v) rawToChar(as.raw(v)), character(1)), sprintf("\\x%02x", b))
  out[b == 0x5c] <- "\\\\"
  paste(out, collapse = "")
}

