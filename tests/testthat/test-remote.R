# Remote files: safe_info(), safe_open() (tensors and slices),
# safe_load_file() and shard indexes over HTTP range requests, against
# range-server.py on 127.0.0.1 (helper-http.R): the same results as local
# files, the requests and bytes the issue allows, the same errors for a
# hostile server as for a hostile file, and Ctrl-C.

# Serves `x` saved as `name` (with `...` for safe_save_file()) from `srv`;
# returns the local path.
serve <- function(srv, x, name = "model.safetensors", ...) {
  path <- file.path(srv$dir, name)
  safe_save_file(x, path, ...)
  path
}

test_that("headers come in one request of at most 64 KiB", {
  srv <- local_http_server()
  path <- serve(srv, http_model(), metadata = list(format = "pt"))
  url <- srv$url("model.safetensors")
  expect_identical(safe_info(url), safe_info(path))
  expect_identical(safe_metadata(url), c(format = "pt"))
  s <- safe_summary(url)
  expect_identical(s[names(s) != "label"], safe_summary(path)[names(s) != "label"])
  expect_identical(s$label, url)
  log <- srv$log()
  expect_identical(log$range, rep("bytes=0-65535", 3))
  expect_identical(log$sent, rep(65536L, 3))
  expect_true(all(is.na(log$auth)))
})

test_that("a connection dropped in the first request is retried as later ones are", {
  srv <- local_http_server()
  path <- serve(srv, http_model())
  want <- safe_info(path)
  # drop1: the first request for the path sends half of its bytes and
  # drops the connection; the second is answered in full.
  for (i in 1:5) {
    srv$clear()
    url <- srv$url(sprintf("model.safetensors?try=%d", i), "drop1")
    expect_identical(safe_info(url)[, c("name", "dtype", "bytes")], want[, c("name", "dtype", "bytes")])
    log <- srv$log()
    expect_identical(log$range, rep("bytes=0-65535", 2))
    expect_identical(log$sent, c(32768L, 65536L))
  }
  srv$clear()
  expect_identical(safe_load_file(srv$url("model.safetensors?load", "drop1")), safe_load_file(path))
  expect_identical(srv$log()$sent[1:2], c(32768L, 65536L))
  # A server that drops more often than `safetensors.http_retries` allows
  # is an HTTP error after 1 + retries requests, whether a drop shows as
  # the request fails or as its body is read (both happen, by timing).
  withr::local_options(safetensors.http_retries = 1)
  for (i in 1:10) {
    srv$clear()
    cnd <- expect_error(safe_info(srv$url(sprintf("model.safetensors?fail=%d", i), "drop9")), class = "safetensors_error_http")
    expect_true(is.na(cnd$status))
    expect_identical(nrow(srv$log()), 2L)
  }
})

test_that("a header longer than 64 KiB takes a second request for the rest", {
  srv <- local_http_server()
  x <- setNames(lapply(1:1500, function(i) c(i, i)), sprintf("model.layers.%04d.some_long_parameter_name.weight", 1:1500))
  path <- serve(srv, x)
  n <- safe_info(path)$begin[[1]]
  expect_gt(n, 65536)
  expect_identical(safe_info(srv$url("model.safetensors")), safe_info(path))
  log <- srv$log()
  expect_identical(log$range, c("bytes=0-65535", sprintf("bytes=65536-%d", n - 1)))
  # Exactly the header's bytes.
  expect_identical(sum(log$sent), as.integer(n))
})

test_that("a tensor takes one request for its bytes; adjacent tensors share one", {
  srv <- local_http_server()
  x <- http_model()
  path <- serve(srv, x)
  info <- safe_info(path)
  local <- safe_open(path)
  withr::defer(close(local))
  h <- safe_open(srv$url("model.safetensors"))
  withr::defer(close(h))
  expect_s3_class(h, "safetensors_file")
  expect_identical(names(h), names(local))
  expect_match(format(h)[[2]], "read over HTTP on demand")
  srv$clear()
  # The first tensor begins in the first 64 KiB, which came with the header.
  expect_lt(info$begin[[1]], 65536)
  expect_identical(h$embed, local$embed)
  expect_identical(srv$log()$range, sprintf("bytes=65536-%d", info$end[[1]] - 1))
  srv$clear()
  expect_identical(h[["layer.weight"]], local[["layer.weight"]])
  expect_identical(h$steps, local$steps)
  at <- match("layer.weight", info$name)
  log <- srv$log()
  expect_identical(log$range[[1]], sprintf("bytes=%d-%d", info$begin[[at]], info$end[[at]] - 1))
  expect_identical(log$sent, c(as.integer(info$bytes[[at]]), 4L))
  # Neighbours in one request, others apart, repeats once.
  srv$clear()
  got <- h[c("layer.bias", "layer.weight", "mask", "layer.bias")]
  expect_identical(got, local[c("layer.bias", "layer.weight", "mask", "layer.bias")])
  log <- srv$log()
  w <- match(c("layer.weight", "layer.bias", "mask"), info$name)
  expect_identical(log$range, c(
    sprintf("bytes=%d-%d", info$begin[[w[[1]]]], info$end[[w[[2]]]] - 1),
    sprintf("bytes=%d-%d", info$begin[[w[[3]]]], info$end[[w[[3]]]] - 1)
  ))
  # Other frameworks, the R6 class.
  expect_identical(safe_open(srv$url("model.safetensors"), framework = "raw")$embed, safe_open(path, framework = "raw")$embed)
  st <- safetensors$new(srv$url("model.safetensors"))
  expect_identical(st$get_tensor("embed"), local$embed)
})

test_that("a slice fetches only the rows it needs", {
  srv <- local_http_server()
  x <- list(w = matrix(as.numeric(1:(1000 * 512)), 1000, 512), v = 1:10)
  path <- serve(srv, x, dtype = c(w = "F32"))
  info <- safe_info(path)
  local <- safe_open(path)
  withr::defer(close(local))
  h <- safe_open(srv$url("model.safetensors"))
  withr::defer(close(h))
  srv$clear()
  # Rows of 2 kB; those in the first 64 KiB came with the header.
  expect_identical(h$slice("w")[2:3, ], local$slice("w")[2:3, ])
  expect_identical(nrow(srv$log()), 0L)
  expect_identical(h$slice("w")[101:102, ], local$slice("w")[101:102, ])
  log <- srv$log()
  row <- 512 * 4
  expect_identical(log$range, sprintf("bytes=%d-%d", info$begin[[1]] + 100 * row, info$begin[[1]] + 102 * row - 1))
  # Rows far apart: one request each; columns of nearby rows: one request.
  srv$clear()
  expect_identical(h$slice("w")[c(900, 50), 1:3, drop = FALSE], local$slice("w")[c(900, 50), 1:3, drop = FALSE])
  expect_identical(nrow(srv$log()), 2L)
  expect_identical(srv$log()$sent, c(12L, 12L))
  srv$clear()
  expect_identical(h$slice("w")[41:45, 7], local$slice("w")[41:45, 7])
  expect_identical(nrow(srv$log()), 1L)
  expect_identical(srv$log()$sent, 4L * 512L * 4L + 4L)
  expect_identical(safe_slice(srv$url("model.safetensors"), "v", 2:3), local$slice("v")[2:3])
  expect_error(h$slice("w")[1001, 1], class = "safetensors_error_invalid_slice")
})

test_that("a whole file streams into its result in one request after the first", {
  srv <- local_http_server()
  x <- http_model()
  path <- serve(srv, x, metadata = list(format = "pt"))
  url <- srv$url("model.safetensors")
  expect_identical(safe_load_file(url), safe_load_file(path))
  log <- srv$log()
  size <- file.size(path)
  begin <- safe_info(path)$begin[[1]]
  # The data the first answer held are not fetched again.
  expect_gt(size, 65536)
  expect_identical(log$range, c("bytes=0-65535", sprintf("bytes=65536-%d", size - 1)))
  expect_identical(sum(log$sent), as.integer(size))
  expect_identical(safe_load_file(url, framework = "raw"), safe_load_file(path, framework = "raw"))
  srv$clear()
  expect_identical(safe_load_file(url, tensors = c("steps", "embed")), safe_load_file(path, tensors = c("steps", "embed")))
  expect_identical(nrow(srv$log()), 3L)
  expect_error(safe_load_file(url, tensors = "nope"), class = "safetensors_error_tensor_not_found")
})

test_that("a tensor larger than a piece is read in pieces of one request", {
  skip_if_memory_below(1)
  srv <- local_http_server()
  x <- list(a = 1:3, big = matrix(as.numeric(seq_len(4600 * 1000)), 4600, 1000), z = 2)
  path <- serve(srv, x, dtype = c(big = "F32"))
  h <- safe_open(srv$url("model.safetensors"))
  withr::defer(close(h))
  srv$clear()
  expect_identical(h$big, safe_open(path)$big)
  log <- srv$log()
  expect_identical(nrow(log), 1L)
  big <- safe_info(path)[2, ]
  expect_identical(log$range, sprintf("bytes=65536-%d", big$end - 1))
  expect_identical(log$sent, as.integer(big$end - 65536))
  expect_identical(safe_load_file(srv$url("model.safetensors"), framework = "raw")$big, safe_load_file(path, framework = "raw")$big)
})

test_that("remote reads keep the int64 and uint8 choices and their warnings", {
  skip_if_not_installed("bit64")
  srv <- local_http_server()
  # Past the first 64 KiB, so the tensors are fetched and read in pieces.
  x <- list(
    pad = as.numeric(1:10000),
    u64 = structure(c(0, 2^63 + 2^12, 2^53), dtype = "U64"),
    u8 = as.raw(0:255)
  )
  path <- serve(srv, x)
  url <- srv$url("model.safetensors")
  expect_gt(safe_info(path)$begin[[2]], 65536)
  for (choices in list(c("integer64", "raw"), c("character", "integer"))) {
    local <- suppressWarnings(safe_load_file(path, int64 = choices[[1]], uint8 = choices[[2]]))
    remote <- suppressWarnings(safe_load_file(url, int64 = choices[[1]], uint8 = choices[[2]]))
    expect_identical(remote, local)
    h <- safe_open(url, int64 = choices[[1]], uint8 = choices[[2]])
    expect_identical(suppressWarnings(h$u64), local$u64)
    expect_identical(h$u8, local$u8)
    close(h)
  }
  expect_warning(safe_load_file(url, int64 = "integer64"), class = "safetensors_warning_range")
  expect_no_warning(safe_load_file(url, int64 = "character"))
})

test_that("a small file arrives whole with its header", {
  srv <- local_http_server()
  path <- serve(srv, list(a = 1:4, b = 0.5))
  url <- srv$url("model.safetensors")
  expect_identical(safe_load_file(url), safe_load_file(path))
  h <- safe_open(url)
  expect_identical(h$b, safe_open(path)$b)
  expect_identical(h$slice("a")[2], structure(2L, dtype = "I32"))
  expect_match(format(h)[[2]], "in memory")
  close(h)
  log <- srv$log()
  expect_identical(log$range, c("bytes=0-65535", "bytes=0-65535"))
  expect_identical(log$sent, rep(as.integer(file.size(path)), 2))
})

test_that("a server that ignores ranges serves whole files only", {
  srv <- local_http_server()
  x <- http_model()
  path <- serve(srv, x)
  url <- srv$url("model.safetensors", "norange")
  expect_identical(safe_load_file(url), safe_load_file(path))
  expect_identical(safe_load_file(url, framework = "raw"), safe_load_file(path, framework = "raw"))
  log <- srv$log()
  expect_identical(log$status, c(200L, 200L))
  expect_identical(log$sent, rep(as.integer(file.size(path)), 2))
  cnd <- expect_error(safe_info(url), class = "safetensors_error_http")
  expect_identical(cnd$status, 200L)
  expect_match(conditionMessage(cnd), "ignores range requests")
  expect_error(safe_open(url), class = "safetensors_error_http")
  expect_error(safe_load_file(url, tensors = "embed"), class = "safetensors_error_http")
})

test_that("shard indexes resolve their shards relative to the index URL", {
  srv <- local_http_server()
  x <- http_model()
  dir.create(file.path(srv$dir, "org", "model"), recursive = TRUE)
  index <- safe_save_file(x, file.path(srv$dir, "org", "model"), max_shard_size = 40000)
  expect_match(index, "index.json$")
  url <- srv$url("org/model/model.safetensors.index.json")
  expect_identical(safe_load_file(paste0(url, "?download=true")), safe_load_file(index))
  log <- srv$log()
  expect_identical(log$path[[1]], "/org/model/model.safetensors.index.json?download=true")
  expect_true(all(grepl("^/org/model/model-0000[0-9]-of-0000[0-9].safetensors$", log$path[-1])))
  expect_identical(safe_info(url), safe_info(index))
  h <- safe_open(url)
  expect_match(format(h)[[2]], "shards, read over HTTP on demand")
  expect_identical(h$layer.bias, safe_load_file(index)$layer.bias)
  close(h)
  # Through a redirect to another host, and for a server ignoring ranges.
  expect_identical(safe_load_file(srv$url("org/model/model.safetensors.index.json", "to-localhost")), safe_load_file(index))
  expect_identical(safe_load_file(srv$url("org/model/model.safetensors.index.json", "norange")), safe_load_file(index))
  cnd <- expect_error(safe_load_file(srv$url("org/nothing/model.safetensors.index.json")), class = "safetensors_error_http")
  expect_identical(cnd$status, 404L)
})

test_that("a hostile server gets the errors a hostile file gets", {
  srv <- local_http_server()
  path <- serve(srv, http_model())
  size <- file.size(path)
  # A header length past the end, and a header whose tensors don't cover
  # the file: as the same bytes in a local file.
  bad_len <- st_bytes('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', as.raw(1:2), n = 500)
  writeBin(bad_len, file.path(srv$dir, "len.safetensors"))
  local <- expect_error(safe_info(file.path(srv$dir, "len.safetensors")), class = "safetensors_error")
  remote <- expect_error(safe_info(srv$url("len.safetensors")), class = "safetensors_error")
  expect_identical(class(remote), class(local))
  expect_s3_class(remote, "safetensors_error_invalid_header_length")
  short_data <- st_bytes('{"a":{"dtype":"U8","shape":[20],"data_offsets":[0,20]}}', as.raw(1:2))
  writeBin(short_data, file.path(srv$dir, "short.safetensors"))
  expect_error(safe_info(srv$url("short.safetensors")), class = "safetensors_error_incomplete_buffer")
  writeBin(st_bytes("{not json", as.raw(1:2)), file.path(srv$dir, "json.safetensors"))
  expect_error(safe_open(srv$url("json.safetensors")), class = "safetensors_error_invalid_header")
  writeBin(raw(), file.path(srv$dir, "empty.safetensors"))
  expect_error(safe_info(srv$url("empty.safetensors")), class = "safetensors_error_header_too_small")
  # A server that lies about the file's length: as a file with trailing
  # bytes, or one cut short.
  expect_error(safe_info(srv$url("model.safetensors", sprintf("total%d", size + 10))), class = "safetensors_error_incomplete_buffer")
  expect_error(safe_info(srv$url("model.safetensors", sprintf("total%d", size - 10))), class = "safetensors_error_format")
  # Bodies shorter or longer than the range, or for other bytes.
  for (mode in c("short", "long", "shift")) {
    expect_error(safe_load_file(srv$url("model.safetensors", mode)), class = "safetensors_error_incomplete_buffer")
  }
  # A file that changes between the header and a tensor.
  h <- safe_open(srv$url("model.safetensors"))
  withr::defer(close(h))
  safe_save_file(list(a = 1), path)
  expect_error(h$embed, class = "safetensors_error_file_changed")
  expect_error(safe_info(srv$url("missing.safetensors")), class = "safetensors_error_http")
  port <- function(x) gsub(":[0-9]+/", ":PORT/", x)
  expect_snapshot(safe_info(srv$url("missing.safetensors")), error = TRUE, transform = port)
  expect_snapshot(safe_load_file(srv$url("model.safetensors", "short")), error = TRUE, transform = port)
  expect_snapshot(safe_open(srv$url("len.safetensors")), error = TRUE, transform = port)
})

test_that("a handle remembers where its URL redirects to", {
  srv <- local_http_server()
  path <- serve(srv, http_model())
  h <- safe_open(srv$url("model.safetensors", "to-localhost"))
  withr::defer(close(h))
  expect_identical(h$steps, safe_open(path)$steps)
  log <- srv$log()
  expect_identical(log$status, c(302L, 206L, 206L))
  expect_identical(log$host, paste0(c("127.0.0.1:", "localhost:", "localhost:"), srv$port))
  # A remembered URL that fails (as a signed URL that expired): the request
  # starts again from the URL given.
  srv$clear()
  cache <- .subset2(h, "parts")[[1]]$cache
  cache$location <- srv$url("expired.safetensors", host = "localhost")
  expect_identical(h$mask, safe_open(path)$mask)
  expect_identical(srv$log()$status, c(404L, 302L, 206L))
  srv$clear()
  expect_identical(h$mask, safe_open(path)$mask)
  expect_identical(srv$log()$status, 206L)
})

test_that("credentials follow the rules over redirects", {
  srv <- local_http_server()
  serve(srv, list(a = 1:3))
  withr::local_envvar(HF_TOKEN = "hf_secret_token")
  withr::local_options(safetensors.http_headers = c(`X-Test` = "yes"))
  expect_identical(as.vector(safe_load_file(srv$url("model.safetensors", "to-localhost"))$a), 1:3)
  log <- srv$log()
  expect_identical(log$test_header, c("yes", NA))
  expect_true(all(is.na(log$auth)))
})

test_that("torch tensors stream from remote files", {
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed())
  srv <- local_http_server()
  x <- http_model()
  path <- serve(srv, x, dtype = c(embed = "F32"))
  url <- srv$url("model.safetensors")
  remote <- safe_load_file(url, framework = "torch")
  local <- safe_load_file(path, framework = "torch")
  for (n in names(local)) expect_true(torch::torch_equal(remote[[n]], local[[n]]), label = n)
  h <- safe_open(url, framework = "torch")
  expect_true(torch::torch_equal(h$embed, local$embed))
  close(h)
  norange <- safe_load_file(srv$url("model.safetensors", "norange"), framework = "torch")
  expect_true(torch::torch_equal(norange$layer.weight, local$layer.weight))
})

test_that("modules load from remote files and shard indexes", {
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed())
  srv <- local_http_server()
  torch::torch_manual_seed(3)
  # Over 64 KiB, so the weights come with range requests of their own.
  trained <- torch::nn_linear(200, 100)
  safe_save_model(trained, file.path(srv$dir, "model.safetensors"))
  dir.create(file.path(srv$dir, "sharded"))
  safe_save_model(trained, file.path(srv$dir, "sharded"), max_shard_size = 50000)
  x <- torch::torch_randn(3, 200)
  want <- trained(x)
  for (url in c(srv$url("model.safetensors"), srv$url("model.safetensors", "norange"), srv$url("sharded/model.safetensors.index.json"))) {
    model <- torch::nn_linear(200, 100)
    res <- safe_load_model(model, url)
    expect_identical(res, list(missing = character(), unexpected = character()))
    expect_true(torch::torch_equal(model(x), want), label = url)
  }
  # A tensor in pieces smaller than it, from one request past the first
  # 64 KiB, into a transposed tensor.
  h <- safe_open(srv$url("model.safetensors"))
  part <- hget(h, "parts")[[1]]
  i <- match("weight", part$info$name)
  expect_gt(part$info$end[[i]] + 8 + part$info$header_len, 65536)
  srv$clear()
  for (chunk in c(400, 4096, 1e6)) {
    dest <- torch::torch_zeros(200, 100)$t()
    torch_read_piecewise(part, "weight", dest, chunk)
    expect_true(torch::torch_equal(dest, trained$weight), label = chunk)
  }
  expect_identical(nrow(srv$log()), 3L)
  close(h)
})

test_that("Ctrl-C stops a transfer at once", {
  skip_on_os("windows")
  skip_if_not_installed("callr")
  srv <- local_http_server()
  # 64 KiB every 0.2 s: 4 MB take 12 s.
  serve(srv, list(w = as.numeric(1:5e5)))
  rs <- callr::r_session$new(options = callr::r_session_options(libpath = .libPaths()))
  withr::defer(rs$close())
  url <- srv$url("model.safetensors", "slow")
  rs$call(function(url) {
    tryCatch(
      {
        safetensors::safe_load_file(url)
        list(class = "finished", time = Sys.time())
      },
      error = function(e) list(class = class(e)[[1]], time = Sys.time()),
      interrupt = function(e) list(class = "interrupt", time = Sys.time())
    )
  }, list(url))
  Sys.sleep(1.5)
  t0 <- Sys.time()
  rs$interrupt()
  expect_identical(rs$poll_process(10000), "ready")
  res <- rs$read()$result
  expect_true(res$class %in% c("interrupt", "safetensors_error_interrupted"), label = res$class)
  expect_lt(as.numeric(difftime(res$time, t0, units = "secs")), 1)
  # The session goes on.
  expect_identical(rs$run(function() 1 + 1), 2)
})
