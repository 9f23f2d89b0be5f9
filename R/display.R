# Formatting for printed output and messages: sizes, shapes, counts,
# columns of text. Used by the print methods of handles, headers,
# summaries and loaded lists.

format_shape <- function(shape) {
  paste0("[", paste(format(shape, scientific = FALSE, trim = TRUE), collapse = ", "), "]")
}

# Values of a vector as short text, one string each: numbers to 3
# significant digits (each on its own, so that 0.1 stays 0.1 beside 1e4),
# strings quoted, raw bytes in hex.
format_values <- function(v) {
  if (is.character(v)) {
    return(encodeString(v, quote = "\""))
  }
  if (is.numeric(v) || is.complex(v)) {
    return(vapply(v, function(e) format(e, digits = 3), ""))
  }
  format(v, trim = TRUE)
}

format_bytes <- function(x) {
  units <- c("B", "kB", "MB", "GB", "TB")
  k <- if (x < 1000) 1 else min(floor(log(x, 1000)) + 1, length(units))
  if (k == 1) {
    return(sprintf("%s B", format(x, scientific = FALSE)))
  }
  sprintf("%.1f %s", x / 1000^(k - 1), units[[k]])
}

# 1234567 as "1.2M": counts of parameters, in thousands (K), millions (M),
# billions (B) and trillions (T), exact below 10,000.
format_count <- function(x) {
  if (x < 1e4) {
    return(format(x, scientific = FALSE))
  }
  units <- c("K", "M", "B", "T")
  k <- min(floor(log10(x) / 3), length(units))
  if (k < length(units) && round(x / 1000^k, 1) >= 1000) {
    k <- k + 1
  }
  sprintf("%.1f%s", x / 1000^k, units[[k]])
}

format_metadata <- function(meta, width = 60) {
  vals <- encodeString(unname(meta))
  long <- nchar(vals) > width
  vals[long] <- paste0(substr(vals[long], 1, width - 3), "...")
  paste0("  ", encodeString(names(meta)), ": ", vals)
}

# Lines of a table: a header of column names, then the values, each column
# padded to its width (numbers right-aligned when `right`), two spaces apart.
format_columns <- function(headers, cols, right = rep(FALSE, length(cols))) {
  padded <- Map(function(h, v, r) {
    v <- c(h, v)
    gap <- strrep(" ", max(nchar(v, "width")) - nchar(v, "width"))
    if (r) paste0(gap, v) else paste0(v, gap)
  }, headers, cols, right)
  rows <- do.call(paste, c(unname(padded), sep = "  "))
  paste0("  ", trimws(rows, "right"))
}

# A file name (or URL) as cli shows it in messages.
format_file <- function(label) {
  if (grepl("^[Hh][Tt][Tt][Pp][Ss]?://", label)) {
    cli::format_inline("{.url {label}}")
  } else {
    cli::format_inline("{.file {label}}")
  }
}

# A byte count or offset as text, never in scientific notation.
fmt_num <- function(x) {
  format(x, scientific = FALSE)
}

# What printed results show of where they came from (a
# `safetensors_origin`, R/hf.R): the hf:// path pinned to the commit, and
# the revision asked for when it was not the commit.
describe_origin <- function(x) {
  if (identical(x$revision, x$commit)) {
    format(x)
  } else {
    sprintf("%s (revision %s)", format(x), encodeString(x$revision, quote = "\""))
  }
}
