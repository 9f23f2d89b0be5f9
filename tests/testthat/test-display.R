# Formatting helpers for printed output (R/display.R).

test_that("format_count() and format_bytes() round to one decimal", {
  expect_identical(
    vapply(c(0, 999, 9999, 12345, 999949, 999999, 1.5e9, 2e12, 3e15), format_count, ""),
    c("0", "999", "9999", "12.3K", "999.9K", "1.0M", "1.5B", "2.0T", "3000.0T")
  )
  expect_identical(
    vapply(c(0, 999, 1000, 1234567, 5e9, 7e12, 8e15), format_bytes, ""),
    c("0 B", "999 B", "1.0 kB", "1.2 MB", "5.0 GB", "7.0 TB", "8000.0 TB")
  )
})

test_that("shapes, columns and metadata are formatted for a screen", {
  expect_identical(format_shape(c(2L, 3L)), "[2, 3]")
  expect_identical(format_shape(integer(0)), "[]")
  expect_identical(format_shape(3e9), "[3000000000]")
  expect_identical(
    format_columns(c("name", "n"), list(c("a", "bbb"), c("1", "22")), right = c(FALSE, TRUE)),
    c("  name   n", "  a      1", "  bbb   22")
  )
  long <- strrep("x", 100)
  withr::local_options(cli.unicode = FALSE)
  out <- format_metadata(c(format = "pt", note = long), width = 60)
  expect_identical(out[[1]], "  format: pt")
  expect_identical(nchar(out[[2]]), 60L)
  expect_match(out[[2]], "\\.\\.\\.$")
})

test_that("long text is cut in the middle or at the end, by display width", {
  withr::local_options(cli.unicode = FALSE)
  expect_identical(truncate_middle(c("abcdefghij", "abc"), 7), c("ab...ij", "abc"))
  expect_identical(truncate_middle("abcdefghij", 8), "abc...ij")
  expect_identical(truncate_end("abcdefghij", 7), "abcd...")
  # Wide characters count twice.
  x <- "\u4e00\u4e01\u4e02\u4e03\u4e04\u4e05"
  cut <- truncate_middle(x, 9)
  expect_lte(nchar(cut, "width"), 9)
  expect_identical(cut, "\u4e00...\u4e05")
  withr::local_options(cli.unicode = TRUE)
  expect_identical(truncate_middle("abcdefghij", 7), "abc\u2026hij")
})

test_that("tables shrink names first, then leave out columns from the right", {
  name <- c("a.very.long.tensor.name.indeed.with.many.parts", "b")
  cols <- list(name, c("F32", "I64"), c("1", "22"), c("file-00001.safetensors", "file-00002.safetensors"))
  headers <- c("name", "dtype", "n", "file")
  right <- c(FALSE, FALSE, TRUE, FALSE)
  shrink <- c(TRUE, FALSE, FALSE, TRUE)
  wide <- format_columns(headers, cols, right, width = 200, shrink = shrink)
  expect_identical(wide, format_columns(headers, cols, right))
  for (w in c(30, 40, 50, 60, 80)) {
    out <- format_columns(headers, cols, right, width = w, shrink = shrink)
    expect_lte(max(nchar(out, "width")), w)
  }
  # Names are cut, the widest first: the file names fit as they are.
  fit <- fit_columns(headers, cols, right, width = 60, shrink = shrink)
  expect_identical(fit$left_out, character())
  expect_identical(nchar(fit$cells[[1]][[2]]), 23L)
  expect_identical(fit$cells[[4]][[2]], "file-00001.safetensors")
  fit <- fit_columns(headers, cols, right, width = 40, shrink = shrink)
  expect_identical(fit$left_out, "file")
  # Without leaving columns out, names go down to 12 columns.
  fit <- fit_columns(headers, cols, right, width = 20, shrink = shrink, drop = FALSE)
  expect_length(fit$cells, 4)
  expect_identical(nchar(fit$cells[[1]][[2]]), 12L)
  expect_snapshot(cat(format_columns(headers, cols, right, width = 40, shrink = shrink), sep = "\n"))
})
