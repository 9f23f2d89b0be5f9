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

# Metadata as lines `  key: value`, each fitting `width` columns: long
# values are cut at the end, long keys in the middle.
format_metadata <- function(meta, width = getOption("width", 80)) {
  keys <- truncate_middle(encodeString(names(meta)), max(12, width %/% 3))
  vals <- truncate_end(encodeString(unname(meta)), pmax(12, width - 4 - nchar(keys, "width")))
  paste0("  ", keys, ": ", vals)
}

# Lines of a table that fit `width` columns (see fit_columns()): a header
# of column names, then the values, two spaces apart and indented by two,
# and a last line naming the columns left out, if any.
format_columns <- function(headers, cols, right = rep(FALSE, length(cols)), width = Inf,
                           shrink = rep(FALSE, length(cols))) {
  fit <- fit_columns(headers, cols, right, width, shrink)
  rows <- do.call(paste, c(unname(fit$cells), sep = "  "))
  lines <- paste0("  ", trimws(rows, "right"))
  if (length(fit$left_out) > 0) {
    more <- sprintf(
      "  # ... and %d more column%s: %s", length(fit$left_out),
      if (length(fit$left_out) == 1) "" else "s", paste(fit$left_out, collapse = ", ")
    )
    lines <- c(lines, truncate_end(more, width))
  }
  lines
}

# The cells of a table laid out in `width` columns, two of indent and two
# between columns: `cells`, the columns kept, each its header then its
# values, padded to one width (right-aligned where `right`), and
# `left_out`, the headers of the others. While the table is too wide, the
# text of the `shrink` columns (names, file names) is cut in the middle,
# the widest first, down to 20 columns; then (if `drop`) columns are left
# out from the right, down to the first three; then names are cut down to
# 12 columns and columns left out down to the first.
fit_columns <- function(headers, cols, right = rep(FALSE, length(cols)), width = Inf,
                        shrink = rep(FALSE, length(cols)), drop = TRUE) {
  cols <- Map(c, headers, cols)
  natural <- vapply(cols, function(v) max(nchar(v, "width")), numeric(1))
  n <- length(cols)
  # The widths of the first `m` columns with the shrinkable ones cut to the
  # widest that fits, but no narrower than `least`; NULL if none fits.
  widths_within <- function(m, least) {
    w <- natural[seq_len(m)]
    s <- shrink[seq_len(m)]
    cap <- max(c(0, w[s]))
    repeat {
      w[s] <- pmin(natural[seq_len(m)][s], cap)
      if (2 + sum(w) + 2 * (m - 1) <= width) {
        return(w)
      }
      if (cap <= least || !any(s)) {
        return(NULL)
      }
      cap <- cap - 1
    }
  }
  widths <- NULL
  for (least in c(20, 12)) {
    for (m in if (!drop) n else n:(if (least == 20) min(n, 3) else 1)) {
      widths <- widths_within(m, least)
      if (!is.null(widths)) break
    }
    if (!is.null(widths)) break
  }
  if (is.null(widths)) {
    # Nothing fits: the narrowest layout.
    widths <- natural[seq_len(if (drop) 1 else n)]
    widths[shrink[seq_along(widths)]] <- pmin(widths[shrink[seq_along(widths)]], 12)
  }
  keep <- seq_along(widths)
  cells <- Map(function(v, w, r, s) {
    if (s) v <- truncate_middle(v, w)
    gap <- strrep(" ", w - nchar(v, "width"))
    if (r) paste0(gap, v) else paste0(v, gap)
  }, cols[keep], widths, right[keep], shrink[keep])
  list(cells = unname(cells), left_out = headers[-keep])
}

# Strings shortened to at most `width` columns (each its own width) by
# cutting out their middle, as tibble and cli do, so that both the start
# and the end of a long name show: `encoder.lay...self.query.weight`.
truncate_middle <- function(x, width) {
  cut_text(x, width, middle = TRUE)
}

# Strings shortened to at most `width` columns by cutting off their end.
truncate_end <- function(x, width) {
  cut_text(x, width, middle = FALSE)
}

cut_text <- function(x, width, middle) {
  width <- rep_len(width, length(x))
  long <- which(nchar(x, "width") > width)
  if (length(long) == 0) {
    return(x)
  }
  dots <- ellipsis()
  for (i in long) {
    chars <- strsplit(x[[i]], "")[[1]]
    w <- nchar(chars, "width")
    room <- max(0, width[[i]] - nchar(dots, "width"))
    head <- if (middle) ceiling(room / 2) else room
    tail <- room - head
    keep_head <- chars[cumsum(w) <= head]
    keep_tail <- rev(rev(chars)[cumsum(rev(w)) <= tail])
    x[[i]] <- paste0(paste(keep_head, collapse = ""), dots, paste(keep_tail, collapse = ""))
  }
  x
}

# The mark of text left out: one character where the output shows UTF-8.
ellipsis <- function() {
  if (cli::is_utf8_output()) "\u2026" else "..."
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
