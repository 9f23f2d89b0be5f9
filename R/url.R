# URLs of remote files: recognising, parsing (scheme, host, port, path),
# resolving a reference against a base (RFC 3986 section 5.2), escaping a
# shard's file name as a path, and redacting credentials for messages.
#
# This is the package's one URL parser, rather than curl::curl_parse_url(),
# which curl 5.0 (Debian 12's r-cran-curl) doesn't have: requiring a newer
# curl would shut out systems that install R packages from their
# distribution, and using it where present would make a second code path
# that only some machines test. test-url.R holds it to RFC 3986's examples.

# Whether `x` is an http(s) URL.
is_url <- function(x) {
  is_string(x) && grepl("^[Hh][Tt][Tt][Pp][Ss]?://", x)
}

# The parts of an absolute URL: scheme and host in lower case, `port` the
# explicit port or the scheme's default, `path` ("/" when empty), `query`
# (with its "?", or ""). NULL when `url` is not an absolute http(s) URL.
url_parse <- function(url) {
  m <- regmatches(url, regexec("^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\\?[^#]*)?(#.*)?$", url))[[1]]
  if (length(m) == 0) {
    return(NULL)
  }
  scheme <- tolower(m[[2]])
  authority <- m[[3]]
  userinfo <- ""
  if (grepl("@", authority, fixed = TRUE)) {
    userinfo <- sub("@[^@]*$", "", authority)
    authority <- sub("^.*@", "", authority)
  }
  hp <- regmatches(authority, regexec("^(\\[[^]]*\\]|[^:]*)(:([0-9]*))?$", authority))[[1]]
  if (length(hp) == 0 || !scheme %in% c("http", "https") || !nzchar(hp[[2]])) {
    return(NULL)
  }
  port <- if (nzchar(hp[[4]])) as.numeric(hp[[4]]) else if (scheme == "https") 443 else 80
  list(
    scheme = scheme,
    userinfo = userinfo,
    host = tolower(hp[[2]]),
    port = port,
    path = if (nzchar(m[[4]])) m[[4]] else "/",
    query = m[[5]]
  )
}

# Where requests go: scheme, host and port.
url_origin <- function(u) {
  sprintf("%s://%s:%s", u$scheme, u$host, fmt_num(u$port))
}

# `ref` (a redirect's Location, a shard's file name) resolved against the
# absolute URL `base`, as RFC 3986 section 5.2 does; the fragment is
# dropped.
url_resolve <- function(base, ref) {
  ref <- sub("#.*$", "", ref)
  if (grepl("^[A-Za-z][A-Za-z0-9+.-]*:", ref)) {
    return(ref)
  }
  b <- url_parse(base)
  scheme <- paste0(b$scheme, ":")
  if (startsWith(ref, "//")) {
    return(paste0(scheme, ref))
  }
  authority <- sub("^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*).*$", "\\1", base)
  prefix <- paste0(scheme, "//", authority)
  if (!nzchar(ref)) {
    return(paste0(prefix, b$path, b$query))
  }
  if (startsWith(ref, "?")) {
    return(paste0(prefix, b$path, ref))
  }
  query <- if (grepl("?", ref, fixed = TRUE)) sub("^[^?]*", "", ref) else ""
  path <- sub("\\?.*$", "", ref)
  if (!startsWith(path, "/")) {
    path <- paste0(sub("[^/]*$", "", b$path), path)
  }
  paste0(prefix, remove_dot_segments(path), query)
}

# RFC 3986 section 5.2.4, on whole segments.
remove_dot_segments <- function(path) {
  segs <- strsplit(path, "/", fixed = TRUE)[[1]]
  trailing <- endsWith(path, "/") || grepl("(^|/)\\.{1,2}$", path)
  out <- character()
  for (s in segs[-1]) {
    if (s == "..") {
      out <- out[-length(out)]
    } else if (s != ".") {
      out <- c(out, s)
    }
  }
  res <- paste0("/", paste(out, collapse = "/"))
  if (trailing && !endsWith(res, "/")) paste0(res, "/") else res
}

# A relative file path (a shard's name in an index) as a URL path: each
# segment percent-encoded.
url_path_escape <- function(file) {
  segs <- strsplit(file, "/", fixed = TRUE)[[1]]
  paste(vapply(segs, utils::URLencode, character(1), reserved = TRUE, USE.NAMES = FALSE), collapse = "/")
}

# `url` as messages and printed handles show it: a password in it and the
# values of its query (signed CDN URLs carry signatures and tokens there)
# replaced by "***".
url_redact <- function(url) {
  m <- regmatches(url, regexec("^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)([^?#]*)(\\?[^#]*)?(#.*)?$", url))[[1]]
  if (length(m) == 0) {
    return(url)
  }
  authority <- sub("^([^:@/]*):[^@]*@", "\\1:***@", m[[3]])
  query <- m[[5]]
  if (nzchar(query)) {
    query <- gsub("=[^&]*", "=***", query)
  }
  paste0(m[[2]], authority, m[[4]], query)
}

# Whether `x` is a Hugging Face Hub path, hf://... (R/hf.R resolves them).
is_hf_path <- function(x) {
  is_string(x) && startsWith(x, "hf://")
}
