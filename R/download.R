# Whole-file downloads to disk, for the Hub cache (R/hf.R): a file fetched
# with HTTP range requests in parallel (through the curl package's multi
# interface, each response written at its offset by the Rust core,
# src/rust/src/download.rs), atomically (into a partial file renamed over
# the target once complete) and resumably (a record of what arrived is
# kept beside the partial file, so that the next attempt, in this session
# or another, asks only for the rest), with a progress bar over bytes. A
# server that ignores ranges gets one request for the whole file.
#
# The partial file and its record are named after the target with the
# suffixes below, which huggingface_hub never uses for its own partial
# files (it resumes `<etag>.incomplete` from its length, which a file
# filled in parallel is not), so the two never resume each other's
# downloads; its cache tools count `*.incomplete` files as downloads left
# unfinished.

download_partial <- function(dest) paste0(dest, ".safetensors-r.incomplete")
download_record <- function(dest) paste0(dest, ".safetensors-r.progress")

# Option `safetensors.http_connections`: how many ranges of one file are
# fetched at once.
download_connections <- function(call) {
  http_number_option("safetensors.http_connections", 4, 1, 64, call)
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

# Records the progress of a download (see download_resume()): written to
# a temporary file and renamed, so that a record is whole or absent.
download_save <- function(record, size, st) {
  if (is.na(size)) {
    return(invisible())
  }
  lines <- c(
    "safetensors-r download 1",
    sprintf("size %.0f", size),
    sprintf("range %.0f %.0f %.0f", st$start, st$end, st$done)
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
# split in up to `safetensors.http_connections` ranges fetched at once; a
# server that answers a range with the whole file (HTTP 200) gets one
# request. Redirects are followed, server errors and dropped connections
# retried from the byte they stopped at (`safetensors.http_retries` times
# in a row without progress), and a URL that stops being accepted (a
# signed CDN URL that expired: 401, 403, 404, 410) is replaced once by
# `relocate()`, when given. `label` names the file in the progress bar.
# An error or an interrupt leaves the partial file and its record for the
# next attempt. Ranges are at least `min_part` bytes.
download_file <- function(url, dest, size, label, origin, relocate = NULL, min_part = download_min_part,
                          call = parent.frame()) {
  check_curl(call = call)
  partial <- download_partial(dest)
  record <- download_record(dest)
  what <- sprintf("Can't download %s.", format_file(label))
  ptr <- st_check(partial_open_(core_path(partial, call)), what, call = call)
  resume <- download_resume(record, partial, size)
  st <- new.env(parent = emptyenv())
  plan <- resume %||% download_plan(size, download_connections(call), min_part)
  st$start <- plan$start
  st$end <- plan$end
  st$done <- plan$done %||% numeric(length(plan$start))
  if (is.null(resume)) {
    unlink(record)
    st_check(partial_truncate_(ptr, 0), what, call = call)
  }
  st$url <- rep(url, length(st$start))
  st$complete <- !is.na(st$end) & st$done == st$end - st$start + 1
  committed <- FALSE
  on.exit(
    if (!committed) {
      # What arrived stays for the next attempt.
      if (!inherits(partial_flush_(ptr), "safetensors_rust_error")) {
        download_save(record, size, st)
      }
      partial_close_(ptr)
    },
    add = TRUE
  )
  bar <- NULL
  if (!is.na(size) && progress_wanted(size)) {
    bar <- progress_bar("Downloading", label, size)
    cli::cli_progress_update(set = sum(st$done), id = bar)
  }
  download_run(st, ptr, size, origin, relocate, label, bar, record, call)
  total <- if (is.na(size)) sum(st$done) else size
  st_check(partial_commit_(ptr, core_path(dest, call), total), what, call = call)
  committed <- TRUE
  unlink(record)
  invisible(dest)
}

# Fetches the ranges of `st` not yet complete until all are, in rounds:
# each round requests every incomplete range at once and waits for all of
# them; what each answer was decides the next round (download_outcome()).
download_run <- function(st, ptr, size, origin, relocate, label, bar, record, call) {
  retries <- http_retries(call)
  timeout <- http_timeout(call)
  option <- http_header_option(call)
  what <- sprintf("Can't download %s.", format_file(label))
  tries <- integer(length(st$start))
  hops <- integer(length(st$start))
  relocated <- FALSE
  repeat {
    todo <- which(!st$complete)
    if (length(todo) == 0) {
      return(invisible())
    }
    if (is.na(size)) {
      # A file of unknown length can only be asked for whole.
      st_check(partial_truncate_(ptr, 0), what, call = call)
      st$done[] <- 0
    }
    before <- st$done
    outcomes <- download_round(st, todo, ptr, size, origin, option, timeout, bar, record, call)
    if (isTRUE(st$single)) {
      # The server sent the whole file for the first range: it is the only
      # one now.
      k <- 1
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
        st_check(partial_truncate_(ptr, 0), what, call = call)
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

# One round: requests ranges `todo` of `st` at once, writes what arrives at
# its offsets, and returns for each range what its answer was:
# `list(kind, ...)`, `kind` one of "complete", "redirect" (`location`),
# "refused" (`status`), "retry" (`status`, `message`), "norange" (the
# server sent the whole file for a range that does not start it) or
# "fatal" (`raise()`, the error to give).
download_round <- function(st, todo, ptr, size, origin, option, timeout, bar, record, call) {
  pool <- curl::new_pool(total_con = length(todo), host_con = length(todo), multiplex = FALSE)
  handles <- list()
  outcomes <- vector("list", length(st$start))
  # A problem a data callback found; it then stops its transfer with an
  # error (silenced: curl's callback would print it), and the problem is
  # reported after the round.
  problems <- vector("list", length(st$start))
  old <- options(show.error.messages = FALSE)
  on.exit(
    {
      options(old)
      for (h in handles) try(curl::multi_cancel(h), silent = TRUE)
    },
    add = TRUE
  )
  shown <- sum(st$done)
  recorded <- shown
  for (k in todo) {
    local({
      k <- k
      pos <- st$start[[k]] + st$done[[k]]
      ranged <- !is.na(size)
      headers <- http_headers_for(st$url[[k]], origin, option)
      if (ranged) {
        headers[["Range"]] <- sprintf("bytes=%s-%s", fmt_num(pos), fmt_num(st$end[[k]]))
      }
      h <- curl::new_handle(
        url = st$url[[k]],
        followlocation = FALSE,
        connecttimeout = timeout,
        low_speed_limit = 1,
        low_speed_time = timeout,
        failonerror = FALSE,
        accept_encoding = "identity"
      )
      curl::handle_setheaders(h, .list = as.list(headers))
      writing <- NA
      limit <- if (is.na(st$end[[k]])) Inf else st$end[[k]] + 1
      data <- function(x, final) {
        m <- length(x)
        if (m == 0L) {
          return(invisible())
        }
        if (is.na(writing)) {
          writing <<- download_check(h, k, st, pos, size, ranged)
          if (is.character(writing)) {
            problems[[k]] <<- writing
            stop("stop")
          }
          if (writing && isTRUE(st$single)) limit <<- size
        }
        if (!writing) {
          return(invisible())
        }
        if (k > 1 && isTRUE(st$single)) {
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
        st$done[[k]] <- pos - st$start[[k]]
        got <- sum(st$done)
        if (!is.null(bar) && got - shown >= download_bar_step) {
          shown <<- got
          cli::cli_progress_update(set = got, id = bar)
        }
        if (!is.na(size) && got - recorded >= download_record_step) {
          recorded <<- got
          if (!inherits(partial_flush_(ptr), "safetensors_rust_error")) download_save(record, size, st)
        }
        invisible()
      }
      settle <- function(fun) {
        outcomes[[k]] <<- if (k > 1 && isTRUE(st$single)) {
          list(kind = "complete")
        } else {
          tryCatch(fun(), error = function(e) list(kind = "fatal", raise = function() stop(e)))
        }
      }
      done <- function(res) settle(function() download_outcome(res, k, st, size, problems[[k]], call))
      fail <- function(msg) settle(function() download_failure(msg, problems[[k]], call))
      handles[[length(handles) + 1L]] <<- curl::multi_add(h, data = data, done = done, fail = fail, pool = pool)
    })
  }
  curl::multi_run(pool = pool)
  handles <- list()
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
  cr <- http_parse_headers(d$headers)[["content-range"]]
  m <- regmatches(cr %||% "", regexec("^[Bb][Yy][Tt][Ee][Ss] +([0-9]+)-([0-9]+)/([0-9]+|\\*)$", trimws(cr %||% "")))[[1]]
  if (length(m) == 0 || as.numeric(m[[2]]) != pos ||
    (!is.na(st$end[[k]]) && as.numeric(m[[3]]) != st$end[[k]]) ||
    (!is.na(size) && m[[4]] != "*" && as.numeric(m[[4]]) != size)) {
    return("range")
  }
  TRUE
}

# What the finished answer `res` to range `k` means (see download_round()).
download_outcome <- function(res, k, st, size, problem, call) {
  status <- res$status_code
  if (!is.null(problem)) {
    return(download_problem(problem, res$url, status, call))
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
    location <- http_parse_headers(res$headers)[["location"]]
    nxt <- if (!is.null(location) && nzchar(location)) url_resolve(res$url, trimws(location))
    if (is.null(nxt) || is.null(url_parse(nxt))) {
      return(list(kind = "fatal", raise = function() {
        http_abort(res$url, status, "The server redirected without a Location, or to a URL that is not http or https.", call = call)
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
  list(kind = "fatal", raise = function() http_status_abort(res$url, status, call = call))
}

# What a transfer of range `k` that failed without an answer means: a
# problem its data callback found, an interrupt (curl stops a transfer
# whose callback was interrupted), or a dropped or refused connection, to
# retry.
download_failure <- function(msg, problem, call) {
  if (!is.null(problem)) {
    return(download_problem(problem, NULL, NA, call))
  }
  if (grepl("Failed writing", msg, fixed = TRUE)) {
    return(list(kind = "fatal", raise = function() {
      stop(structure(
        list(message = "Interrupted by the user.", call = NULL),
        class = c("safetensors_error_interrupted", "safetensors_error", "rlang_error", "error", "condition")
      ))
    }))
  }
  list(kind = "retry", status = NA, message = msg)
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
