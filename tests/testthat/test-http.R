# The HTTP client (R/http.R): credentials, redirects, retries,
# timeouts and errors, against range-server.py on 127.0.0.1
# (helper-http.R). Reading remote safetensors files is test-remote.R.

test_that("a missing curl is a classed error that says how to install it", {
  cnd <- expect_error(check_curl(installed = FALSE), class = "safetensors_error_package_not_installed")
  expect_identical(cnd$package, "curl")
  expect_match(conditionMessage(cnd), "install.packages(\"curl\")", fixed = TRUE)
  expect_match(conditionMessage(cnd), "r-cran-curl", fixed = TRUE)
  expect_null(check_curl(installed = TRUE))
})

test_that("HF_TOKEN goes only to Hugging Face over https; option headers to the first origin", {
  withr::local_envvar(HF_TOKEN = "hf_secret_token", HF_ENDPOINT = NA, HF_HUB_DISABLE_IMPLICIT_TOKEN = NA)
  withr::local_options(safetensors.http_headers = NULL)
  auth <- function(url, origin = url_origin(url_parse(url))) {
    h <- http_headers_for(url, origin)
    if ("Authorization" %in% names(h)) h[["Authorization"]] else NA_character_
  }
  expect_identical(auth("https://huggingface.co/m/resolve/main/x"), "Bearer hf_secret_token")
  expect_identical(auth("https://HF.co/m/resolve/main/x"), "Bearer hf_secret_token")
  for (url in c(
    "http://huggingface.co/m", "https://cdn-lfs.huggingface.co/x", "https://huggingface.co.evil.org/x",
    "https://evil.org/huggingface.co", "https://cas-bridge.xethub.hf.co/x", "http://127.0.0.1:8000/x"
  )) {
    expect_identical(auth(url), NA_character_, label = url)
  }
  # The token after a redirect: only if the new URL is itself a Hub URL.
  hub <- url_origin(url_parse("https://huggingface.co/m"))
  expect_identical(auth("https://huggingface.co/api/resolve-cache/x", hub), "Bearer hf_secret_token")
  expect_identical(auth("https://cdn-lfs.hf.co/x", hub), NA_character_)

  withr::local_options(safetensors.http_headers = c(`X-Test` = "yes", Authorization = "Bearer mine"))
  mine <- url_origin(url_parse("http://127.0.0.1:1/a"))
  expect_identical(http_headers_for("http://127.0.0.1:1/b", mine), c(`X-Test` = "yes", Authorization = "Bearer mine"))
  # Another host, scheme or port: none of them.
  expect_length(http_headers_for("http://localhost:1/b", mine), 0)
  expect_length(http_headers_for("http://127.0.0.1:2/b", mine), 0)
  # The user's Authorization wins over HF_TOKEN on the Hub.
  hub_mine <- http_headers_for("https://huggingface.co/m", hub)
  expect_identical(hub_mine[["Authorization"]], "Bearer mine")
  expect_identical(sum(tolower(names(hub_mine)) == "authorization"), 1L)

  for (bad in list(c("a", "b"), c(x = NA), list(x = "1"), c(`a:b` = "1"), c(x = "a\r\nb"))) {
    withr::local_options(safetensors.http_headers = bad)
    expect_error(http_header_option(), class = "safetensors_error_invalid_argument")
  }
  withr::local_options(safetensors.http_headers = NULL, safetensors.http_timeout = 0)
  expect_error(http_timeout(NULL), class = "safetensors_error_invalid_argument")
  withr::local_options(safetensors.http_timeout = NULL, safetensors.http_retries = -1)
  expect_error(http_retries(NULL), class = "safetensors_error_invalid_argument")
  expect_identical(http_backoff(1:3), c(0.25, 0.5, 1))
})

test_that("secrets are scrubbed from messages", {
  withr::local_envvar(HF_TOKEN = "hf_secret_token")
  withr::local_options(safetensors.http_headers = c(`X-Key` = "key-12345"))
  expect_identical(http_scrub("a hf_secret_token b key-12345 c"), "a *** b *** c")
})

test_that("a range arrives in one request, piece by piece", {
  srv <- local_http_server()
  bytes <- as.raw(sample(0:255, 5000, replace = TRUE))
  writeBin(bytes, file.path(srv$dir, "f.bin"))
  expect_identical(http_fetch(srv$url("f.bin"), 100, 1099), bytes[101:1100])
  pieces <- list()
  http_stream(srv$url("f.bin"), 0, 4999, c(1000, 3000, 1000), function(k, b) pieces[[k]] <<- b, total = 5000)
  expect_identical(lengths(pieces), c(1000L, 3000L, 1000L))
  expect_identical(unlist(pieces), bytes)
  log <- srv$log()
  expect_identical(log$range, c("bytes=100-1099", "bytes=0-4999"))
  expect_identical(log$sent, c(1000L, 5000L))
  expect_identical(http_get(srv$url("f.bin"), limit = 5000), bytes)
  expect_error(http_get(srv$url("f.bin"), limit = 4999), class = "safetensors_error_http")
})

test_that("redirects are followed; credentials don't follow to another host", {
  srv <- local_http_server()
  writeBin(as.raw(1:100), file.path(srv$dir, "f.bin"))
  withr::local_envvar(HF_TOKEN = "hf_secret_token")
  withr::local_options(safetensors.http_headers = c(`X-Test` = "sent"))
  # 127.0.0.1 and localhost are two hosts.
  expect_identical(http_fetch(srv$url("f.bin", "to-localhost"), 0, 9), as.raw(1:10))
  log <- srv$log()
  expect_identical(log$status, c(302L, 206L))
  expect_identical(log$host, paste0(c("127.0.0.1:", "localhost:"), srv$port))
  expect_identical(log$test_header, c("sent", NA))
  expect_identical(log$range, c("bytes=0-9", "bytes=0-9"))
  # The token is never sent over http, whatever the host.
  expect_true(all(is.na(log$auth)))
  # A redirect on the same host keeps them.
  srv$clear()
  expect_identical(http_fetch(srv$url("f.bin", "relative"), 5, 6), as.raw(6:7))
  expect_identical(srv$log()$test_header, c("sent", "sent"))
  # Endless redirects end.
  cnd <- expect_error(http_fetch(srv$url("f.bin", "loop"), 0, 1), class = "safetensors_error_http")
  expect_identical(cnd$status, 302L)
  expect_match(conditionMessage(cnd), "more than 10 times")
})

test_that("HTTP errors are classed, with the status and the URL, secrets redacted", {
  srv <- local_http_server()
  withr::local_envvar(HF_TOKEN = "hf_secret_token")
  cnd <- expect_error(http_fetch(srv$url("nothing.bin"), 0, 1), class = "safetensors_error_http")
  expect_identical(cnd$status, 404L)
  expect_identical(cnd$url, srv$url("nothing.bin"))
  expect_match(conditionMessage(cnd), "404 Not Found")
  cnd <- expect_error(http_fetch(srv$url("x.bin", "status401"), 0, 1), class = "safetensors_error_http")
  expect_identical(cnd$status, 401L)
  expect_match(conditionMessage(cnd), "safetensors.http_headers", fixed = TRUE)
  expect_error(http_fetch(srv$url("x.bin", "status403"), 0, 1), class = "safetensors_error_http")
  writeBin(as.raw(1:10), file.path(srv$dir, "f.bin"))
  cnd <- expect_error(http_fetch(srv$url("f.bin"), 20, 30), class = "safetensors_error_http")
  expect_identical(cnd$status, 416L)
  # A URL's own secrets are redacted.
  url <- paste0(sub("://", "://user:hunter2@", srv$url("nothing.bin")), "?token=abcdef&x=1")
  cnd <- expect_error(http_fetch(url, 0, 1), class = "safetensors_error_http")
  msg <- conditionMessage(cnd)
  expect_false(grepl("hunter2", msg) || grepl("abcdef", msg) || grepl("hf_secret_token", msg))
  expect_false(grepl("hunter2", cnd$url) || grepl("abcdef", cnd$url))
  expect_match(cnd$url, "token=***", fixed = TRUE)
  # Hub URLs get a hint about the token (no request made: an invalid port).
  expect_snapshot(http_status_abort("https://huggingface.co/org/m/resolve/main/model.safetensors", 401, call = NULL), error = TRUE)
  withr::local_envvar(HF_TOKEN = NA, HUGGING_FACE_HUB_TOKEN = NA, HF_TOKEN_PATH = NA, HF_HOME = withr::local_tempdir())
  expect_snapshot(http_status_abort("https://huggingface.co/org/m/resolve/main/model.safetensors", 403, call = NULL), error = TRUE)
})

test_that("server errors and dropped connections are retried with backoff", {
  srv <- local_http_server()
  bytes <- as.raw(sample(0:255, 4000, replace = TRUE))
  writeBin(bytes, file.path(srv$dir, "f.bin"))
  expect_identical(http_fetch(srv$url("f.bin", "flaky2"), 0, 99), bytes[1:100])
  expect_identical(srv$log()$status, c(503L, 503L, 206L))
  srv$clear()
  withr::local_options(safetensors.http_retries = 1)
  cnd <- expect_error(http_fetch(srv$url("g.bin", "flaky5"), 0, 99), class = "safetensors_error_http")
  expect_identical(cnd$status, 503L)
  expect_identical(nrow(srv$log()), 2L)
  # A connection dropped halfway: resumed from the first piece not yet
  # delivered (the server sends 2 of 4 MB, so at least the first piece of
  # 1 MB arrives whole).
  srv$clear()
  withr::local_options(safetensors.http_retries = 3)
  big <- as.raw(sample(0:255, 4e6, replace = TRUE))
  writeBin(big, file.path(srv$dir, "big.bin"))
  pieces <- list()
  http_stream(srv$url("big.bin", "drop1"), 0, 4e6 - 1, rep(1e6, 4), function(k, b) pieces[[k]] <<- b)
  expect_identical(unlist(pieces), big)
  log <- srv$log()
  expect_identical(log$range[[1]], "bytes=0-3999999")
  expect_identical(log$sent[[1]], 2000000L)
  expect_match(log$range[[2]], "^bytes=(1000000|2000000)-3999999$")
  expect_identical(nrow(log), 2L)
  # Retries run out: an HTTP error without a status.
  withr::local_options(safetensors.http_retries = 0)
  cnd <- expect_error(http_fetch(srv$url("f.bin", "drop9"), 0, 3999), class = "safetensors_error_http")
  expect_identical(cnd$status, NA_integer_)
})

test_that("a server that sends other bytes than those asked for fails as a bad file does", {
  srv <- local_http_server()
  writeBin(as.raw(rep(1:200, 10)), file.path(srv$dir, "f.bin"))
  expect_error(http_fetch(srv$url("f.bin", "short"), 0, 999), class = "safetensors_error_incomplete_buffer")
  expect_error(http_fetch(srv$url("f.bin", "long"), 0, 999), class = "safetensors_error_incomplete_buffer")
  cnd <- expect_error(http_fetch(srv$url("f.bin", "shift"), 0, 999), class = "safetensors_error_incomplete_buffer")
  expect_s3_class(cnd, "safetensors_error_format")
  expect_match(conditionMessage(cnd), "bytes 1-1000/2000 when asked for bytes 0-999", fixed = TRUE)
  cnd <- expect_error(http_fetch(srv$url("f.bin", "total3000"), 0, 9, total = 2000), class = "safetensors_error_file_changed")
  expect_match(conditionMessage(cnd), "changed on the server")
  # Past the end: fewer bytes than asked.
  expect_error(http_fetch(srv$url("f.bin"), 1990, 2010), class = "safetensors_error_incomplete_buffer")
  cnd <- expect_error(http_fetch(srv$url("f.bin", "norange"), 0, 9), class = "safetensors_error_http")
  expect_identical(cnd$status, 200L)
  expect_match(conditionMessage(cnd), "ignores range requests")
})

test_that("a server that doesn't answer times out; one that doesn't listen fails", {
  srv <- local_http_server()
  withr::local_options(safetensors.http_timeout = 1, safetensors.http_retries = 0)
  t0 <- Sys.time()
  cnd <- expect_error(http_fetch(srv$url("f.bin", "hang"), 0, 9), class = "safetensors_error_http")
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 10)
  expect_identical(cnd$status, NA_integer_)
  expect_match(conditionMessage(cnd), "[Tt]imeout|too slow")
  cnd <- expect_error(http_fetch("http://127.0.0.1:1/x", 0, 9), class = "safetensors_error_http")
  expect_identical(cnd$status, NA_integer_)
  expect_error(http_fetch("http:///x", 0, 9), class = "safetensors_error_http")
})

test_that("a bad HTTP option quotes the value given", {
  withr::local_options(safetensors.http_timeout = -1)
  expect_snapshot(error = TRUE, http_timeout(NULL))
  withr::local_options(safetensors.http_timeout = "30")
  expect_snapshot(error = TRUE, http_timeout(NULL))
})
