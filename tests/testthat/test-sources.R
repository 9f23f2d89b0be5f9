# Sources: labels, opening, and reading connections (R/sources.R).

test_that("a source's label and its name in messages", {
  expect_identical(source_label("a/b.safetensors"), "a/b.safetensors")
  expect_identical(source_label(raw(3)), "<raw vector>")
  con <- rawConnection(raw(0))
  withr::defer(close(con))
  expect_identical(source_label(con), "<connection>")
  expect_identical(describe_source(raw(1)), "the raw vector")
  expect_identical(describe_source(con), "the connection")
  expect_match(describe_source("x.safetensors"), "x.safetensors", fixed = TRUE)
  expect_identical(source_what("<raw vector>"), "Can't read the raw vector.")
  expect_identical(source_what("<connection>", "open"), "Can't open the connection.")
  expect_true(is_index_path("dir/model.safetensors.index.json"))
  expect_true(is_index_path("INDEX.JSON"))
  expect_false(is_index_path("model.safetensors"))
  expect_false(is_index_path(c("a.json", "b.json")))
  expect_false(is_index_path(raw(2)))
})

test_that("a part holds the handle, its label and the header facts", {
  path <- fixture("multi.safetensors")
  for (src in list(path, read_bytes(path))) {
    part <- open_part(src, "read")
    expect_identical(part$label, source_label(src))
    expect_identical(part$info$name, safe_info(path)$name)
    expect_true(is_open_(part$ptr))
    close_(part$ptr)
    expect_false(is_open_(part$ptr))
  }
  con <- file(path, "rb")
  withr::defer(close(con))
  expect_identical(open_part(con, "read")$info$name, safe_info(path)$name)
  expect_error(open_part(list(), "read"), class = "safetensors_error_invalid_argument")
  cnd <- expect_error(open_part(withr::local_tempfile(), "read"), class = "safetensors_error_file_not_found")
  expect_match(conditionMessage(cnd), "Can't open")
  cnd <- expect_error(open_part(withr::local_tempfile(), "read", verb = "read"), class = "safetensors_error_file_not_found")
  expect_match(conditionMessage(cnd), "Can't read")
})

test_that("connections are read in chunks that cover the bytes in order", {
  part <- list(label = "<connection>")
  collect <- function(con, n, size) {
    got <- list()
    safetensors:::read_chunks(con, n, size, part, "w", NULL, function(chunk, offset) {
      got[[length(got) + 1]] <<- list(chunk = chunk, offset = offset)
    })
    got
  }
  con <- rawConnection(as.raw(1:10))
  withr::defer(close(con))
  got <- collect(con, 7, 3)
  expect_identical(vapply(got, function(g) g$offset, numeric(1)), c(0, 3, 6))
  expect_identical(do.call(c, lapply(got, function(g) g$chunk)), as.raw(1:7))
  # Nothing past the `n` bytes is read.
  expect_identical(readBin(con, "raw", 10), as.raw(8:10))

  short <- rawConnection(as.raw(1:5))
  withr::defer(close(short))
  cnd <- expect_error(collect(short, 8, 3), class = "safetensors_error_incomplete_buffer")
  expect_match(conditionMessage(cnd), "after 5 of the 8 bytes", fixed = TRUE)
  expect_identical(cnd$tensor, "w")
})


test_that("paths with non-ASCII characters work, whatever encoding R marks them with", {
  skip_if_not(l10n_info()[["UTF-8"]], "the session is not in a UTF-8 locale")
  root <- withr::local_tempdir()
  dir <- file.path(root, "模型")
  dir.create(dir)
  path <- file.path(dir, "Grüße.safetensors")
  x <- list(w = matrix(c(1.5, 2, 3, 4), 2))
  safe_save_file(x, path)
  expect_true(file.exists(path))
  expect_identical(as.vector(safe_load_file(path)$w), as.vector(x$w))
  expect_identical(safe_info(path)$name, "w")
  h <- safe_open(path)
  expect_identical(as.vector(h$w), as.vector(x$w))
  close(h)
  # The same name marked as Latin-1.
  latin <- iconv(file.path(root, "café.safetensors"), "UTF-8", "latin1")
  expect_identical(Encoding(latin), "latin1")
  safe_save_file(x, latin)
  expect_true(file.exists(file.path(root, "café.safetensors")))
  expect_identical(names(safe_load_file(latin)), "w")
  # Tensor names marked as Latin-1 find their tensors.
  safe_save_file(list("café" = 1), path)
  name <- iconv("café", "UTF-8", "latin1")
  expect_identical(names(safe_load_file(path, tensors = name)), "café")
  h <- safe_open(path)
  expect_identical(as.vector(h[[name]]), 1)
  close(h)
})
