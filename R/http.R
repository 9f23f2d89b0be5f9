# HTTP for remote files (`http://` and `https://` URLs), through the curl
# package (in Suggests), so that proxies, CA certificates and libcurl
# settings work as R users configure them. R/sources.R asks for byte
# ranges; this file makes the requests: redirects (followed here, so that
# credentials never travel to another host), retries with backoff,
# timeouts, credentials, and the checks that a server sent the bytes asked
# for. Errors are `safetensors_error_http` (with `status` and `url`,
# credentials redacted), or, for a server that sends other bytes than those
# asked for, the format errors a file with the same fault gives. URLs are
# parsed, resolved and redacted by R/url.R.

# Reading URLs needs curl; `installed` is for tests.
check_curl <- function(installed = requireNamespace("curl", quietly = TRUE), call = parent.frame()) {
  if (!installed) {
    st_abort(
      "package_not_installed",
      c(
        "Reading URLs needs the {.pkg curl} package, which is not installed.",
        i = "Install it with {.code install.packages(\"curl\")} (on Debian and Ubuntu: {.code apt-get install r-cran-curl})."
      ),
      package = "curl",
      call = call
    )
  }
}

# ---- credentials ------------------------------------------------------------

# Hugging Face hosts: the Hub's token goes to them over https, whatever
# HF_ENDPOINT says.
hf_hosts <- c("huggingface.co", "hf.co")

# The Hub's endpoint as huggingface_hub reads it: HF_ENDPOINT without its
# trailing slashes, by default https://huggingface.co.
hf_endpoint <- function() {
  endpoint <- sub("/+$", "", Sys.getenv("HF_ENDPOINT"))
  if (nzchar(endpoint)) endpoint else "https://huggingface.co"
}

# Whether environment variable `name` is true as huggingface_hub reads it.
env_true <- function(name) {
  toupper(Sys.getenv(name)) %in% c("1", "ON", "YES", "TRUE")
}

# A path from the environment as huggingface_hub expands it: `~` and then
# `$NAME` and `${NAME}` of variables that are set.
expand_env_path <- function(path) {
  path <- path.expand(path)
  m <- gregexpr("\\$(\\{[A-Za-z_][A-Za-z0-9_]*\\}|[A-Za-z_][A-Za-z0-9_]*)", path)
  regmatches(path, m) <- lapply(regmatches(path, m), function(vars) {
    vapply(vars, function(v) {
      value <- Sys.getenv(gsub("[${}]", "", v), NA)
      if (is.na(value)) v else value
    }, character(1), USE.NAMES = FALSE)
  })
  path
}

# The Hugging Face home folder: HF_HOME, else `huggingface` in
# XDG_CACHE_HOME or ~/.cache.
hf_home <- function() {
  home <- Sys.getenv("HF_HOME")
  if (!nzchar(home)) {
    cache <- Sys.getenv("XDG_CACHE_HOME")
    home <- file.path(if (nzchar(cache)) cache else "~/.cache", "huggingface")
  }
  expand_env_path(home)
}

# The user's Hub token as huggingface_hub finds it: HF_TOKEN (or the older
# HUGGING_FACE_HUB_TOKEN), else the token file that `hf auth login` writes
# (HF_TOKEN_PATH, by default `token` in the home folder), without spaces
# and line breaks; NULL when there is none, or when
# HF_HUB_DISABLE_IMPLICIT_TOKEN is set (unless `all`: the tokens a message
# must never show).
hf_token <- function(all = FALSE) {
  clean <- function(x) {
    x <- trimws(gsub("[\r\n]", "", x))
    if (length(x) == 1 && !is.na(x) && nzchar(x)) x
  }
  env <- clean(Sys.getenv("HF_TOKEN")) %||% clean(Sys.getenv("HUGGING_FACE_HUB_TOKEN"))
  path <- Sys.getenv("HF_TOKEN_PATH")
  path <- if (nzchar(path)) expand_env_path(path) else file.path(hf_home(), "token")
  from_file <- function() {
    if (file.exists(path) && !dir.exists(path)) {
      clean(paste(tryCatch(readLines(path, warn = FALSE), error = function(e) ""), collapse = ""))
    }
  }
  if (all) {
    return(unique(c(env, clean(Sys.getenv("HUGGING_FACE_HUB_TOKEN")), from_file())))
  }
  if (env_true("HF_HUB_DISABLE_IMPLICIT_TOKEN")) {
    return(NULL)
  }
  env %||% from_file()
}

# Whether the parsed URL `u` may receive the Hub's token: https on
# huggingface.co or hf.co, or the origin of HF_ENDPOINT when that is https,
# or http on this machine (a local server, for tests). Never a host a
# request is redirected to, such as the CDN of large files.
hf_token_allowed <- function(u) {
  if (u$scheme == "https" && u$host %in% hf_hosts && u$port == 443) {
    return(TRUE)
  }
  e <- url_parse(hf_endpoint())
  !is.null(e) && identical(url_origin(u), url_origin(e)) &&
    (u$scheme == "https" || u$host %in% c("127.0.0.1", "localhost", "[::1]"))
}

# Option `safetensors.http_headers`: a named character vector (or NULL).
http_header_option <- function(call = parent.frame()) {
  h <- getOption("safetensors.http_headers")
  if (is.null(h)) {
    return(character())
  }
  nms <- names(h)
  ok <- is.character(h) && !anyNA(h) && !is.null(nms) && all(nzchar(nms)) && !anyNA(nms) &&
    !any(grepl("[:\r\n]", nms)) && !any(grepl("[\r\n]", h))
  if (!ok) {
    st_abort(
      "invalid_argument",
      "Option {.code safetensors.http_headers} must be a named character vector of HTTP headers, such as {.code c(Authorization = \"Bearer ...\")}.",
      call = call
    )
  }
  h
}

# The headers a request to `url` carries: option `safetensors.http_headers`
# when `url` has the origin (scheme, host, port) of the URL the user gave,
# `origin`, so not after a redirect to another host; and the Hub's token
# (hf_token()) as a bearer token when `url` may receive it
# (hf_token_allowed(); and no Authorization header was set), whatever the
# redirects before.
http_headers_for <- function(url, origin, option = http_header_option()) {
  u <- url_parse(url)
  headers <- if (identical(url_origin(u), origin)) option else character()
  if (!"authorization" %in% tolower(names(headers)) && hf_token_allowed(u)) {
    token <- hf_token()
    if (!is.null(token)) {
      headers[["Authorization"]] <- paste("Bearer", token)
    }
  }
  headers
}

# `text` with every credential the package may send replaced by "***".
http_scrub <- function(text) {
  secrets <- c(hf_token(all = TRUE), unname(tryCatch(http_header_option(), error = function(e) character())))
  for (s in secrets[nchar(secrets) >= 4]) {
    text <- gsub(s, "***", text, fixed = TRUE)
  }
  text
}

# ---- settings -----------------------------------------------------------------

http_timeout <- function(call) number_option("safetensors.http_timeout", 30, 1, 86400, call)
http_retries <- function(call) number_option("safetensors.http_retries", 3, 0, 10, call)

# Seconds to wait before retry `k` (from 1): 0.25, 0.5, 1, 2, ...
http_backoff <- function(k) {
  0.25 * 2^(k - 1)
}

# ---- errors -------------------------------------------------------------------

# An error of class `safetensors_error_http` about `url`, with the status
# code (NA for a failure without a response) and the fields in `...`.
http_abort <- function(url, status, detail, hint = NULL, call, ...) {
  shown <- url_redact(url)
  st_abort(
    "http",
    c(
      cli_escape(sprintf("Can't read %s.", format_file(shown))),
      x = cli_escape(http_scrub(detail)),
      i = if (!is.null(hint)) cli_escape(hint)
    ),
    status = as.integer(status),
    url = shown,
    ...,
    call = call
  )
}

# The error for a response with status `status`.
http_status_abort <- function(url, status, call) {
  reason <- switch(as.character(status),
    "400" = "Bad Request", "401" = "Unauthorized", "403" = "Forbidden", "404" = "Not Found",
    "410" = "Gone", "416" = "Range Not Satisfiable", "429" = "Too Many Requests",
    "500" = "Internal Server Error", "502" = "Bad Gateway", "503" = "Service Unavailable",
    "504" = "Gateway Timeout", ""
  )
  detail <- trimws(sprintf("The server answered HTTP %d %s.", status, reason))
  detail <- sub(" \\.$", ".", detail)
  u <- url_parse(url)
  hint <- NULL
  if (status %in% c(401, 403)) {
    hint <- if (hf_token_allowed(u)) {
      if (!is.null(hf_token())) {
        "The Hugging Face token (HF_TOKEN or the token file of `hf auth login`) has no access to this repository; gated models need their terms accepted on the Hub."
      } else {
        "Private and gated models need a token: set the HF_TOKEN environment variable, or log in with `hf auth login`."
      }
    } else {
      "Credentials go in option `safetensors.http_headers`, such as `c(Authorization = \"Bearer ...\")`."
    }
  } else if (status == 404) {
    hint <- "Check the URL; on the Hub, files are at https://huggingface.co/<repo>/resolve/<revision>/<file>."
  }
  http_abort(url, status, detail, hint, call = call)
}

# The format error (class `kind`) for a server that sent other bytes than
# those asked for, as a file with the same fault gives.
http_format_abort <- function(url, kind, detail, call) {
  st_abort(
    kind,
    c(cli_escape(sprintf("Can't read %s.", format_file(url_redact(url)))), x = cli_escape(detail)),
    format = kind != "file_changed",
    call = call
  )
}

# ---- requests -----------------------------------------------------------------

# A response: an environment holding the open curl connection `con`, the
# `status`, the `url` that answered (after redirects), the response
# `headers` (a named list, names in lower case), and for a range the
# `start`, `end` and `total` of its Content-Range, and `length` (the
# Content-Length, NA if none).
#
# Sends a GET for `url` (with `range = c(from, to)`, a Range header),
# following redirects and retrying server errors (5xx, 429) and failures
# to connect with backoff. Statuses in `accept` are returned; others are
# errors. The caller closes the response (http_close()).
#
# `cache`, an environment, remembers where the redirects led (`location`),
# so that the next requests for the same file go there at once (a Hub URL
# redirects every request to a CDN); if that URL fails (a signed URL
# expires), the request starts again from `url`. Credentials follow the
# same rules either way: those of the option go to `url`'s origin only.
#
# `failures`, an environment whose `n` counts the failed tries of one read
# (see http_failures()), shares `safetensors.http_retries` between this
# request and the caller's own retries (a resumed transfer), so that a read
# makes at most 1 + retries attempts however they fail.
http_open <- function(url, range = NULL, accept = c(200, 206), cache = NULL, failures = http_failures(),
                      call = parent.frame()) {
  check_curl(call = call)
  start <- url_parse(url)
  if (is.null(start)) {
    http_abort(url, NA, "The URL is not a valid http or https URL.", call = call)
  }
  origin <- url_origin(start)
  if (!is.null(cache$location)) {
    resp <- tryCatch(
      http_follow(cache$location, origin, range, accept, failures, call),
      safetensors_error_http = function(e) NULL
    )
    if (!is.null(resp)) {
      return(resp)
    }
    cache$location <- NULL
  }
  resp <- http_follow(url, origin, range, accept, failures, call)
  if (!is.null(cache) && !identical(resp$url, url)) {
    cache$location <- resp$url
  }
  resp
}

# A counter of the failed tries of one read, for http_open().
http_failures <- function() {
  failures <- new.env(parent = emptyenv())
  failures$n <- 0
  failures
}

# http_open() from `url`, with the credentials of `origin`.
http_follow <- function(url, origin, range, accept, failures, call) {
  timeout <- http_timeout(call)
  retries <- http_retries(call)
  option <- http_header_option(call)
  current <- url
  hops <- 0
  repeat {
    headers <- http_headers_for(current, origin, option)
    if (!is.null(range)) {
      headers[["Range"]] <- sprintf("bytes=%s-%s", fmt_num(range[[1]]), fmt_num(range[[2]]))
    }
    resp <- http_attempt(current, headers, timeout)
    if (is.character(resp)) {
      # No response (refused, reset, timed out): retry.
      failures$n <- failures$n + 1
      if (failures$n > retries) {
        http_abort(current, NA, resp, call = call)
      }
      Sys.sleep(http_backoff(failures$n))
      next
    }
    status <- resp$status
    if (status %in% c(301, 302, 303, 307, 308)) {
      location <- resp$headers[["location"]]
      http_close(resp)
      hops <- hops + 1
      if (is.null(location) || !nzchar(location)) {
        http_abort(current, status, sprintf("The server answered HTTP %d, a redirect, without a Location.", status), call = call)
      }
      nxt <- url_resolve(current, trimws(location))
      if (is.null(url_parse(nxt))) {
        http_abort(current, status, "The server redirected to a URL that is not http or https.", call = call)
      }
      if (hops > 10) {
        http_abort(current, status, "The server redirected more than 10 times.", call = call)
      }
      current <- nxt
      next
    }
    if (status %in% accept) {
      resp$url <- current
      return(resp)
    }
    http_close(resp)
    if ((status >= 500 && status != 501) || status == 429) {
      failures$n <- failures$n + 1
      if (failures$n <= retries) {
        Sys.sleep(http_backoff(failures$n))
        next
      }
    }
    http_status_abort(current, status, call = call)
  }
}

# A curl handle for one request with `headers`, that follows no redirect,
# gives up on a connection or a stalled transfer after `timeout` seconds,
# and asks for the bytes as stored (byte ranges are of the file as stored:
# no compressed bodies); `...` are more of curl's options.
http_handle <- function(headers, timeout, ...) {
  h <- curl::new_handle(
    followlocation = FALSE,
    connecttimeout = timeout,
    low_speed_limit = 1,
    low_speed_time = timeout,
    accept_encoding = "identity",
    ...
  )
  if (length(headers) > 0) {
    curl::handle_setheaders(h, .list = as.list(headers))
  }
  h
}

# One request, no redirects followed: a response (see http_open()), or the
# message of the failure when there was none.
http_attempt <- function(url, headers, timeout) {
  h <- http_handle(headers, timeout, failonerror = FALSE)
  con <- curl::curl(url, handle = h)
  failed <- tryCatch(
    {
      open(con, "rbf")
      NULL
    },
    error = function(e) conditionMessage(e)
  )
  if (!is.null(failed)) {
    try(close(con), silent = TRUE)
    return(failed)
  }
  data <- curl::handle_data(h)
  resp <- new.env(parent = emptyenv())
  resp$con <- con
  resp$status <- data$status_code
  resp$headers <- http_parse_headers(data$headers)
  resp$length <- http_size(resp$headers[["content-length"]])
  cr <- resp$headers[["content-range"]]
  resp$start <- resp$end <- resp$total <- NA_real_
  if (!is.null(cr)) {
    m <- regmatches(cr, regexec("^[Bb][Yy][Tt][Ee][Ss] +(([0-9]+)-([0-9]+)|\\*)/([0-9]+|\\*)$", trimws(cr)))[[1]]
    if (length(m) > 0) {
      resp$start <- http_size(m[[3]])
      resp$end <- http_size(m[[4]])
      resp$total <- http_size(m[[5]])
    }
  }
  resp
}

# A size from a header: a whole number below 2^53 (exact in a double), or NA.
http_size <- function(x) {
  if (is.null(x) || !grepl("^[0-9]{1,16}$", x)) {
    return(NA_real_)
  }
  n <- as.numeric(x)
  if (n >= 2^53) NA_real_ else n
}

# The response headers of `raw` (one response) as a named list.
http_parse_headers <- function(raw) {
  lines <- curl::parse_headers(raw)
  lines <- lines[grepl(":", lines, fixed = TRUE)]
  out <- list()
  for (l in lines) {
    name <- tolower(trimws(sub(":.*$", "", l)))
    if (is.null(out[[name]])) {
      out[[name]] <- trimws(sub("^[^:]*:", "", l))
    }
  }
  out
}

http_close <- function(resp) {
  if (!is.null(resp$con)) {
    try(close(resp$con), silent = TRUE)
    resp$con <- NULL
  }
  invisible()
}

# Up to `n` bytes of the body: fewer only at its end. A transfer that
# fails (a dropped connection, a stall) returns the message instead.
http_read <- function(resp, n) {
  tryCatch(readBin(resp$con, raw(), n), error = function(e) conditionMessage(e))
}

# Whether the body has no more bytes (reads at most one).
http_at_end <- function(resp) {
  x <- http_read(resp, 1L)
  is.raw(x) && length(x) == 0
}

# Checks that a 206 response is the range `from`-`to` of a file of `total`
# bytes (NA: not known yet), or its end when `to` is past the end; returns
# the number of bytes it announces.
http_check_range <- function(resp, from, to, total, url, call) {
  got <- sprintf("bytes %s-%s/%s", fmt_num(resp$start), fmt_num(resp$end), fmt_num(resp$total))
  want <- sprintf("bytes %s-%s", fmt_num(from), fmt_num(to))
  if (is.na(resp$start) || is.na(resp$end) || is.na(resp$total)) {
    http_format_abort(url, "incomplete_buffer", sprintf("The server answered a request for %s without a valid Content-Range.", want), call)
  }
  if (!is.na(total) && resp$total != total) {
    http_format_abort(url, "file_changed", sprintf("The file has %s bytes now, %s before: it changed on the server.", fmt_num(resp$total), fmt_num(total)), call)
  }
  end <- min(to, resp$total - 1)
  if (resp$start != from || resp$end != end || resp$end < resp$start) {
    http_format_abort(url, "incomplete_buffer", sprintf("The server sent %s when asked for %s.", got, want), call)
  }
  end - from + 1
}

# Reads bytes `from` to `to` (inclusive, 0-based) of the file at `url`, of
# `total` bytes (NA if not known), and calls `fun(k, bytes)` with pieces of
# `sizes` bytes in turn (`sum(sizes)` is the range's length): one request,
# whose body is read piece by piece, so only one piece is in memory at a
# time (`cache` as for http_open()). A transfer that fails is resumed from
# the first piece not yet delivered, after a backoff, up to
# `safetensors.http_retries` times. A body shorter or longer than the
# range, or a Content-Range for other bytes, is an error of class
# `safetensors_error_incomplete_buffer`, a file whose length changed
# `safetensors_error_file_changed`; a server that ignores ranges (status
# 200) is `safetensors_error_http`.
http_stream <- function(url, from, to, sizes, fun, total = NA_real_, cache = NULL, call = parent.frame()) {
  retries <- http_retries(call)
  k <- 1L
  pos <- from
  failures <- http_failures()
  while (k <= length(sizes)) {
    resp <- http_open(url, c(pos, to), accept = c(200, 206, 416), cache = cache, failures = failures, call = call)
    on.exit(http_close(resp), add = TRUE)
    if (resp$status == 200) {
      http_no_range_abort(url, call)
    }
    if (resp$status == 416) {
      # A file that shrank has no such bytes any more.
      if (!is.na(total) && !is.na(resp$total) && resp$total != total) {
        http_format_abort(url, "file_changed", sprintf("The file has %s bytes now, %s before: it changed on the server.", fmt_num(resp$total), fmt_num(total)), call)
      }
      http_close(resp)
      http_status_abort(url, 416, call = call)
    }
    n <- http_check_range(resp, pos, to, total, url, call)
    if (n != to - pos + 1) {
      http_format_abort(url, "incomplete_buffer", sprintf("The file ends at byte %s, before the bytes asked for.", fmt_num(resp$total)), call)
    }
    dropped <- NULL
    while (k <= length(sizes)) {
      bytes <- http_read(resp, sizes[[k]])
      if (is.character(bytes)) {
        dropped <- bytes
        break
      }
      if (length(bytes) < sizes[[k]]) {
        http_format_abort(url, "incomplete_buffer", sprintf("The server sent %s of the %s bytes of the range %s-%s.", fmt_num(pos - from + length(bytes)), fmt_num(to - from + 1), fmt_num(from), fmt_num(to)), call)
      }
      fun(k, bytes)
      pos <- pos + sizes[[k]]
      k <- k + 1L
    }
    if (is.null(dropped) && !http_at_end(resp)) {
      http_format_abort(url, "incomplete_buffer", sprintf("The server sent more than the %s bytes of the range %s-%s.", fmt_num(to - from + 1), fmt_num(from), fmt_num(to)), call)
    }
    http_close(resp)
    if (!is.null(dropped)) {
      failures$n <- failures$n + 1
      if (failures$n > retries) {
        http_abort(url, NA, dropped, call = call)
      }
      Sys.sleep(http_backoff(failures$n))
    }
  }
  invisible()
}

# Bytes `from` to `to` of the file at `url` as one raw vector.
http_fetch <- function(url, from, to, total = NA_real_, cache = NULL, call = parent.frame()) {
  out <- NULL
  http_stream(url, from, to, to - from + 1, function(k, bytes) out <<- bytes, total = total, cache = cache, call = call)
  out
}

# The body up to its end or `limit` bytes, read in chunks (a body without
# a Content-Length); a failure's message instead if the transfer fails.
http_read_to_end <- function(resp, limit) {
  chunks <- list()
  got <- 0
  while (got < limit) {
    x <- http_read(resp, min(limit - got, 1024^2))
    if (is.character(x)) {
      return(x)
    }
    if (length(x) == 0) {
      break
    }
    chunks[[length(chunks) + 1L]] <- x
    got <- got + length(x)
  }
  unlist(chunks, use.names = FALSE) %||% raw()
}

http_no_range_abort <- function(url, call) {
  http_abort(
    url, 200,
    "The server ignores range requests (it answered HTTP 200 with the whole file), so single tensors and headers can't be read without downloading all of it.",
    hint = "Read the whole file with `safe_load_file()`, or download it first.",
    call = call
  )
}

# The whole body of `url` (a small file, such as a shard index), at most
# `limit` bytes.
http_get <- function(url, limit, call = parent.frame()) {
  retries <- http_retries(call)
  failures <- http_failures()
  repeat {
    resp <- http_open(url, failures = failures, call = call)
    on.exit(http_close(resp), add = TRUE)
    if (!is.na(resp$length) && resp$length > limit) {
      http_abort(url, resp$status, sprintf("The file has %s bytes, more than the limit of %s.", fmt_num(resp$length), fmt_num(limit)), call = call)
    }
    body <- if (is.na(resp$length)) http_read_to_end(resp, limit + 1) else http_read(resp, resp$length)
    if (is.raw(body)) {
      if (length(body) > limit) {
        http_abort(url, resp$status, sprintf("The file has more than %s bytes.", fmt_num(limit)), call = call)
      }
      if (!is.na(resp$length) && length(body) < resp$length) {
        http_format_abort(url, "incomplete_buffer", sprintf("The server sent %d of the %s bytes it announced.", length(body), fmt_num(resp$length)), call)
      }
      http_close(resp)
      return(body)
    }
    http_close(resp)
    failures$n <- failures$n + 1
    if (failures$n > retries) {
      http_abort(url, NA, body, call = call)
    }
    Sys.sleep(http_backoff(failures$n))
  }
}
