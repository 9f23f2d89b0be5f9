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

test_that("a file that isn't a safetensors file says what it looks like", {
  zip <- function(name) {
    c(
      charToRaw("PK"), as.raw(c(3, 4, 0x14, 0, 0, 0, 8, 0)), raw(16),
      writeBin(nchar(name), raw(), size = 2, endian = "little"), raw(2), charToRaw(name), raw(100)
    )
  }
  files <- list(
    "pytorch_model.bin" = zip("archive/data.pkl"),
    "arrays.npz" = zip("weight.npy"),
    "model.keras" = zip("metadata.json"),
    "legacy.pt" = c(as.raw(c(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19)), raw(50)),
    "state.pkl" = c(as.raw(c(0x80, 0x04, 0x95)), raw(20)),
    "model.gguf" = c(charToRaw("GGUF"), as.raw(c(3, 0, 0, 0)), raw(40)),
    "weight.npy" = c(as.raw(0x93), charToRaw("NUMPY"), as.raw(c(1, 0)), charToRaw("v\001{'descr': '<f4'")),
    "model.h5" = c(as.raw(c(0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a)), raw(40)),
    "model.rds" = c(as.raw(c(0x1f, 0x8b, 8, 0, 1, 2, 3, 4)), raw(20)),
    "model.html" = charToRaw("<!DOCTYPE html>\n<html><body>Not Found</body></html>\n"),
    "config.safetensors" = charToRaw("{\n  \"architectures\": [\"BertModel\"]\n}\n"),
    "notes.txt" = charToRaw("These are my notes about the model.\n"),
    "random.bin" = as.raw(c(0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3))
  )
  # Relative paths, so that messages don't depend on the temporary directory.
  withr::local_dir(withr::local_tempdir())
  for (name in names(files)) {
    writeBin(files[[name]], name)
  }
  expect_snapshot(error = TRUE, {
    safe_load_file("pytorch_model.bin")
    safe_load_file("arrays.npz")
    safe_load_file("model.keras")
    safe_load_file("legacy.pt")
    safe_load_file("state.pkl")
    safe_load_file("model.gguf")
    safe_load_file("weight.npy")
    safe_load_file("model.h5")
    safe_load_file("model.rds")
    safe_load_file("model.html")
    safe_load_file("config.safetensors")
    safe_load_file("notes.txt")
    safe_load_file("random.bin")
  })
  # From a raw vector and from a connection (which shows only 8 bytes).
  zip_con <- rawConnection(files[["pytorch_model.bin"]])
  withr::defer(close(zip_con))
  html_con <- rawConnection(files[["model.html"]])
  withr::defer(close(html_con))
  expect_snapshot(error = TRUE, {
    safe_deserialize(files[["arrays.npz"]])
    safe_load_file(zip_con)
    safe_info(html_con)
  })
  # The classes stay those of the length check.
  expect_error(safe_load_file("pytorch_model.bin"), class = "safetensors_error_header_too_large")
  expect_error(safe_open("pytorch_model.bin"), class = "safetensors_error_format")
})
