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

# A socket connection on 127.0.0.1 whose other end, a child process, writes
# `payload` and then keeps the connection open for `hold` seconds, as a
# client waiting for a reply does. The socket's own timeout is 10 seconds.
local_socket_sending <- function(payload, hold = 30, env = parent.frame()) {
  srv <- NULL
  for (i in 1:20) {
    port <- sample(20000:60000, 1)
    srv <- tryCatch(serverSocket(port), error = function(e) NULL)
    if (!is.null(srv)) break
  }
  if (is.null(srv)) skip("no free port on 127.0.0.1")
  on.exit(close(srv))
  writer <- callr::r_bg(function(port, payload, hold) {
    con <- socketConnection("127.0.0.1", port, blocking = TRUE, open = "wb")
    writeBin(payload, con)
    flush(con)
    Sys.sleep(hold)
    close(con)
  }, args = list(port, payload, hold))
  withr::defer(writer$kill(), envir = env)
  con <- socketAccept(srv, blocking = TRUE, open = "rb", timeout = 10)
  withr::defer(close(con), envir = env)
  con
}

test_that("the end check never waits on a socket its writer keeps open", {
  skip_on_cran()
  skip_if_not_installed("callr")
  bytes <- safe_serialize(list(a = 1:3, b = matrix(runif(6), 2)))
  for (framework in c("r", "raw")) {
    con <- local_socket_sending(bytes)
    seconds <- system.time(x <- safe_load_file(con, framework = framework))[["elapsed"]]
    expect_lt(seconds, 5)
    expect_identical(x[names(x)], safe_deserialize(bytes, framework = framework)[names(x)])
  }
  # Bytes after the data that have arrived are still an error.
  for (framework in c("r", "raw")) {
    con <- local_socket_sending(c(bytes, as.raw(1:3)))
    Sys.sleep(0.5)
    seconds <- system.time(
      expect_error(safe_load_file(con, framework = framework), class = "safetensors_error_incomplete_buffer")
    )[["elapsed"]]
    expect_lt(seconds, 5)
  }
})

test_that("the end check looks at what a connection holds without waiting", {
  bytes <- safe_serialize(list(a = 1:3))
  path <- withr::local_tempfile()
  writeBin(c(bytes, as.raw(0)), path)
  expect_error(safe_load_file(file(path)), class = "safetensors_error_incomplete_buffer")
  con <- file(path, "rb")
  withr::defer(close(con))
  expect_true(stream_has_more(con))
  readBin(con, "raw", length(bytes) + 1)
  expect_false(stream_has_more(con))
  writeBin(bytes, path)
  expect_identical(names(safe_load_file(file(path))), "a")
  gz <- withr::local_tempfile(fileext = ".gz")
  out <- gzfile(gz, "wb")
  writeBin(c(bytes, as.raw(0)), out)
  close(out)
  expect_error(safe_load_file(gzfile(gz)), class = "safetensors_error_incomplete_buffer")
  rc <- rawConnection(c(bytes, as.raw(0)))
  withr::defer(close(rc))
  expect_error(safe_load_file(rc), class = "safetensors_error_incomplete_buffer")
  skip_on_os("windows")
  # A pipe can't be asked without waiting: it is not checked.
  writeBin(c(bytes, as.raw(0)), path)
  p <- pipe(paste("cat", shQuote(path)), "rb")
  withr::defer(close(p))
  expect_identical(names(safe_load_file(p)), "a")
})

test_that("a folder's checkpoint: its single file, else its index, diffusers' names included", {
  expect_identical(checkpoint_in(c("config.json", "model.safetensors")), "model.safetensors")
  # transformers reads model.safetensors before the index.
  expect_identical(
    checkpoint_in(c("model.safetensors", "model.safetensors.index.json", "model-00001-of-00002.safetensors")),
    "model.safetensors"
  )
  expect_identical(
    checkpoint_in(c("model.safetensors.index.json", "model-00001-of-00002.safetensors")),
    "model.safetensors.index.json"
  )
  expect_identical(
    checkpoint_in(c("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")),
    "diffusion_pytorch_model.safetensors"
  )
  expect_identical(
    checkpoint_in(c("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.fp16.safetensors.index.json")),
    "diffusion_pytorch_model.safetensors.index.json"
  )
  expect_identical(checkpoint_in(c("a.safetensors", "README.md")), "a.safetensors")
  expect_identical(checkpoint_in(c("w.safetensors.index.json", "w-1.safetensors", "w-2.safetensors")), "w.safetensors.index.json")
  expect_null(checkpoint_in(c("a.safetensors", "b.safetensors")))
  expect_null(checkpoint_in(character()))

  dir <- withr::local_tempdir()
  safe_save_file(list(x = 1:3), file.path(dir, "diffusion_pytorch_model.safetensors"))
  safe_save_file(list(x = 4:6), file.path(dir, "diffusion_pytorch_model.fp16.safetensors"))
  dir.create(file.path(dir, "sub.safetensors"))
  expect_identical(as.vector(safe_load_file(dir)$x), 1:3)
})

test_that("a folder is read from its index or its only file, else the error names what it holds", {
  p <- system.file("extdata", "example.safetensors", package = "safetensors")
  dir <- withr::local_tempdir()
  label <- function(x) gsub(dir, "<dir>", x, fixed = TRUE)
  expect_snapshot(error = TRUE, safe_load_file(dir), transform = label)
  # One file of any name is the checkpoint.
  file.copy(p, file.path(dir, "weights.safetensors"))
  writeLines("{}", file.path(dir, "config.json"))
  expect_identical(resolve_folder(dir), file.path(dir, "weights.safetensors"))
  expect_identical(safe_load_file(dir), safe_load_file(p))
  # Two, and none is model.safetensors: the user chooses.
  file.copy(p, file.path(dir, "other.safetensors"))
  expect_error(safe_open(dir), class = "safetensors_error_file_not_found")
  expect_snapshot(error = TRUE, safe_info(dir), transform = label)
  file.copy(p, file.path(dir, "model.safetensors"))
  expect_identical(resolve_folder(dir), file.path(dir, "model.safetensors"))
  # Indexes come first; two of them with none the usual name are an error.
  sub <- file.path(dir, "sub")
  dir.create(sub)
  writeLines("{}", file.path(sub, "a.safetensors.index.json"))
  writeLines("{}", file.path(sub, "b.safetensors.index.json"))
  file.copy(p, file.path(sub, "x.safetensors"))
  expect_snapshot(error = TRUE, safe_metadata(sub), transform = label)
  unlink(file.path(sub, "b.safetensors.index.json"))
  expect_identical(resolve_folder(sub), file.path(sub, "a.safetensors.index.json"))
})

test_that("every error a connection gives while read or written is classed, R's own as parent", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  bytes <- safe_serialize(list(a = 1:3))
  writeBin(bytes, path)
  x <- list(a = 1)
  readers <- list(
    safe_load_file = function(con) safe_load_file(con),
    raw = function(con) safe_load_file(con, framework = "raw"),
    safe_info = function(con) safe_info(con),
    safe_open = function(con) safe_open(con)
  )
  for (r in names(readers)) {
    read <- readers[[r]]
    # Text mode.
    con <- file(path, "r")
    expect_error(read(con), class = "safetensors_error_invalid_argument", label = r)
    close(con)
    # Open for writing only.
    con <- file(withr::local_tempfile(), "wb")
    expect_error(read(con), class = "safetensors_error_invalid_argument", label = r)
    close(con)
    # Closed (destroyed).
    con <- file(path, "rb")
    close(con)
    cnd <- expect_error(read(con), class = "safetensors_error_closed", label = r)
    expect_s3_class(cnd$parent, "error")
    # A file that can't be opened: R's warning saying why is the parent.
    con <- file(file.path(withr::local_tempdir(), "none"))
    cnd <- expect_error(read(con), class = "safetensors_error_io", label = r)
    close(con)
    expect_match(conditionMessage(cnd$parent), "No such file", fixed = TRUE)
  }
  out <- withr::local_tempfile()
  for (mode in c("w", "rb")) {
    con <- file(if (mode == "rb") path else out, mode)
    expect_error(safe_save_file(x, con), class = "safetensors_error_invalid_argument", label = mode)
    close(con)
  }
  con <- file(out, "wb")
  close(con)
  expect_error(safe_save_file(x, con), class = "safetensors_error_closed")
  con <- file(file.path(withr::local_tempdir(), "no", "dir"))
  expect_error(safe_save_file(x, con), class = "safetensors_error_io")
  close(con)
  expect_identical(read_bytes(path), bytes)
  # A broken gzcon(): corrupt compressed data.
  gz <- withr::local_tempfile(fileext = ".gz")
  g <- gzfile(gz, "wb")
  writeBin(bytes, g)
  close(g)
  damaged <- read_bytes(gz)
  damaged[20:30] <- as.raw(0xff)
  writeBin(damaged, gz)
  con <- gzcon(file(gz, "rb"))
  cnd <- expect_error(safe_load_file(con), class = "safetensors_error")
  close(con)
  expect_false(inherits(cnd, "simpleError"))
  # A socket whose writer closes it halfway through the file.
  skip_on_cran()
  skip_if_not_installed("callr")
  con <- local_socket_sending(bytes[seq_len(length(bytes) - 4)], hold = 0)
  expect_error(safe_load_file(con), class = "safetensors_error_incomplete_buffer")
  con <- local_socket_sending(bytes[1:20], hold = 0)
  expect_error(safe_info(con), class = "safetensors_error_invalid_header_length")
  text <- file(path, "r")
  read_only <- file(path, "rb")
  withr::defer({
    close(text)
    close(read_only)
  })
  expect_snapshot(error = TRUE, {
    safe_load_file(text)
    safe_save_file(x, read_only)
  })
})

test_that("a checkpoint path resolves to its single file, else to the index beside it", {
  dir <- withr::local_tempdir()
  file <- file.path(dir, "model.safetensors")
  index <- file.path(dir, "model.safetensors.index.json")
  expect_error(resolve_folder(dir), class = "safetensors_error_file_not_found")
  expect_identical(resolve_folder(file), file)
  safe_save_file(list(a = runif(200), b = runif(200)), dir, max_shard_size = 1000)
  expect_identical(resolve_folder(dir), index)
  expect_identical(resolve_folder(file), index)
  expect_identical(resolve_folder(index), index)
  # A single file beside an index takes precedence, as in transformers.
  writeBin(safe_serialize(list(single = 1)), file)
  expect_identical(resolve_folder(dir), file)
  expect_identical(resolve_folder(file), file)
  # Other names: the only index, with its own single file first.
  other <- withr::local_tempdir()
  safe_save_file(list(a = runif(200), b = runif(200)), file.path(other, "m.safetensors"), max_shard_size = 1000)
  expect_identical(resolve_folder(other), file.path(other, "m.safetensors.index.json"))
  writeBin(safe_serialize(list(single = 1)), file.path(other, "m.safetensors"))
  expect_identical(resolve_folder(other), file.path(other, "m.safetensors"))
  # Not a local path: as given.
  expect_identical(resolve_folder("https://example.org/model.safetensors"), "https://example.org/model.safetensors")
  expect_identical(resolve_folder(raw(2)), raw(2))
})

test_that("connection and folder messages say what is wrong", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  writeBin(safe_serialize(list(a = 1)), path)
  dir <- withr::local_tempdir()
  write_only <- file(withr::local_tempfile(), "wb")
  withr::defer(close(write_only))
  # (A closed connection's message is not snapshotted: R gives its number
  # to the next connection opened, and the snapshot opens some.)
  closed <- file(path, "rb")
  close(closed)
  cnd <- expect_error(safe_load_file(closed), class = "safetensors_error_closed")
  expect_match(conditionMessage(cnd), "It is closed: it is no longer a valid connection.", fixed = TRUE)
  expect_snapshot(error = TRUE, transform = function(s) gsub(dir, "<dir>", s, fixed = TRUE), {
    safe_info(write_only)
    safe_load_file(dir)
  })
})
