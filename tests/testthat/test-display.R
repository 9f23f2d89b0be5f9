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
  out <- format_metadata(c(format = "pt", note = long))
  expect_identical(out[[1]], "  format: pt")
  expect_identical(nchar(sub(".*: ", "", out[[2]])), 60L)
  expect_match(out[[2]], "\\.\\.\\.$")
})
