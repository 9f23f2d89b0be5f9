# Renaming a checkpoint's tensors: the `rename` argument of the functions
# that read a checkpoint into something with names of its own (a torch
# module, safe_load_model()). Pure R: no torch, no files.
#
# `rename` is NULL (names kept), a function of the file's names returning
# the new names, or a named character vector of regular-expression
# replacements (Perl-compatible, as gsub(perl = TRUE)), names the patterns
# and values their replacements, applied one after the other to every name.
# A name that becomes NA is skipped: the function returns NA for it, or a
# pattern with the value NA matches it.

# A classed error unless `rename` is NULL, a function, or a named character
# vector of valid regular expressions. Called once, at the boundary.
check_rename <- function(rename, arg = "rename", call = parent.frame()) {
  if (is.null(rename) || is.function(rename)) {
    return(invisible())
  }
  # `c(pattern = NA)` is a logical vector.
  if (is.logical(rename) && length(rename) > 0 && all(is.na(rename))) {
    rename <- stats::setNames(as.character(rename), names(rename))
  }
  if (!is.character(rename) || is.object(rename) || length(rename) == 0) {
    st_abort(
      "invalid_argument",
      c(
        "{.arg {arg}} must be a function or a named character vector, not {value_friendly(rename)}.",
        i = "A character vector maps regular expressions to replacements, such as {.code c(\"^model\\\\.\" = \"\")}."
      ),
      call = call
    )
  }
  patterns <- names(rename)
  if (is.null(patterns) || anyNA(patterns) || any(!nzchar(patterns))) {
    st_abort(
      "invalid_argument",
      c(
        "Every element of {.arg {arg}} must be named: its name is the regular expression it replaces.",
        i = "For example {.code c(\"^model\\\\.\" = \"\", \"self_attn\\\\.\" = \"attn.\")}."
      ),
      call = call
    )
  }
  check_patterns(patterns, arg, call)
  invisible()
}

# A classed error naming the first of `patterns` that is not a valid
# Perl-compatible regular expression.
check_patterns <- function(patterns, arg, call) {
  for (p in patterns) {
    bad <- tryCatch(
      {
        grepl(p, "", perl = TRUE)
        NULL
      },
      error = function(e) e,
      warning = function(w) w
    )
    if (!is.null(bad)) {
      st_abort(
        "invalid_argument",
        c(
          "The names of {.arg {arg}} must be regular expressions; {.val {p}} is not one.",
          x = cli_escape(conditionMessage(bad))
        ),
        call = call
      )
    }
  }
}

# The new names of tensors `names` under `rename` (checked by
# check_rename()): a character vector as long as `names`, NA for the names
# skipped. A function that fails or returns something else than as many
# strings, a name that becomes empty, or two names that become one, is an
# error of class `safetensors_error_rename` naming the names involved.
rename_names <- function(names, rename, call = parent.frame()) {
  if (is.null(rename)) {
    return(names)
  }
  if (is.function(rename)) {
    out <- tryCatch(rename(names), error = function(e) {
      st_abort(
        "rename",
        "The function {.arg rename} failed on the names of the file's tensors.",
        parent = e,
        call = call
      )
    })
    if (!(is.character(out) || (is.logical(out) && all(is.na(out)))) || length(out) != length(names)) {
      st_abort(
        "rename",
        c(
          "The function {.arg rename} must return a character vector as long as its input ({length(names)} name{?s}).",
          x = if (is.character(out)) "It returned {length(out)} string{?s}." else "It returned {value_friendly(out)}."
        ),
        call = call
      )
    }
    out <- as.character(out)
    attributes(out) <- NULL
  } else {
    out <- names
    for (k in seq_along(rename)) {
      pattern <- names(rename)[[k]]
      live <- !is.na(out)
      if (is.na(rename[[k]])) {
        out[live][grepl(pattern, out[live], perl = TRUE)] <- NA_character_
      } else {
        out[live] <- gsub(pattern, rename[[k]], out[live], perl = TRUE)
      }
    }
  }
  check_renamed(names, out, call)
  out
}

# A classed error if a name of `names` became the empty string in `out`,
# or two became the same.
check_renamed <- function(names, out, call) {
  empty <- which(!is.na(out) & !nzchar(out))
  if (length(empty) > 0) {
    st_abort(
      "rename",
      c(
        "{.arg rename} must not turn a name into the empty string.",
        x = "{format_renames(names[empty], out[empty])}.",
        i = "A name mapped to {.code NA} is skipped."
      ),
      from = names[empty],
      to = out[empty],
      call = call
    )
  }
  kept <- which(!is.na(out))
  dup <- unique(out[kept][duplicated(out[kept])])
  if (length(dup) == 0) {
    return(invisible())
  }
  from <- lapply(dup, function(d) names[kept][out[kept] == d])
  lines <- vapply(seq_along(dup), function(k) {
    paste0(
      and_list(encodeString(from[[k]], quote = "\"")),
      if (length(from[[k]]) == 2) " both become " else " all become ", encodeString(dup[[k]], quote = "\""), "."
    )
  }, character(1))
  shown <- utils::head(lines, 10)
  if (length(lines) > 10) {
    shown <- c(shown, sprintf("... and %d more.", length(lines) - 10))
  }
  st_abort(
    "rename",
    c(
      "{.arg rename} must not give two tensors of the file the same name.",
      structure(cli_escape(shown), names = rep("x", length(shown)))
    ),
    from = from,
    to = dup,
    call = call
  )
}

# "a", "a and b", "a, b and c".
and_list <- function(x) {
  if (length(x) <= 1) {
    return(paste(x, collapse = ""))
  }
  paste(paste(x[-length(x)], collapse = ", "), "and", x[[length(x)]])
}

# `"from" -> "to"` for each pair, as messages show a renaming.
format_renames <- function(from, to, n = 10) {
  shown <- paste0(encodeString(utils::head(from, n), quote = "\""), " -> ", encodeString(utils::head(to, n), quote = "\""))
  more <- if (length(from) > n) sprintf(", and %d more", length(from) - n) else ""
  paste0(paste(shown, collapse = ", "), more)
}
