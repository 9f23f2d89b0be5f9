# Hugging Face Hub paths, `hf://[datasets/|spaces/]OWNER/NAME[@REVISION][/PATH]`
# as huggingface_hub's file system writes them, resolved through the Hub's
# local cache, the one huggingface_hub (and so transformers), hfhub and
# other tools share: `models--OWNER--NAME/` in HF_HUB_CACHE, with `refs/`
# (a branch or tag's commit), `snapshots/COMMIT/` (the files of a commit,
# links to `blobs/`), `blobs/` (the files, named by their ETag) and
# `.no_exist/COMMIT/` (files known to be missing).
#
# The reading functions call hf_read() at their door: the path becomes a
# file in the cache (read as any local file, memory map and all) or a
# commit-pinned URL of the Hub (read with range requests by R/sources.R),
# before the rest of the package sees it, and the result records where it
# came from (an object of class `safetensors_origin`, attribute "origin").
#
# A file in the cache is read with no request when the revision is a
# commit, or HF_HUB_OFFLINE is set; for a branch or tag, one request finds
# the commit (a HEAD of the file, or for a folder the API's description
# of the revision), then the cache is looked at. Whole reads store the
# files they need in the cache (R/download.R), as hf_hub_download() does;
# lazy reads store nothing.

#' Hugging Face Hub paths
#'
#' Every function that reads a file takes, besides paths and URLs, a path on
#' the Hugging Face Hub written as Hugging Face's own tools write it
#' (`huggingface_hub`'s file system, `HfFileSystem`):
#' `hf://[datasets/|spaces/]OWNER/NAME[@REVISION][/PATH]`. Files come from
#' the Hub's local cache when it has them, the cache that Python's
#' `huggingface_hub` (and so `transformers` and `diffusers`), R's `hfhub`
#' and other tools share, so a model any of them downloaded is read from
#' disk; whole reads store what they download there, where the next R or
#' Python session finds it. Results record the commit they came from.
#'
#' @section Paths:
#' * `hf://openai-community/gpt2/model.safetensors`: a file of a model
#'   repository at its default branch, `main`.
#' * `hf://OWNER/NAME@REVISION/PATH`: at a branch, a tag or a commit (40
#'   hexadecimal digits). `refs/pr/N` and `refs/convert/NAME` are written as
#'   they are (`hf://OWNER/NAME@refs/pr/3/model.safetensors`); a `/` in
#'   another branch name is written `%2F`.
#' * `hf://datasets/OWNER/NAME/...` and `hf://spaces/OWNER/NAME/...`: a file
#'   of a dataset or a Space.
#' * A path that does not end in `.safetensors` or `.json` names a folder
#'   (`hf://OWNER/NAME` is the repository's root, `hf://OWNER/NAME@REV/unet`
#'   a folder in it) and means the checkpoint there, as a local folder does:
#'   its `model.safetensors.index.json` (or
#'   `diffusion_pytorch_model.safetensors.index.json`, or its only
#'   `*.safetensors.index.json`) if it has one, with its shards, else its
#'   `model.safetensors` (or `diffusion_pytorch_model.safetensors`, or its
#'   only `*.safetensors` file).
#'
#' A malformed path (a repository not written `OWNER/NAME`, `..` in the
#' path) is an error of class `safetensors_error_invalid_argument`, as
#' `huggingface_hub` refuses it.
#'
#' @section The cache:
#' The cache is the folder `HF_HUB_CACHE` names, else the older
#' `HUGGINGFACE_HUB_CACHE`, else `hub` in `HF_HOME`, else
#' `~/.cache/huggingface/hub` (`XDG_CACHE_HOME` replacing `~/.cache`), with
#' `~` and `$VARIABLE`s expanded, as `huggingface_hub` finds it. In it,
#' `models--OWNER--NAME` (`datasets--`, `spaces--`) holds `refs/BRANCH` (the
#' commit a branch or tag pointed to when last asked), `snapshots/COMMIT/`
#' (the files of a commit, as links to `blobs/`, or copies where links
#' can't be made or `HF_HUB_DISABLE_SYMLINKS` is set), `blobs/ETAG` (each
#' file once, named by its ETag: the SHA-256 of a large file) and
#' `.no_exist/COMMIT/` (files the Hub said were missing).
#'
#' A path is resolved with as few requests as the revision allows:
#' * a commit: the cache alone, with no request, when it has the file;
#' * a branch or a tag: one request finds the commit (a `HEAD` of the
#'   file's URL, or for a folder the Hub API's description of the
#'   revision), then the cache is looked at. If the Hub can't be reached
#'   (no answer, or a server error), the commit the cache last recorded for
#'   that branch is read, if the cache has the file;
#' * with `HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE=1`) no request is
#'   made: a branch is read from the commit `refs/` records, and a file the
#'   cache lacks is an error of class `safetensors_error_offline`.
#'
#' A file in the cache is a local file, read as one (see "Backends" in
#' [safe_load_file()]): by default with positioned reads into R arrays and
#' through a memory map into torch tensors.
#'
#' @section Downloads:
#' Whole reads, [safe_load_file()] without `tensors` and
#' [safe_load_model()], store a file the cache lacks (and the shards of a
#' sharded checkpoint) as `huggingface_hub`'s `hf_hub_download()` does: the
#' blob under its ETag, the link in the snapshot, the ref; Python's
#' `try_to_load_from_cache()` and `hf_hub_download()` then find it. The
#' file is fetched in up to four ranges at once (option
#' `safetensors.http_connections`; one request for a server that ignores
#' ranges) into `blobs/ETAG.safetensors-r.incomplete` and renamed into
#' place once complete, so the cache never holds part of a file under the
#' name of a whole one. An interrupted download (Ctrl-C, a dropped
#' connection, a crash) keeps what arrived and a record of it
#' (`blobs/ETAG.safetensors-r.progress`); the next attempt, in this session
#' or another, asks only for the rest. While a blob downloads, the process
#' holds the lock `huggingface_hub` takes for it
#' (`.locks/models--OWNER--NAME/ETAG.lock`), so R and Python processes
#' never download the same file at once: one waits for the other, then
#' finds the file. In an interactive session a download of more than 64 MiB
#' shows a progress bar (option `safetensors.progress`).
#' `options(safetensors.hf_cache = FALSE)` turns storing off: whole reads
#' then read the file over HTTP as they read any URL, and leave the cache
#' as it was.
#'
#' Lazy reads, [safe_open()], [safe_info()], [safe_metadata()],
#' [safe_summary()], [safe_slice()] and [safe_load_file()] with `tensors`,
#' read a file the cache lacks with HTTP range requests (see "Remote
#' files" in [safe_open()]) from its URL pinned to the commit, so that a
#' branch that moves meanwhile can't mix two versions, and store nothing.
#'
#' @section Where a result came from:
#' Results read from an `hf://` path carry attribute `"origin"`, an object
#' of class `safetensors_origin`: a list with the repository (`type`,
#' `repo`), the revision asked for (`revision`, `"main"` when none), the
#' commit it named (`commit`), the file read (`file`, its path in the
#' repository: a folder's checkpoint file, a sharded checkpoint's index)
#' and `path`, the file in the cache that was read (`NULL` when it was read
#' over HTTP). `format()` gives the path pinned to the commit, which reads
#' the same bytes again: `hf://OWNER/NAME@COMMIT/PATH`. The lists of
#' [safe_load_file()], the handles of [safe_open()], the data frames of
#' [safe_info()], the summaries of [safe_summary()] and the list
#' [safe_load_model()] returns carry it, and `print()` shows it.
#'
#' @section Tokens and endpoints:
#' `HF_ENDPOINT` points to another Hub, such as a mirror (by default
#' `https://huggingface.co`). Private and gated repositories need a token:
#' `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the token file
#' that `hf auth login` (`huggingface-cli login`) writes, `HF_TOKEN_PATH`
#' or `token` in `HF_HOME`; `HF_HUB_DISABLE_IMPLICIT_TOKEN` keeps it from
#' being sent. The token is sent as `Authorization: Bearer` to
#' `huggingface.co` and `hf.co` over https and to the host of
#' `HF_ENDPOINT` over https (or plain http on this machine, `localhost` or
#' `127.0.0.1`, for a local test server), never to a host a request is
#' redirected to (the CDN that serves large files with signed URLs), and
#' never appears in messages. Option `safetensors.http_headers` (see
#' [safetensors-package]) adds headers to the endpoint's requests.
#'
#' @section Errors:
#' The Hub's answers become classed errors (see [safetensors-conditions]),
#' read from its `X-Error-Code` header as `huggingface_hub` reads them:
#' `safetensors_error_repo_not_found` (no such repository, or a private one
#' the token can't read), `safetensors_error_gated` (a gated model whose
#' terms the account has not accepted: accept them on the model's page,
#' then set a token), `safetensors_error_revision_not_found`,
#' `safetensors_error_file_not_found` (a file not in the repository, or a
#' folder without a checkpoint), `safetensors_error_offline`, and
#' `safetensors_error_http` for other failures. They have fields `repo`,
#' `revision`, `file` and `status` where these apply, and say what to do.
#'
#' @section The same in Python and in R's hfhub:
#' | | safetensors | Python | hfhub |
#' |---|---|---|---|
#' | read a file (downloaded once, into the cache) | `safe_load_file("hf://o/n/model.safetensors")` | `load_file(hf_hub_download("o/n", "model.safetensors"))` | `safe_load_file(hub_download("o/n", "model.safetensors"))` |
#' | at a revision | `"hf://o/n@v1.0/model.safetensors"` | `hf_hub_download(..., revision="v1.0")` | `hub_download(..., revision = "v1.0")` |
#' | a sharded checkpoint | `safe_load_file("hf://o/n")` | `snapshot_download("o/n", allow_patterns=["*.safetensors*"])`, then each shard | `hub_snapshot("o/n", allow_patterns = "safetensors")`, then the index |
#' | the cache only | `HF_HUB_OFFLINE=1` | `local_files_only=True`, or `HF_HUB_OFFLINE=1` | `local_files_only = TRUE` |
#' | the header only, not downloading | `safe_info("hf://o/n/model.safetensors")` | `HfApi().get_safetensors_metadata("o/n")` | |
#' | one tensor, not downloading | `safe_open("hf://o/n/model.safetensors")[["w"]]` | (downloads the file first) | |
#' | a dataset | `"hf://datasets/o/n/x.safetensors"` | `repo_type="dataset"` | |
#' | the commit read | `attr(x, "origin")$commit` | the snapshot folder's name | the snapshot folder's name |
#'
#' `load_file` is `safetensors.torch.load_file` (or `safetensors.numpy`);
#' `hf_hub_download`, `snapshot_download` and `HfApi` are from
#' `huggingface_hub`; `hub_download` and `hub_snapshot` from the R
#' package hfhub, which reads and writes the same cache.
#'
#' @name safetensors-hub
#' @aliases safetensors_origin
#' @seealso `vignette("big-models")` for models on the Hub.
#' @examplesIf interactive() && rlang::is_installed("curl")
#' # The header of a model on the Hub, without downloading it
#' safe_info("hf://openai-community/gpt2/model.safetensors")
#'
#' # Downloaded into the Hub cache once; read from it afterwards
#' x <- safe_load_file("hf://openai-community/gpt2/model.safetensors")
#' attr(x, "origin")
#'
#' # Pinned to the commit it came from: no request at all next time
#' pinned <- format(attr(x, "origin"))
#' pinned
#' y <- safe_load_file(pinned)
NULL

# ---- paths --------------------------------------------------------------------

# The kinds of repositories, as the first segment of a path names them.
hf_types <- c(models = "model", datasets = "dataset", spaces = "space")

# The revisions whose name holds a `/` that is written as it is in a path:
# pull requests' and conversions' refs.
hf_special_ref <- "^refs/(convert/[A-Za-z0-9_.-]+|pr/[0-9]+)"

# The parts of the hf:// path `path`: `type` ("model", "dataset" or
# "space"), `repo` ("owner/name"), `revision` (NULL when not given; "%2F"
# in it stands for "/"), `file` (the path in the repository, "" for its
# root) and `folder` (whether `file` names a folder: anything but a file
# ending in `.safetensors` or `.json`). Malformed paths are errors of class
# `safetensors_error_invalid_argument`, as huggingface_hub's parser
# refuses them.
hf_parse <- function(path, call = parent.frame()) {
  bad <- function(why) {
    st_abort(
      "invalid_argument",
      c(
        "{.arg path} {.val {path}} is not a valid Hugging Face Hub path.",
        x = why,
        i = "Hub paths look like {.code hf://owner/name/model.safetensors}, {.code hf://owner/name@revision/folder} or {.code hf://datasets/owner/name/file.safetensors}."
      ),
      call = call
    )
  }
  body <- substring(path, 6)
  type <- "model"
  first <- sub("/.*$", "", body)
  if (first %in% names(hf_types) && grepl("/", body, fixed = TRUE)) {
    type <- hf_types[[first]]
    body <- sub("^[^/]*/", "", body)
  } else if (first %in% c(hf_types, "kernel", "bucket")) {
    bad(sprintf("The kind of repository is plural: `%ss/`.", first))
  } else if (first %in% c("kernels", "buckets")) {
    bad(sprintf("%s%s are not read by this package; models, datasets and spaces are.", toupper(substr(first, 1, 1)), substring(first, 2)))
  }
  body <- gsub("^/+|/+$", "", body)
  if (!nzchar(body)) {
    bad("It names no repository.")
  }
  at <- regexpr("@", body, fixed = TRUE)
  revision <- NULL
  if (at > 0 && lengths(regmatches(substr(body, 1, at - 1), gregexpr("/", substr(body, 1, at - 1), fixed = TRUE))) <= 1) {
    repo <- substr(body, 1, at - 1)
    rest <- substring(body, at + 1)
    special <- regmatches(rest, regexpr(hf_special_ref, rest))
    if (length(special) == 1) {
      revision <- special
      file <- sub("^/", "", substring(rest, nchar(special) + 1))
    } else {
      revision <- sub("/.*$", "", rest)
      file <- if (grepl("/", rest, fixed = TRUE)) sub("^[^/]*/", "", rest) else ""
    }
    revision <- tryCatch(utils::URLdecode(revision), error = function(e) "", warning = function(w) "")
    if (!nzchar(revision)) {
      bad("The revision after `@` is empty, or not a valid URL-encoded name.")
    }
  } else {
    parts <- strsplit(body, "/", fixed = TRUE)[[1]]
    if (length(parts) < 2) {
      bad("A repository is named `owner/name`.")
    }
    repo <- paste(parts[1:2], collapse = "/")
    file <- paste(parts[-(1:2)], collapse = "/")
  }
  owner_name <- strsplit(repo, "/", fixed = TRUE)[[1]]
  if (length(owner_name) != 2 || !all(grepl("^[A-Za-z0-9_.-]{1,96}$", owner_name)) ||
    any(grepl("^[-.]|[-.]$", owner_name)) ||
    grepl("--|\\.\\.", repo) || endsWith(repo, ".git")) {
    bad(sprintf(
      "`%s` is not a repository name: `owner/name`, each of letters, digits, `-`, `_` and `.`, not starting or ending with `-` or `.`, without `--` or `..`.",
      repo
    ))
  }
  segs <- strsplit(file, "/", fixed = TRUE)[[1]]
  if (nzchar(file) && (any(segs %in% c("", ".", "..")) || grepl("\\", file, fixed = TRUE) || grepl("^[A-Za-z]:", file))) {
    bad("The path in the repository must be relative, without empty, `.` or `..` parts.")
  }
  if (!is.null(revision)) {
    rsegs <- strsplit(revision, "/", fixed = TRUE)[[1]]
    if (any(rsegs %in% c("", ".", "..")) || grepl("\\", revision, fixed = TRUE) || endsWith(revision, "/")) {
      bad("The revision must be a branch, a tag or a commit.")
    }
  }
  list(
    path = path, type = type, repo = repo, revision = revision, file = file,
    folder = !grepl("\\.(safetensors|json)$", file, ignore.case = TRUE)
  )
}

# The hf:// path of `file` of `p`'s repository at `revision`, as messages
# and the origin record show it.
hf_path_of <- function(p, revision, file) {
  prefix <- if (p$type == "model") "" else paste0(p$type, "s/")
  rev <- if (!is.null(revision)) paste0("@", gsub("/", "%2F", revision, fixed = TRUE)) else ""
  if (!is.null(revision) && grepl(paste0(hf_special_ref, "$"), revision)) {
    rev <- paste0("@", revision)
  }
  paste0("hf://", prefix, p$repo, rev, if (nzchar(file)) paste0("/", file))
}

# The URL of `file` of `p`'s repository at `revision` on the Hub, as
# hf_hub_url() makes it.
hf_url <- function(p, revision, file) {
  prefix <- if (p$type == "model") "" else paste0(p$type, "s/")
  paste0(
    hf_endpoint(), "/", prefix, p$repo, "/resolve/",
    utils::URLencode(enc2utf8(revision), reserved = TRUE), "/", url_path_escape(enc2utf8(file))
  )
}

# `file` in the folder `dir` of a repository ("" for its root).
hf_join <- function(dir, file) {
  if (nzchar(dir) && dir != ".") paste0(dir, "/", file) else file
}

# ---- the cache ------------------------------------------------------------------

# The cache folder as huggingface_hub finds it: HF_HUB_CACHE, else the
# older HUGGINGFACE_HUB_CACHE, else `hub` in the home folder (hf_home():
# HF_HOME, else `huggingface` in XDG_CACHE_HOME or ~/.cache).
hf_cache_dir <- function() {
  dir <- Sys.getenv("HF_HUB_CACHE")
  if (!nzchar(dir)) dir <- Sys.getenv("HUGGINGFACE_HUB_CACHE")
  if (!nzchar(dir)) dir <- file.path(hf_home(), "hub")
  expand_env_path(dir)
}

# Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: no requests.
hf_offline <- function() {
  env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE")
}

# Option `safetensors.hf_cache`: whether whole reads store what they
# download in the cache.
hf_cache_option <- function(call) {
  x <- getOption("safetensors.hf_cache", TRUE)
  if (!(is.logical(x) && length(x) == 1 && !is.na(x))) {
    st_abort(
      "invalid_argument",
      "Option {.code safetensors.hf_cache} must be {.code TRUE} or {.code FALSE}, not {value_friendly(x)}.",
      call = call
    )
  }
  x
}

# The folder of `p`'s repository in the cache: `models--owner--name`.
hf_storage <- function(p, cache = hf_cache_dir()) {
  file.path(cache, paste(c(paste0(p$type, "s"), strsplit(p$repo, "/", fixed = TRUE)[[1]]), collapse = "--"))
}

# The commit `revision` (a branch or tag) points to in the cache, or NULL.
hf_ref_read <- function(storage, revision) {
  path <- file.path(storage, "refs", revision)
  if (!file.exists(path) || dir.exists(path)) {
    return(NULL)
  }
  commit <- tryCatch(readLines(path, n = 1L, warn = FALSE), error = function(e) character())
  if (length(commit) == 1 && is_commit(commit)) commit
}

# Records that `revision` points to `commit` (written to a temporary file
# and renamed, so that readers see the old or the new one), unless it does
# already; a cache we may not write to is left as it is.
hf_ref_write <- function(storage, revision, commit) {
  if (identical(revision, commit) || identical(hf_ref_read(storage, revision), commit)) {
    return(invisible())
  }
  path <- file.path(storage, "refs", revision)
  dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
  tmp <- sprintf("%s.%s.tmp", path, paste(sample(c(0:9, letters[1:6]), 8, replace = TRUE), collapse = ""))
  ok <- tryCatch(
    {
      writeChar(commit, tmp, eos = NULL)
      file.rename(tmp, path)
    },
    error = function(e) FALSE,
    warning = function(w) FALSE
  )
  if (!isTRUE(ok)) unlink(tmp)
  invisible()
}

# Whether `s` is a full commit hash.
is_commit <- function(s) {
  is_string(s) && grepl("^[0-9a-f]{40}$", s)
}

# The file `file` of a commit in the cache (a link in the snapshot that
# leads to its blob, or a copy where links are not available), or NULL.
hf_snapshot_file <- function(storage, commit, file) {
  path <- file.path(storage, "snapshots", commit, file)
  if (file.exists(path) && !dir.exists(path)) path
}

# What the cache holds of `file` at `commit` (a file, or with `folder` the
# checkpoint of a folder): `list(file, local)`, `file` the path in the
# repository, `local` the path to read (for a shard index, one whose
# shards are all in the cache too), or NULL. A file the cache knows to be
# missing (`.no_exist`, as the Hub answered before) is an error.
hf_cache_lookup <- function(p, storage, revision, commit, file, folder, call) {
  if (folder) {
    dir <- file.path(storage, "snapshots", commit, file)
    if (!dir.exists(dir)) {
      return(NULL)
    }
    files <- list.files(dir)
    files <- files[!dir.exists(file.path(dir, files))]
    pick <- checkpoint_in(files)
    if (is.null(pick)) {
      return(NULL)
    }
    file <- hf_join(file, pick)
  } else if (file.exists(file.path(storage, ".no_exist", commit, file))) {
    hf_missing_abort(p, revision, commit, file, call)
  }
  local <- hf_snapshot_file(storage, commit, file)
  if (is.null(local)) {
    return(NULL)
  }
  if (is_index_path(file)) {
    shards <- hf_shards(local, file, call)
    if (any(vapply(shards, function(s) is.null(hf_snapshot_file(storage, commit, s)), logical(1)))) {
      return(NULL)
    }
  }
  list(file = file, local = local)
}

# The shards the index `local` (of `file` in the repository) names, as
# paths in the repository.
hf_shards <- function(local, file, call) {
  idx <- read_index(local, call = call)
  vapply(sort(unique(idx$files), method = "radix"), function(s) hf_join(dirname(file), s), character(1), USE.NAMES = FALSE)
}

# Puts the file of `commit` at `file` in the snapshot, pointing to `blob`:
# a relative link, as huggingface_hub makes it, or where links are not
# available (or HF_HUB_DISABLE_SYMLINKS is set) the blob itself, moved if
# it was just downloaded (`new_blob`), copied otherwise.
hf_link <- function(storage, commit, file, etag, new_blob) {
  pointer <- file.path(storage, "snapshots", commit, file)
  blob <- file.path(storage, "blobs", etag)
  dir.create(dirname(pointer), recursive = TRUE, showWarnings = FALSE)
  unlink(pointer)
  depth <- lengths(regmatches(file, gregexpr("/", file, fixed = TRUE)))
  target <- paste0(strrep("../", 2 + depth), "blobs/", etag)
  if (.Platform$OS.type == "windows") {
    # As huggingface_hub makes them there (os.path.relpath()).
    target <- gsub("/", "\\", target, fixed = TRUE)
  }
  if (!env_true("HF_HUB_DISABLE_SYMLINKS") && isTRUE(suppressWarnings(file.symlink(target, pointer))) &&
    file.exists(pointer)) {
    return(invisible(pointer))
  }
  unlink(pointer)
  if (new_blob) file.rename(blob, pointer) else file.copy(blob, pointer)
  invisible(pointer)
}

# Records that `file` is not in the repository at `commit`, as
# huggingface_hub does (`.no_exist/COMMIT/FILE`, empty).
hf_mark_missing <- function(storage, commit, file) {
  path <- file.path(storage, ".no_exist", commit, file)
  dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
  try(file.create(path, showWarnings = FALSE), silent = TRUE)
  invisible()
}

# Tags the cache folder for backup tools (the Cache Directory Tagging
# Specification), as huggingface_hub does when it first writes there.
hf_cachedir_tag <- function(cache) {
  tag <- file.path(cache, "CACHEDIR.TAG")
  if (!file.exists(tag)) {
    dir.create(cache, recursive = TRUE, showWarnings = FALSE)
    text <- c(
      "Signature: 8a477f597d28d172789f06886806bc55",
      "# This file is a cache directory tag: the Hugging Face Hub cache, as huggingface_hub and the",
      "# R package safetensors write it. See https://bford.info/cachedir/"
    )
    suppressWarnings(try(writeLines(text, tag), silent = TRUE))
  }
  invisible()
}

# ---- requests -----------------------------------------------------------------

# A request to the Hub: `method` "HEAD" or "GET" of `url`, with the
# credentials of the endpoint's origin, following redirects that stay on
# that origin (a renamed repository), not those to another host (the CDN
# of large files: that answer holds what is asked). Returns
# `list(status, headers, body, url)`, or the message of a failure without
# an answer. With `retry`, failures without an answer and server errors
# (5xx, 429) are tried again with backoff.
hf_request <- function(url, method, retry, call) {
  check_curl(call = call)
  origin <- url_origin(url_parse(hf_endpoint()))
  option <- http_header_option(call)
  timeout <- http_timeout(call)
  retries <- if (retry) http_retries(call) else 0
  tries <- 0
  hops <- 0
  current <- url
  repeat {
    headers <- http_headers_for(current, origin, option)
    h <- http_handle(headers, timeout, nobody = method == "HEAD")
    res <- tryCatch(curl::curl_fetch_memory(current, handle = h), error = function(e) conditionMessage(e))
    if (is.character(res) && curl_interrupted(res)) {
      interrupted_abort(call)
    }
    if (is.character(res) || (res$status_code >= 500 && res$status_code != 501) || identical(res$status_code, 429L)) {
      tries <- tries + 1
      if (tries <= retries) {
        Sys.sleep(http_backoff(tries))
        next
      }
      if (is.character(res)) {
        return(res)
      }
    }
    out <- list(status = res$status_code, headers = http_parse_headers(res$headers), body = res$content, url = current)
    location <- out$headers[["location"]]
    if (out$status %in% c(301, 302, 303, 307, 308) && !is.null(location)) {
      nxt <- url_resolve(current, trimws(location))
      u <- url_parse(nxt)
      if (!is.null(u) && identical(url_origin(u), url_origin(url_parse(current))) && hops < 10) {
        hops <- hops + 1
        current <- nxt
        next
      }
    }
    return(out)
  }
}

# What the Hub says of `file` at `revision` (a HEAD of its URL):
# `list(commit, etag, size, location, url, status)`, `etag` NULL when the
# answer has none that can name a file, `location` where to download it
# from (the CDN, for a large file). The Hub's errors are classed errors
# (hf_response_abort()); a failure without an answer, or a server error,
# is returned as `list(failed = message or status)`, to fall back to the
# cache with.
hf_meta <- function(p, revision, file, retry, call) {
  url <- hf_url(p, revision, file)
  res <- hf_request(url, "HEAD", retry, call)
  if (is.character(res)) {
    return(list(failed = res, url = url))
  }
  status <- res$status
  if (status >= 500 || status == 429) {
    return(list(failed = status, url = url))
  }
  redirect <- status %in% c(301, 302, 303, 307, 308)
  if (!(status %in% 200:299 || redirect)) {
    if (status == 404 && identical(res$headers[["x-error-code"]], "EntryNotFound")) {
      commit <- res$headers[["x-repo-commit"]]
      return(list(missing = TRUE, commit = if (is_commit(commit)) commit, response = res))
    }
    hf_response_abort(p, revision, file, res, call)
  }
  commit <- res$headers[["x-repo-commit"]]
  if (!is_commit(commit)) {
    http_abort(
      res$url, status,
      "The answer has no X-Repo-Commit header, so the server does not seem to be a Hugging Face Hub.",
      hint = "If HF_ENDPOINT is set, check that it points to a Hub or a mirror of it; otherwise check the proxy and firewall settings.",
      call = call
    )
  }
  # The ETag names the file in the cache: anything but a plain name is none.
  etag <- res$headers[["x-linked-etag"]] %||% res$headers[["etag"]]
  etag <- if (!is.null(etag)) gsub('"', "", sub("^W/", "", etag), fixed = TRUE)
  if (!is.null(etag) && (!grepl("^[A-Za-z0-9._+=-]{1,200}$", etag) || etag %in% c(".", ".."))) {
    etag <- NULL
  }
  size <- http_size(res$headers[["x-linked-size"]] %||% if (!redirect) res$headers[["content-length"]])
  location <- if (redirect && !is.null(res$headers[["location"]])) url_resolve(res$url, trimws(res$headers[["location"]])) else res$url
  list(commit = commit, etag = etag, size = size, location = location, url = res$url, status = status)
}

# The Hub's description of `p`'s repository at `revision` (its API):
# `list(commit, files)`, or `list(failed = ...)` as for hf_meta().
hf_revision_info <- function(p, revision, retry, call) {
  url <- sprintf(
    "%s/api/%ss/%s/revision/%s", hf_endpoint(), p$type, p$repo, utils::URLencode(enc2utf8(revision), reserved = TRUE)
  )
  res <- hf_request(url, "GET", retry, call)
  if (is.character(res)) {
    return(list(failed = res, url = url))
  }
  if (res$status >= 500 || res$status == 429) {
    return(list(failed = res$status, url = url))
  }
  if (res$status != 200) {
    hf_response_abort(p, revision, p$file, res, call)
  }
  info <- hf_revision_(res$body)
  if (inherits(info, "safetensors_rust_error")) {
    http_abort(url, res$status, sentence(info$message), call = call)
  }
  info
}

# A failed request (`failed`, from hf_meta() or hf_revision_info()) as the
# error it is: a message without an answer, or a server error.
hf_failed_abort <- function(res, call) {
  if (is.character(res$failed)) {
    http_abort(res$url, NA, res$failed, hint = "Set HF_HUB_OFFLINE=1 to read only what the Hub cache holds.", call = call)
  }
  http_status_abort(res$url, res$failed, call = call)
}

# The classed error for the Hub's answer `res` about `file` of `p` at
# `revision`, from its X-Error-Code header as huggingface_hub reads it:
# RepoNotFound (or a 401 without a code) is
# `safetensors_error_repo_not_found`, GatedRepo `safetensors_error_gated`,
# RevisionNotFound `safetensors_error_revision_not_found`, EntryNotFound
# `safetensors_error_file_not_found`; anything else the HTTP error.
hf_response_abort <- function(p, revision, file, res, call) {
  code <- res$headers[["x-error-code"]] %||% ""
  message <- res$headers[["x-error-message"]] %||% ""
  status <- res$status
  token <- !is.null(hf_token()) && hf_token_allowed(url_parse(res$url))
  shown <- p$path
  site <- sprintf("%s/%s%s", hf_endpoint(), if (p$type == "model") "" else paste0(p$type, "s/"), p$repo)
  if (code == "GatedRepo") {
    st_abort(
      "gated",
      c(
        cli_escape(sprintf("Can't read %s.", format_file(shown))),
        x = cli_escape(sprintf("%s is a gated %s: its files are for accounts that accepted its terms.", encodeString(p$repo, quote = "'"), p$type)),
        i = cli_escape(if (token) {
          sprintf("The token sent has no access yet: accept the terms at %s with its account (access may take a while to be granted).", site)
        } else {
          sprintf("Accept its terms at %s, then set the HF_TOKEN environment variable or log in with `hf auth login`.", site)
        })
      ),
      repo = p$repo, status = as.integer(status), url = url_redact(res$url),
      call = call
    )
  }
  if (code == "RevisionNotFound") {
    st_abort(
      "revision_not_found",
      c(
        cli_escape(sprintf("Can't read %s.", format_file(shown))),
        x = cli_escape(sprintf("Revision %s is not in %s.", encodeString(revision, quote = "'"), encodeString(p$repo, quote = "'"))),
        i = cli_escape(sprintf("Name a branch, a tag or a commit of the repository (see %s/tree/main), as in `%s`.", site, hf_path_of(p, "main", file)))
      ),
      repo = p$repo, revision = revision, status = as.integer(status), url = url_redact(res$url),
      call = call
    )
  }
  if (code == "RepoNotFound" || (status == 401 && message != "Invalid credentials in Authorization header")) {
    st_abort(
      "repo_not_found",
      c(
        cli_escape(sprintf("Can't read %s.", format_file(shown))),
        x = cli_escape(sprintf("There is no %s %s on %s, or it is private.", p$type, encodeString(p$repo, quote = "'"), hf_endpoint())),
        i = if (token) {
          "Check the name; the token sent has no access to a private repository of that name."
        } else {
          "Check the name (a dataset is `hf://datasets/owner/name`); for a private repository, set the HF_TOKEN environment variable or log in with `hf auth login`."
        }
      ),
      repo = p$repo, status = as.integer(status), url = url_redact(res$url),
      call = call
    )
  }
  if (code == "EntryNotFound") {
    hf_missing_abort(p, revision, res$headers[["x-repo-commit"]], file, call, status = status, url = res$url)
  }
  http_status_abort(res$url, status, call = call)
}

# The error for `file` missing from `p`'s repository at `revision`.
hf_missing_abort <- function(p, revision, commit, file, call, status = NA, url = NA) {
  at <- encodeString(revision, quote = "'")
  if (is_commit(commit) && !identical(commit, revision)) {
    at <- sprintf("%s (commit %s)", at, substr(commit, 1, 12))
  }
  site <- sprintf("%s/%s%s", hf_endpoint(), if (p$type == "model") "" else paste0(p$type, "s/"), p$repo)
  st_abort(
    "file_not_found",
    c(
      cli_escape(sprintf("Can't read %s.", format_file(p$path))),
      x = cli_escape(sprintf("%s %s not in %s at revision %s.", encodeString(file, quote = "'"), if (nzchar(file)) "is" else "are", encodeString(p$repo, quote = "'"), at)),
      i = cli_escape(sprintf("The repository's files are listed at %s/tree/%s.", site, utils::URLencode(revision, reserved = TRUE)))
    ),
    repo = p$repo, revision = revision, file = file, status = as.integer(status),
    url = if (!is.na(url)) url_redact(url) else NA_character_,
    call = call
  )
}

# The error for an hf:// path that HF_HUB_OFFLINE keeps from the Hub and
# the cache does not hold.
hf_offline_abort <- function(p, revision, commit, call) {
  at <- encodeString(revision, quote = "'")
  if (!is.null(commit) && !identical(commit, revision)) {
    at <- sprintf("%s (commit %s)", at, substr(commit, 1, 12))
  }
  what <- if (p$folder) "the checkpoint" else encodeString(p$file, quote = "'")
  st_abort(
    "offline",
    c(
      cli_escape(sprintf("Can't read %s.", format_file(p$path))),
      x = cli_escape(sprintf(
        "HF_HUB_OFFLINE is set, and the Hub cache (%s) has no copy of %s of %s at revision %s.",
        hf_cache_dir(), what, encodeString(p$repo, quote = "'"), at
      )),
      i = "Unset HF_HUB_OFFLINE to download it, or download it first: in R, `safe_load_file()` of the same path; in Python, `huggingface_hub.hf_hub_download()`."
    ),
    repo = p$repo, revision = revision,
    call = call
  )
}

# The checkpoint of a folder, among the `files` of a repository (paths in
# it): its index or its single file, as checkpoint_in() picks them, or an
# error of class `safetensors_error_file_not_found`.
hf_pick <- function(p, files, revision, commit, call) {
  dir <- p$file
  inside <- if (nzchar(dir)) files[startsWith(files, paste0(dir, "/"))] else files
  names <- substring(inside, if (nzchar(dir)) nchar(dir) + 2 else 1)
  names <- names[!grepl("/", names, fixed = TRUE)]
  pick <- checkpoint_in(names)
  if (!is.null(pick)) {
    return(hf_join(dir, pick))
  }
  where <- if (nzchar(dir)) sprintf("The folder '%s' of %s", dir, encodeString(p$repo, quote = "'")) else encodeString(p$repo, quote = "'")
  several <- grep("\\.safetensors$", names, value = TRUE)
  detail <- if (length(several) > 1) {
    sprintf(
      "%s holds %d .safetensors files and no shard index, at revision '%s'.", where, length(several), revision
    )
  } else {
    sprintf("%s holds no .safetensors file at revision '%s'.", where, revision)
  }
  st_abort(
    "file_not_found",
    c(
      cli_escape(sprintf("Can't read %s.", format_file(p$path))),
      x = cli_escape(detail),
      i = if (length(several) > 1) {
        cli_escape(sprintf("Name one of them, as in `%s`.", hf_path_of(p, p$revision, hf_join(dir, several[[1]]))))
      } else {
        "A folder is read from its model.safetensors.index.json (or diffusion_pytorch_model.safetensors.index.json), else its single .safetensors file."
      }
    ),
    repo = p$repo, revision = revision, file = dir,
    call = call
  )
}

# ---- resolution -----------------------------------------------------------------

# Where the hf:// path `path` is read from: `list(path, origin)`, `path` a
# file in the cache or the commit-pinned URL of the file on the Hub,
# `origin` the record of where it came from (new_origin()). `whole`: all
# of the file will be read, so a file the cache lacks is downloaded into it
# (unless option `safetensors.hf_cache` is FALSE); otherwise it is read
# over HTTP with range requests, and nothing is stored.
hf_resolve <- function(path, whole, call = parent.frame()) {
  p <- hf_parse(path, call = call)
  revision <- p$revision %||% "main"
  cache <- hf_cache_dir()
  storage <- hf_storage(p, cache)
  store <- whole && hf_cache_option(call)
  offline <- hf_offline()
  found <- function(commit, file, local) {
    list(path = local, origin = new_origin(p, revision, commit, file, local))
  }
  # The cache alone, when the commit is known without asking.
  commit <- if (is_commit(revision)) revision else if (offline) hf_ref_read(storage, revision)
  if (!is.null(commit)) {
    hit <- hf_cache_lookup(p, storage, revision, commit, p$file, p$folder, call)
    if (!is.null(hit)) {
      return(found(commit, hit$file, hit$local))
    }
  }
  if (offline) {
    hf_offline_abort(p, revision, commit, call)
  }
  # One request: the commit, with the file's metadata (or the folder's
  # files). If the Hub can't be reached, a branch or tag the cache knows is
  # read from the cache.
  fallback <- function(res) {
    known <- hf_ref_read(storage, revision)
    hit <- if (!is.null(known)) hf_cache_lookup(p, storage, revision, known, p$file, p$folder, call)
    if (is.null(hit)) {
      hf_failed_abort(res, call)
    }
    found(known, hit$file, hit$local)
  }
  cached_first <- !is.null(hf_ref_read(storage, revision))
  meta <- NULL
  if (p$folder) {
    info <- hf_revision_info(p, revision, retry = !cached_first, call)
    if (!is.null(info$failed)) {
      return(fallback(info))
    }
    commit <- info$commit
    file <- hf_pick(p, info$files, revision, commit, call)
  } else {
    file <- p$file
    meta <- hf_meta(p, revision, file, retry = !cached_first, call)
    if (!is.null(meta$failed)) {
      return(fallback(meta))
    }
    if (isTRUE(meta$missing)) {
      if (store && !is.null(meta$commit)) {
        hf_mark_missing(storage, meta$commit, file)
        hf_ref_write(storage, revision, meta$commit)
      }
      hf_response_abort(p, revision, file, meta$response, call)
    }
    commit <- meta$commit
  }
  hit <- hf_cache_lookup(p, storage, revision, commit, file, FALSE, call)
  if (!is.null(hit)) {
    if (store) hf_ref_write(storage, revision, commit)
    return(found(commit, hit$file, hit$local))
  }
  if (!store) {
    url <- hf_url(p, commit, file)
    return(list(path = url, origin = new_origin(p, revision, commit, file, NULL)))
  }
  # A whole read: into the cache, with the shards of an index.
  hf_cachedir_tag(cache)
  hf_ref_write(storage, revision, commit)
  local <- hf_download(p, storage, commit, file, meta, call)
  if (is_index_path(file)) {
    for (shard in hf_shards(local, file, call)) {
      if (is.null(hf_snapshot_file(storage, commit, shard))) {
        hf_download(p, storage, commit, shard, NULL, call)
      }
    }
  }
  found(commit, file, local)
}

# Downloads `file` of `p`'s repository at `commit` into the cache (its blob
# under its ETag, then its link in the snapshot), holding the lock
# huggingface_hub takes for that blob, so that two processes (R or Python)
# never download it at once; `meta` is what the Hub said of the file
# (hf_meta()), NULL to ask. Returns the file's path in the snapshot.
hf_download <- function(p, storage, commit, file, meta, call) {
  have <- hf_snapshot_file(storage, commit, file)
  if (!is.null(have)) {
    return(have)
  }
  if (is.null(meta)) {
    meta <- hf_meta(p, commit, file, retry = TRUE, call)
    if (!is.null(meta$failed)) {
      hf_failed_abort(meta, call)
    }
    if (isTRUE(meta$missing)) {
      hf_mark_missing(storage, commit, file)
      hf_response_abort(p, commit, file, meta$response, call)
    }
  }
  if (is.null(meta$etag)) {
    http_abort(
      meta$url, meta$status,
      "The answer has no valid ETag, by which the cache names a file, so it can't be stored reliably.",
      hint = "Read it with `options(safetensors.hf_cache = FALSE)`, which stores nothing.",
      call = call
    )
  }
  blob <- file.path(storage, "blobs", meta$etag)
  dir.create(dirname(blob), recursive = TRUE, showWarnings = FALSE)
  dir.create(dirname(file.path(storage, "snapshots", commit, file)), recursive = TRUE, showWarnings = FALSE)
  lock <- download_lock(
    file.path(dirname(storage), ".locks", basename(storage), paste0(meta$etag, ".lock")), file, call
  )
  on.exit(lock_release_(lock), add = TRUE)
  new_blob <- FALSE
  if (!file.exists(blob)) {
    relocate <- function() {
      again <- hf_meta(p, commit, file, retry = TRUE, call)
      if (!is.null(again$failed)) hf_failed_abort(again, call)
      again$location
    }
    origin <- url_origin(url_parse(hf_endpoint()))
    download_file(meta$location, blob, meta$size, label = file, origin = origin, relocate = relocate, call = call)
    new_blob <- TRUE
  }
  if (is.null(hf_snapshot_file(storage, commit, file))) {
    hf_link(storage, commit, file, meta$etag, new_blob)
  }
  file.path(storage, "snapshots", commit, file)
}

# Saving to an hf:// path is an error (rather than a file named `hf:`):
# the package reads the Hub, it does not upload to it.
check_not_hf <- function(path, call = parent.frame()) {
  if (is_hf_path(path)) {
    st_abort(
      "invalid_argument",
      c(
        "Can't write to {.val {path}}: files are saved locally, not to the Hugging Face Hub.",
        i = "Save to a local path, then upload it with Python's {.code huggingface_hub.upload_file()} or {.code hf upload}."
      ),
      call = call
    )
  }
}

# Calls `fun` with where the hf:// path `path` is read from (hf_resolve())
# and returns its result, with attribute "origin" set when `mark`.
hf_read <- function(path, whole, fun, mark = TRUE, call = parent.frame()) {
  src <- hf_resolve(path, whole, call = call)
  out <- fun(src$path, src$origin)
  if (mark) {
    attr(out, "origin") <- src$origin
  }
  out
}

# ---- the origin record ------------------------------------------------------

# Where a result read from an hf:// path came from: the repository (`type`,
# `repo`), the revision asked for (`revision`, "main" when none), the
# commit it named (`commit`), the file read (`file`, its path in the
# repository: a folder's checkpoint, a sharded checkpoint's index), and
# `path`, the file in the cache that was read (NULL when it was read over
# HTTP). format() gives the hf:// path pinned to the commit, which reads
# the same bytes again.
new_origin <- function(p, revision, commit, file, local) {
  structure(
    list(
      type = p$type,
      repo = p$repo,
      revision = revision,
      commit = commit,
      file = file,
      path = local
    ),
    class = "safetensors_origin"
  )
}

#' @export
format.safetensors_origin <- function(x, ...) {
  hf_path_of(list(type = x$type, repo = x$repo), x$commit, x$file)
}

#' @export
print.safetensors_origin <- function(x, ...) {
  cat("<safetensors_origin> ", describe_origin(x), "\n", sep = "")
  if (!is.null(x$path)) {
    cat("Read from the Hub cache: ", x$path, "\n", sep = "")
  } else {
    cat("Read over HTTP\n")
  }
  invisible(x)
}
