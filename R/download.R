# Whole-file downloads to disk, for the Hub cache (R/hf.R): a file fetched
# into a partial file renamed over the target once complete (atomically),
# with a record of what arrived kept beside it, so that the next attempt,
# in this session or another, asks only for the rest (resumably), and a
# progress bar over bytes. Two engines:
#
# * one range (a file below 32 MiB, one connection, a server on this
#   machine, or one that ignores ranges): a new download goes through
#   curl_fetch_disk(), whose bytes go from libcurl to the file without R
#   code in between, as fast as the curl command; a download that resumes
#   reads its range through a curl connection, checked before anything is
#   written;
# * parallel ranges (through the curl package's multi interface): each
#   response's pieces are written at their offsets by the Rust core
#   (src/rust/src/download.rs), which combines them into large writes.
#
# The partial file and its record are named after the target with the
# suffixes below, which huggingface_hub never uses for its own partial
# files (it resumes `<etag>.incomplete` from its length, which a file
# filled in parallel is not), so the two never resume each other's
# downloads; its cache tools count `*.incomplete` files as downloads left
# unfinished.

download_partial <- function(dest) paste0(dest, ".safetensors-r.incomplete")
download_record <- function(dest) paste0(dest, ".safetensors-r.progress")

# How many ranges of the file at `url` are fetched at once: option
# `safetensors.http_connections`, by default 4, or 1 for a server on this
# machine, whose connections are not slower one by one than together: there
# a single range, written by libcurl alone, takes the least work.
download_connections <- function(url, call) {
  local <- url_parse(url)$host %in% c("localhost", "[::1]") || startsWith(url_parse(url)$host, "127.")
  number_option("safetensors.http_connections", if (local) 1 else 4, 1, 64, call)
}

# A file is split in ranges of at least this many bytes.
download_min_part <- 16 * 1024^2

# Bytes between two updates of the progress bar and between two records of
# the progress (the record is what a later attempt resumes from).
download_bar_step <- 4 * 1024^2
download_record_step <- 128 * 1024^2

# The ranges a download of `size` bytes (NA when unknown) asks for, at most
# `connections` of at least `min_part` bytes: `start` and `end`
# (inclusive; NA for "to the end") of each, in order.
download_plan <- function(size, connections, min_part = download_min_part) {
  if (is.na(size)) {
    return(list(start = 0, end = NA_real_))
  }
  if (size == 0) {
    return(list(start = numeric(), end = numeric()))
  }
  n <- max(1, min(connections, floor(size / min_part)))
  bounds <- floor(seq(0, size, length.out = n + 1))
  list(start = bounds[-(n + 1)], end = bounds[-1] - 1)
}

# The progress a previous attempt recorded for a download of `size` bytes
# into `partial`: `list(start, end, done)`, or NULL when there is none
# that can be trusted (no record, another size, ranges that don't tile
# the file, or a partial file shorter than the bytes the record says
# arrived).
download_resume <- function(record, partial, size) {
  if (is.na(size) || !file.exists(record) || !file.exists(partial)) {
    return(NULL)
  }
  lines <- tryCatch(readLines(record, warn = FALSE), error = function(e) character())
  if (length(lines) < 3 || lines[[1]] != "safetensors-r download 1" || lines[[2]] != sprintf("size %.0f", size)) {
    return(NULL)
  }
  if (identical(lines[-(1:2)], "prefix")) {
    # Written in order: whatever the partial file holds is the file's start.
    have <- file.size(partial)
    if (is.na(have) || have > size) {
      return(NULL)
    }
    return(list(start = 0, end = size - 1, done = have))
  }
  fields <- strsplit(lines[-(1:2)], " ", fixed = TRUE)
  ok <- vapply(fields, function(f) length(f) == 4 && f[[1]] == "range" && all(grepl("^[0-9]{1,16}$", f[-1])), logical(1))
  if (!all(ok)) {
    return(NULL)
  }
  num <- function(i) vapply(fields, function(f) as.numeric(f[[i]]), numeric(1))
  start <- num(2)
  end <- num(3)
  done <- num(4)
  tiles <- start[[1]] == 0 && end[[length(end)]] == size - 1 && all(start[-1] == end[-length(end)] + 1) &&
    all(end >= start) && all(done <= end - start + 1)
  have <- file.size(partial)
  if (!tiles || is.na(have) || any(done > 0 & start + done > have)) {
    return(NULL)
  }
  list(start = start, end = end, done = done)
}

# Takes the lock at `path` (created, with its folder, if missing), waiting
# for as long as another process holds it (one downloading the same file:
# the lock is huggingface_hub's, so Python processes count); says so once
# after two seconds. Returns the lock, for lock_release_().
download_lock <- function(path, label, call = parent.frame()) {
  dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
  waited <- 0
  repeat {
    lock <- lock_try_(core_path(path, call))
    if (inherits(lock, "safetensors_rust_error")) {
      st_check(lock, sprintf("Can't download %s.", format_file(label)), call = call)
    }
    if (!isFALSE(lock)) {
      return(lock)
    }
    if (waited == 2) {
      cli::cli_inform(c(
        i = "Waiting for another process that is downloading {.file {label}} (it holds {.file {path}})."
      ))
    }
    Sys.sleep(0.1)
    waited <- round(waited + 0.1, 1)
  }
}

# Records the progress of a download (see download_resume()): the bytes
# each range holds, or with `prefix`, that the partial file is written in
# order (its length is the progress). Written to a temporary file and
# renamed, so that a record is whole or absent.
download_save <- function(record, size, st, prefix = FALSE) {
  if (is.na(size)) {
    return(invisible())
  }
  lines <- c(
    "safetensors-r download 1",
    sprintf("size %.0f", size),
    if (prefix) "prefix" else sprintf("range %.0f %.0f %.0f", st$start, st$end, st$done)
  )
  tmp <- paste0(record, ".tmp")
  ok <- tryCatch(
    {
      writeLines(lines, tmp)
      file.rename(tmp, record)
    },
    error = function(e) FALSE,
    warning = function(w) FALSE
  )
  if (!isTRUE(ok)) unlink(tmp)
  invisible()
}

# Downloads `url`, a file of `size` bytes (NA when unknown), into `dest`.
# The requests carry the headers http_headers_for() gives for `origin`
# (the user's origin: credentials never go to another host). The file is
# split in up to `download_connections()` ranges of at least `min_part`
# bytes, fetched at once; a server that answers a range with the whole
# file (HTTP 200) gets one request. Redirects are followed, server errors
# and dropped connections retried from the byte they stopped at
# (`safetensors.http_retries` times in a row without progress), and a URL
# that stops being accepted (a signed CDN URL that expired: 401, 403, 404,
# 410) is replaced once by `relocate()`, when given. `label` names the
# file in the progress bar. An error or an interrupt leaves the partial
# file and its record for the next attempt.
download_file <- function(url, dest, size, label, origin, relocate = NULL, min_part = download_min_part,
                          call = parent.frame()) {
  check_curl(call = call)
  partial <- download_partial(dest)
  record <- download_record(dest)
  resume <- download_resume(record, partial, size)
  plan <- resume %||% download_plan(size, download_connections(url, call), min_part)
  if (is.null(resume)) {
    unlink(c(record, partial))
  }
  st <- new.env(parent = emptyenv())
  st$start <- plan$start
  st$end <- plan$end
  st$done <- plan$done %||% numeric(length(plan$start))
  st$url <- rep(url, length(st$start))
  st$complete <- !is.na(st$end) & st$done == st$end - st$start + 1
  st$partial <- partial
  st$ptr <- NULL
  st$what <- sprintf("Can't download %s.", format_file(label))
  committed <- FALSE
  on.exit(
    if (!committed) {
      # What arrived stays for the next attempt.
      if (download_close(st, call)) download_save(record, size, st, prefix = isTRUE(st$prefix))
    },
    add = TRUE
  )
  bar <- NULL
  if (!is.na(size) && progress_wanted(size)) {
    bar <- progress_bar("Downloading", label, size)
    cli::cli_progress_update(set = sum(st$done), id = bar)
  }
  download_run(st, size, origin, relocate, bar, record, call)
  total <- if (is.na(size)) sum(st$done) else size
  st_check(partial_commit_(download_ptr(st, call), core_path(dest, call), total), st$what, call = call)
  st$ptr <- NULL
  committed <- TRUE
  unlink(record)
  invisible(dest)
}

# The partial file of download `st`, opened (created if missing) for
# writing at offsets.
download_ptr <- function(st, call) {
  if (is.null(st$ptr)) {
    st$ptr <- st_check(partial_open_(core_path(st$partial, call)), st$what, call = call)
  }
  st$ptr
}

# Closes the partial file of `st`, if open, writing what it holds; FALSE if
# that failed (its record can't be trusted then).
download_close <- function(st, call) {
  if (is.null(st$ptr)) {
    return(TRUE)
  }
  ok <- !inherits(partial_flush_(st$ptr), "safetensors_rust_error")
  partial_close_(st$ptr)
  st$ptr <- NULL
  ok
}

# Fetches the ranges of `st` not yet complete until all are, in rounds: a
# round requests every incomplete range at once and waits for all of them
# (download_round(); one range alone goes through download_stream()); what
# each answer was decides the next round.
download_run <- function(st, size, origin, relocate, bar, record, call) {
  retries <- http_retries(call)
  timeout <- http_timeout(call)
  option <- http_header_option(call)
  tries <- integer(length(st$start))
  hops <- integer(length(st$start))
  relocated <- FALSE
  repeat {
    todo <- which(!st$complete)
    if (length(todo) == 0) {
      return(invisible())
    }
    before <- st$done
    outcomes <- if (length(st$start) == 1) {
      list(download_stream(st, size, origin, option, timeout, bar, record, call))
    } else {
      download_round(st, todo, size, origin, option, timeout, bar, record, call)
    }
    if (isTRUE(st$single)) {
      # The server sent the whole file for the first range: it is the only
      # one now.
      keep <- function(x) x[1]
      st$start <- 0
      st$end <- st$end[[1]]
      st$done <- st$done[[1]]
      st$complete <- st$complete[[1]]
      st$url <- st$url[[1]]
      st$single <- FALSE
      tries <- keep(tries)
      hops <- keep(hops)
      before <- keep(before)
      outcomes <- outcomes[1]
      todo <- 1
    }
    wait <- 0
    for (k in todo) {
      o <- outcomes[[k]]
      if (st$done[[k]] > before[[k]]) {
        tries[[k]] <- 0L
      }
      if (o$kind == "complete") {
        st$complete[[k]] <- TRUE
      } else if (o$kind == "redirect") {
        hops[[k]] <- hops[[k]] + 1L
        if (hops[[k]] > 10) {
          http_abort(st$url[[k]], o$status, "The server redirected more than 10 times.", call = call)
        }
        st$url[[k]] <- o$location
      } else if (o$kind == "refused") {
        if (is.null(relocate) || relocated) {
          http_status_abort(st$url[[k]], o$status, call = call)
        }
        # A signed URL that expired: ask where the file is now.
        relocated <- TRUE
        st$url[] <- relocate()
      } else if (o$kind == "norange") {
        # A server that sends the whole file for a range that starts later:
        # start again, asking for the whole file once.
        tries[[1]] <- tries[[1]] + 1L
        if (tries[[1]] > retries) {
          http_no_range_abort(st$url[[k]], call)
        }
        download_close(st, call)
        unlink(st$partial)
        st$start <- 0
        st$end <- if (is.na(size)) NA_real_ else size - 1
        st$done <- 0
        st$complete <- FALSE
        st$url <- st$url[[k]]
        tries <- tries[1]
        hops <- hops[1]
        break
      } else if (o$kind == "retry") {
        tries[[k]] <- tries[[k]] + 1L
        if (tries[[k]] > retries) {
          if (is.na(o$status)) {
            http_abort(st$url[[k]], NA, o$message, call = call)
          }
          http_status_abort(st$url[[k]], o$status, call = call)
        }
        wait <- max(wait, http_backoff(tries[[k]]))
      } else {
        o$raise()
      }
    }
    if (wait > 0) {
      Sys.sleep(wait)
    }
  }
}

# The one range of `st` (the whole file): a new download with
# curl_fetch_disk() (libcurl writes the file; the record says it is
# written in order), a resumed one through a curl connection, its answer
# checked before a byte is written. Returns what the answer was, as
# download_round() does for each range.
download_stream <- function(st, size, origin, option, timeout, bar, record, call) {
  url <- st$url[[1]]
  if (st$done[[1]] > 0 && !is.na(size)) {
    return(download_resume_stream(st, size, origin, option, timeout, bar, call))
  }
  download_close(st, call)
  st$done[[1]] <- 0
  st$prefix <- TRUE
  download_save(record, size, st, prefix = TRUE)
  headers <- http_headers_for(url, origin, option)
  if (!is.na(size) && size > 0) {
    headers[["Range"]] <- sprintf("bytes=0-%.0f", size - 1)
  }
  h <- http_handle(headers, timeout, failonerror = TRUE)
  if (!is.null(bar)) {
    shown <- 0
    curl::handle_setopt(h, xferinfofunction = function(down, up) {
      if (down[[2]] - shown >= download_bar_step) {
        shown <<- down[[2]]
        cli::cli_progress_update(set = down[[2]], id = bar)
      }
      TRUE
    })
  }
  res <- tryCatch(curl::curl_fetch_disk(url, st$partial, handle = h), error = function(e) e)
  d <- curl::handle_data(h)
  status <- d$status_code
  have <- file.size(st$partial)
  ok <- status %in% c(200, 206) && !is.na(have)
  if (ok && status == 206) {
    range <- download_content_range(d$headers)
    ok <- !is.null(range) && range[[1]] == 0 && (is.na(size) || is.na(range[[3]]) || range[[3]] == size)
    if (!ok) {
      unlink(st$partial)
      return(download_problem("range", url, status, call))
    }
  }
  if (inherits(res, "error")) {
    msg <- conditionMessage(res)
    if (curl_interrupted(msg)) {
      return(download_failure(msg, NULL, call))
    }
    if (ok && !is.na(size)) {
      # A transfer that stopped: the file's start arrived.
      st$done[[1]] <- have
      return(list(kind = "retry", status = NA, message = msg))
    }
    unlink(st$partial)
    if (status >= 400) {
      return(download_outcome(status, http_parse_headers(d$headers), url, 1, st, size, NULL, call))
    }
    return(list(kind = "retry", status = NA, message = msg))
  }
  if (!ok) {
    # A redirect or another status: its body is not the file.
    unlink(st$partial)
    return(download_outcome(status, http_parse_headers(d$headers), url, 1, st, size, NULL, call))
  }
  if (!is.na(size) && have > size) {
    return(download_problem("long", url, status, call))
  }
  st$done[[1]] <- have
  if (!is.null(bar)) cli::cli_progress_update(set = have, id = bar)
  if (is.na(size) || have == size) list(kind = "complete") else {
    list(kind = "retry", status = NA, message = "The server closed the connection before the end of the file.")
  }
}

# The start, end and total of a Content-Range header in the raw headers
# `raw` (total NA for `*`), or NULL.
download_content_range <- function(raw) {
  cr <- http_parse_headers(raw)[["content-range"]]
  m <- regmatches(cr %||% "", regexec("^[Bb][Yy][Tt][Ee][Ss] +([0-9]+)-([0-9]+)/([0-9]+|\\*)$", trimws(cr %||% "")))[[1]]
  if (length(m) == 0) {
    return(NULL)
  }
  c(as.numeric(m[[2]]), as.numeric(m[[3]]), if (m[[4]] == "*") NA else as.numeric(m[[4]]))
}

# The rest of the one range of `st`, from the bytes it holds, through a
# curl connection (http_open()): the answer's status and Content-Range are
# checked before anything is written, so that a server that ignores the
# range can't append the whole file to its start.
download_resume_stream <- function(st, size, origin, option, timeout, bar, call) {
  url <- st$url[[1]]
  pos <- st$done[[1]]
  headers <- http_headers_for(url, origin, option)
  headers[["Range"]] <- sprintf("bytes=%.0f-%.0f", pos, size - 1)
  resp <- http_attempt(url, headers, timeout)
  if (is.character(resp)) {
    return(list(kind = "retry", status = NA, message = resp))
  }
  on.exit(http_close(resp), add = TRUE)
  if (resp$status == 200) {
    return(list(kind = "norange"))
  }
  if (resp$status != 206) {
    return(download_outcome(resp$status, resp$headers, url, 1, st, size, NULL, call))
  }
  http_check_range(resp, pos, size - 1, size, url, call)
  st$prefix <- TRUE
  ptr <- download_ptr(st, call)
  repeat {
    x <- http_read(resp, 8 * 1024^2)
    if (is.character(x)) {
      return(list(kind = "retry", status = NA, message = x))
    }
    if (length(x) == 0) {
      break
    }
    if (pos + length(x) > size) {
      return(download_problem("long", url, 206, call))
    }
    st_check(partial_write_(ptr, pos, x), st$what, call = call)
    pos <- pos + length(x)
    st$done[[1]] <- pos
    if (!is.null(bar)) cli::cli_progress_update(set = pos, id = bar)
  }
  if (pos == size) list(kind = "complete") else {
    list(kind = "retry", status = NA, message = "The server closed the connection before the end of the file.")
  }
}

# One round: requests ranges `todo` of `st` at once, writes what arrives at
# its offsets, and returns for each range what its answer was:
# `list(kind, ...)`, `kind` one of "complete", "redirect" (`location`),
# "refused" (`status`), "retry" (`status`, `message`), "norange" (the
# server sent the whole file for a range that does not start it) or
# "fatal" (`raise()`, the error to give).
download_round <- function(st, todo, size, origin, option, timeout, bar, record, call) {
  st$prefix <- FALSE
  st$single <- FALSE
  ptr <- download_ptr(st, call)
  pool <- curl::new_pool(total_con = length(todo), host_con = length(todo), multiplex = FALSE)
  handles <- list()
  outcomes <- vector("list", length(st$start))
  # A problem a data callback found; it then stops its transfer with an
  # error (silenced: curl's callback would print it), and the problem is
  # reported after the round.
  problems <- vector("list", length(st$start))
  # Where each range is (its callback's `pos`, kept there: the callbacks
  # run for every 16 KiB that arrives, so they do as little as they can),
  # copied into `st$done` by sync() every `download_bar_step` bytes and at
  # the end, whatever the end.
  envs <- vector("list", length(st$start))
  sync <- function() {
    for (j in todo) {
      if (!is.null(envs[[j]]) && !(st$single && j > 1)) st$done[[j]] <- envs[[j]]$pos - st$start[[j]]
    }
  }
  got <- sum(st$done)
  mark <- got + download_bar_step
  recorded <- got
  old <- options(show.error.messages = FALSE)
  on.exit(
    {
      options(old)
      for (h in handles) try(curl::multi_cancel(h), silent = TRUE)
      sync()
    },
    add = TRUE
  )
  for (k in todo) {
    local({
      k <- k
      pos <- st$start[[k]] + st$done[[k]]
      envs[[k]] <<- environment()
      ranged <- !is.na(size)
      headers <- http_headers_for(st$url[[k]], origin, option)
      if (ranged) {
        headers[["Range"]] <- sprintf("bytes=%.0f-%.0f", pos, st$end[[k]])
      }
      h <- http_handle(headers, timeout, url = st$url[[k]], failonerror = FALSE)
      # 0: no byte seen yet; 1: the file's bytes, written; 2: another answer
      # (an error page, a redirect's body), not written.
      state <- 0L
      limit <- if (is.na(st$end[[k]])) Inf else st$end[[k]] + 1
      data <- function(x, final) {
        m <- length(x)
        if (state != 1L) {
          if (state == 2L || m == 0L) {
            return(invisible())
          }
          check <- download_check(h, k, st, pos, size, ranged)
          if (is.character(check)) {
            problems[[k]] <<- check
            stop("stop")
          }
          state <<- if (check) 1L else 2L
          if (state == 2L) {
            return(invisible())
          }
          if (st$single) limit <<- size
        }
        if (k > 1L && st$single) {
          problems[[k]] <<- "superseded"
          stop("stop")
        }
        if (pos + m > limit) {
          problems[[k]] <<- "long"
          stop("stop")
        }
        res <- partial_write_(ptr, pos, x)
        if (!is.null(res)) {
          problems[[k]] <<- res
          stop("stop")
        }
        pos <<- pos + m
        got <<- got + m
        if (got >= mark) {
          mark <<- got + download_bar_step
          sync()
          if (!is.null(bar)) {
            cli::cli_progress_update(set = sum(st$done), id = bar)
          }
          if (!is.na(size) && got - recorded >= download_record_step) {
            recorded <<- got
            if (!inherits(partial_flush_(ptr), "safetensors_rust_error")) download_save(record, size, st)
          }
        }
        invisible()
      }
      settle <- function(fun) {
        sync()
        outcomes[[k]] <<- if (k > 1 && st$single) {
          list(kind = "complete")
        } else {
          tryCatch(fun(), error = function(e) list(kind = "fatal", raise = function() stop(e)))
        }
      }
      done <- function(res) {
        settle(function() {
          download_outcome(res$status_code, http_parse_headers(res$headers), res$url, k, st, size, problems[[k]], call)
        })
      }
      fail <- function(msg) settle(function() download_failure(msg, problems[[k]], call))
      handles[[length(handles) + 1L]] <<- curl::multi_add(h, data = data, done = done, fail = fail, pool = pool)
    })
  }
  curl::multi_run(pool = pool)
  handles <- list()
  sync()
  if (!is.null(bar)) {
    cli::cli_progress_update(set = sum(st$done), id = bar)
  }
  for (k in todo) {
    if (is.null(outcomes[[k]])) {
      outcomes[[k]] <- list(kind = "retry", status = NA, message = "The transfer did not finish.")
    }
  }
  outcomes
}

# Whether the first bytes of an answer to range `k` (asked from `pos`; or
# the whole file when not `ranged`) are the file's: TRUE to write them,
# FALSE for an answer that is not the file (an error page or a redirect's
# body, which download_outcome() deals with), or the problem that ends
# the transfer: "norange" (the whole file, HTTP 200, for a range that
# starts later), "range" (a Content-Range for other bytes).
download_check <- function(h, k, st, pos, size, ranged) {
  d <- curl::handle_data(h)
  status <- d$status_code
  if (status == 200) {
    if (!ranged || length(st$start) == 1 && pos == 0) {
      return(TRUE)
    }
    if (k == 1 && pos == 0) {
      # The whole file for the first range: it becomes the only one.
      st$end[[1]] <- size - 1
      st$done[-1] <- 0
      st$single <- TRUE
      return(TRUE)
    }
    return("norange")
  }
  if (status != 206) {
    return(FALSE)
  }
  range <- download_content_range(d$headers)
  if (is.null(range) || range[[1]] != pos || (!is.na(st$end[[k]]) && range[[2]] != st$end[[k]]) ||
    (!is.na(size) && !is.na(range[[3]]) && range[[3]] != size)) {
    return("range")
  }
  TRUE
}

# What the finished answer to range `k`, of `status` with `headers` (a
# named list), means (see download_round()).
download_outcome <- function(status, headers, url, k, st, size, problem, call) {
  if (!is.null(problem)) {
    return(download_problem(problem, url, status, call))
  }
  if (status %in% c(200, 206)) {
    # A file of unknown length ends with its answer.
    if (is.na(size) || st$done[[k]] == st$end[[k]] - st$start[[k]] + 1) {
      return(list(kind = "complete"))
    }
    # Fewer bytes than asked for, and no error: ask for the rest.
    return(list(kind = "retry", status = NA, message = "The server closed the connection before the end of the range."))
  }
  if (status %in% c(301, 302, 303, 307, 308)) {
    location <- headers[["location"]]
    nxt <- if (!is.null(location) && nzchar(location)) url_resolve(url, trimws(location))
    if (is.null(nxt) || is.null(url_parse(nxt))) {
      return(list(kind = "fatal", raise = function() {
        http_abort(url, status, "The server redirected without a Location, or to a URL that is not http or https.", call = call)
      }))
    }
    return(list(kind = "redirect", status = status, location = nxt))
  }
  if (status %in% c(401, 403, 404, 410)) {
    return(list(kind = "refused", status = status))
  }
  if ((status >= 500 && status != 501) || status == 429) {
    return(list(kind = "retry", status = status, message = NULL))
  }
  list(kind = "fatal", raise = function() http_status_abort(url, status, call = call))
}

# What a transfer of range `k` that failed without an answer means: a
# problem its data callback found, an interrupt (curl stops a transfer
# whose callback was interrupted), or a dropped or refused connection, to
# retry.
download_failure <- function(msg, problem, call) {
  if (!is.null(problem)) {
    return(download_problem(problem, NULL, NA, call))
  }
  if (grepl("Failed writing", msg, fixed = TRUE) || curl_interrupted(msg)) {
    return(list(kind = "fatal", raise = function() interrupted_abort(call)))
  }
  list(kind = "retry", status = NA, message = msg)
}

# Whether `msg`, the error of a curl call, means that the user interrupted
# it: curl turns Ctrl-C during a blocking request into an error.
curl_interrupted <- function(msg) {
  grepl("aborted by an application callback|Callback aborted", msg)
}


download_problem <- function(problem, url, status, call) {
  if (identical(problem, "norange")) {
    return(list(kind = "norange"))
  }
  list(kind = "fatal", raise = function() {
    if (inherits(problem, "safetensors_rust_error")) {
      st_check(problem, "Can't write the file being downloaded.", call = call)
    }
    detail <- if (identical(problem, "long")) {
      "The server sent more bytes than the range asked for."
    } else {
      "The server answered a range request with other bytes than those asked for."
    }
    http_format_abort(url %||% "the download", "incomplete_buffer", detail, call)
  })
}
