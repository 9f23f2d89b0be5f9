# Hostile and broken files: each gives its own classed error, through every
# way of reading a file (eager, lazy, header only), and never hurts the R
# session.

cases <- malformed_cases()

test_that("the suite covers every rule", {
  expect_gte(length(cases), 30)
  kinds <- unique(vapply(cases, `[[`, "", 2))
  expect_setequal(kinds, c(
    "header_too_small", "header_too_large", "invalid_header_length", "invalid_header",
    "invalid_offset", "invalid_tensor_info", "incomplete_buffer", "overflow", "misaligned",
    "duplicate_name"
  ))
})

for (name in names(cases)) {
  local({
    bytes <- cases[[name]][[1]]
    class <- paste0("safetensors_error_", cases[[name]][[2]])
    test_that(paste("malformed file:", name), {
      path <- local_st_file(bytes)
      for (backend in c("read", "mmap")) {
        err <- expect_error(safe_load_file(path, backend = backend), class = class)
        expect_s3_class(err, "safetensors_error_format")
        expect_s3_class(err, "safetensors_error")
        expect_match(conditionMessage(err), basename(path), fixed = TRUE)
      }
      expect_error(safe_load_file(path, framework = "raw"), class = class)
      expect_error(safe_deserialize(bytes), class = class)
      expect_error(safe_open(path), class = class)
      expect_error(safe_open(bytes), class = class)
      expect_error(safe_info(path), class = class)
      expect_error(safe_info(bytes), class = class)
      con <- file(path)
      expect_error(safe_load_file(con), class = class)
    })
  })
}

test_that("a Git LFS pointer is recognised in the message", {
  path <- local_st_file(cases$git_lfs_pointer[[1]])
  expect_error(safe_load_file(path), "Git LFS", class = "safetensors_error_header_too_large")
})

test_that("errors about one tensor name it", {
  path <- local_st_file(cases$shape_length_mismatch[[1]])
  err <- expect_error(safe_load_file(path), class = "safetensors_error_invalid_tensor_info")
  expect_identical(err$tensor, "w")
})

test_that("what the reference accepts loads", {
  ok <- list(
    leading_and_trailing_whitespace = st_bytes(" \n\t{} \r\n"),
    null_metadata = st_bytes('{"__metadata__":null}'),
    unknown_field = st_bytes('{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":[1,2]}}', 2),
    zero_size_sharing_offset = st_bytes(obj(entry("z", "F32", c(0, 3), 0, 0), entry("w", "U8", 1, 0, 1)), 1),
    scalar = st_bytes(obj(entry("s", "I16", "", 0, 2)), as.raw(c(1, 1))),
    empty_name = st_bytes(obj(entry("", "U8", 1, 0, 1)), 1),
    escaped_name = st_bytes(obj(entry("\\u0041", "U8", 1, 0, 1)), 1)
  )
  for (bytes in ok) {
    expect_type(safe_deserialize(bytes), "list")
    expect_type(safe_load_file(local_st_file(bytes), backend = "mmap"), "list")
  }
  x <- safe_deserialize(ok$escaped_name)
  expect_named(x, "A")
  expect_identical(safe_deserialize(ok$scalar)$s, structure(257L, shape = integer(0), dtype = "I16"))
})

test_that("R survives every malformed file in a child process", {
  skip_if_not_installed("callr")
  dir <- withr::local_tempdir()
  paths <- vapply(names(cases), function(name) {
    p <- file.path(dir, paste0(name, ".safetensors"))
    writeBin(cases[[name]][[1]], p)
    p
  }, character(1))
  # The child loads each file in turn, then proves it still works.
  res <- callr::r(
    function(paths, error_classes) {
      classes <- error_classes(paths)
      list(classes = classes, alive = sum(1:10))
    },
    args = list(paths = unname(paths), error_classes = error_classes),
    libpath = .libPaths()
  )
  expect_identical(res$alive, 55L)
  expect_length(res$classes, length(cases))
  for (i in seq_along(cases)) {
    want <- paste0("safetensors_error_", cases[[i]][[2]])
    got <- strsplit(res$classes[[i]], " ")[[1]]
    expect(
      want %in% got && "safetensors_error_format" %in% got,
      sprintf("case %s: expected class %s in the child, got %s", names(cases)[[i]], want, res$classes[[i]])
    )
  }
})

test_that("FIFOs, devices and directories are refused at once", {
  skip_on_os("windows")
  skip_if_not_installed("callr")
  dir <- withr::local_tempdir()
  fifo <- file.path(dir, "fifo.safetensors")
  skip_if(system2("mkfifo", shQuote(fifo)) != 0, "mkfifo is not available")
  # In a child with a time limit: opening a FIFO without a writer used to
  # block for ever.
  res <- callr::r(
    function(paths) {
      vapply(paths, function(p) {
        tryCatch({
          safetensors::safe_load_file(p)
          NA_character_
        }, error = function(e) class(e)[[1]])
      }, character(1))
    },
    args = list(paths = c(fifo, "/dev/zero", dir)),
    libpath = .libPaths(),
    timeout = 60
  )
  expect_identical(unname(res), rep("safetensors_error_io", 3))
})
