# An HTTP server for the remote-file tests: range-server.py (Python's
# standard library only) on 127.0.0.1, started by the test that needs it
# and stopped when that test ends. It serves the files of a temporary
# directory, logs every response (path, Host, Range, Authorization, X-*
# headers, status, bytes), and misbehaves on request (see the modes in
# range-server.py). Tests skip cleanly without curl, processx or Python.

http_python <- function() {
  find_python("http_python", "import http.server, sys; sys.exit(sys.version_info < (3, 7))")
}

skip_without_http <- function() {
  skip_on_cran()
  skip_if_not_installed("curl")
  skip_if_not_installed("processx")
  skip_if_not_installed("jsonlite")
  if (is.null(http_python())) skip("Python 3.7 or later is not available to serve HTTP")
}

# Starts test server `script` (in tests/testthat) with `args`, stopped when
# `env` ends; returns the ports it prints on its first line (NA if it did
# not start).
start_test_server <- function(script, args, env) {
  script <- normalizePath(test_path(script))
  p <- withr::with_envvar(
    c(LD_LIBRARY_PATH = NA),
    processx::process$new(http_python(), c(script, args), stdin = "|", stdout = "|", stderr = "|")
  )
  withr::defer(if (p$is_alive()) p$kill(), envir = env)
  deadline <- Sys.time() + 10
  while (Sys.time() < deadline && p$is_alive()) {
    p$poll_io(200)
    line <- p$read_output_lines()
    if (length(line) > 0) {
      return(suppressWarnings(as.integer(strsplit(line[[1]], " ", fixed = TRUE)[[1]])))
    }
  }
  NA_integer_
}

# Starts a server for the calling test; returns a list with `dir` (the
# directory served), `url(path, modes, host)`, `log()` (the responses so
# far, a data frame) and `clear()` (forgets them).
local_http_server <- function(env = parent.frame()) {
  skip_without_http()
  dir <- withr::local_tempdir(.local_envir = env)
  log <- withr::local_tempfile(fileext = ".jsonl", .local_envir = env)
  port <- start_test_server("range-server.py", c(dir, log), env)[[1]]
  if (is.na(port)) skip("the test HTTP server did not start")
  list(
    dir = dir,
    port = port,
    url = function(path, modes = NULL, host = "127.0.0.1") {
      prefix <- if (length(modes) > 0) paste0("/m/", paste(modes, collapse = "+")) else ""
      sprintf("http://%s:%d%s/%s", host, port, prefix, path)
    },
    log = function() read_http_log(log),
    clear = function() unlink(log)
  )
}

read_http_log <- function(log) {
  lines <- if (file.exists(log)) readLines(log, warn = FALSE) else character()
  rows <- lapply(lines, function(l) {
    e <- jsonlite::fromJSON(l, simplifyVector = FALSE)
    data.frame(
      path = e$path,
      host = e$host %||% NA_character_,
      range = e$range %||% NA_character_,
      auth = e$auth %||% NA_character_,
      test_header = e$headers[["x-test"]] %||% NA_character_,
      status = e$status,
      sent = e$sent,
      stringsAsFactors = FALSE
    )
  })
  if (length(rows) == 0) {
    return(data.frame(
      path = character(), host = character(), range = character(), auth = character(),
      test_header = character(), status = integer(), sent = integer()
    ))
  }
  do.call(rbind, rows)
}

# A model file to serve: tensors of several dtypes and sizes.
http_model <- function() {
  set.seed(42)
  list(
    embed = matrix(rnorm(200 * 64), 200, 64),
    layer.weight = matrix(rnorm(64 * 64), 64, 64),
    layer.bias = rnorm(64),
    steps = 7L,
    mask = c(TRUE, FALSE, TRUE)
  )
}
