# A Hugging Face Hub for the hf:// tests: hub-server.py (Python's standard
# library only) on 127.0.0.1, started by the test that needs it and stopped
# when that test ends, with the environment of a fresh machine pointed at
# it (HF_ENDPOINT) and at an empty cache (HF_HUB_CACHE), without tokens.
# Tests skip cleanly without curl, processx, jsonlite or Python.

# Starts a Hub for the calling test; returns a list with `root` (the
# repositories), `endpoint`, `cache`, `commit()` (adds a commit to a
# repository), `access()` (makes one gated or private), `modes()` (makes the
# servers misbehave, see hub-server.py), `log()` (the responses so far, a
# data frame with `server`, `method`, `path`, `range`, `auth`, `status`,
# `sent`) and `clear()` (forgets them).
local_hub <- function(env = parent.frame()) {
  skip_without_http()
  root <- withr::local_tempdir(.local_envir = env)
  log <- withr::local_tempfile(fileext = ".jsonl", .local_envir = env)
  home <- withr::local_tempdir(.local_envir = env)
  ports <- start_test_server("hub-server.py", c(root, log), env)
  if (length(ports) != 2 || anyNA(ports)) skip("the test Hub server did not start")
  endpoint <- sprintf("http://127.0.0.1:%d", ports[[1]])
  cache <- file.path(home, "hub")
  withr::local_envvar(
    HF_ENDPOINT = endpoint, HF_HOME = home, HF_HUB_CACHE = NA, HUGGINGFACE_HUB_CACHE = NA, XDG_CACHE_HOME = NA,
    HF_TOKEN = NA, HUGGING_FACE_HUB_TOKEN = NA, HF_TOKEN_PATH = NA, HF_HUB_DISABLE_IMPLICIT_TOKEN = NA,
    HF_HUB_OFFLINE = NA, TRANSFORMERS_OFFLINE = NA, HF_HUB_DISABLE_SYMLINKS = NA,
    .local_envir = env
  )
  withr::local_options(safetensors.http_headers = NULL, safetensors.hf_cache = NULL, .local_envir = env)
  n <- 0
  repo_dir <- function(repo, type) file.path(root, paste0(type, "s"), repo)
  list(
    root = root,
    endpoint = endpoint,
    cdn_port = ports[[2]],
    cache = cache,
    home = home,
    # Adds a commit holding `files` (named by their paths in the
    # repository: a list of tensors to save, a raw vector or a string of
    # contents, or the path of a file to copy) to `branch` (and tags
    # `tags`); returns its hash, made from a counter so that tests see the
    # same hashes every time.
    commit = function(repo, files, branch = "main", type = "model", tags = character()) {
      n <<- n + 1
      commit <- paste0(substr(paste(rep(sprintf("%08x", c(n, nchar(repo), n * 7919)), 3), collapse = ""), 1, 32), sprintf("%08x", n))
      dir <- file.path(repo_dir(repo, type), "commits", commit)
      for (f in names(files)) {
        target <- file.path(dir, f)
        dir.create(dirname(target), recursive = TRUE, showWarnings = FALSE)
        x <- files[[f]]
        if (is.list(x)) {
          safe_save_file(x, target)
        } else if (is.raw(x)) {
          writeBin(x, target)
        } else if (file.exists(x)) {
          file.copy(x, target)
        } else {
          writeBin(charToRaw(x), target)
        }
      }
      refs_path <- file.path(repo_dir(repo, type), "refs.json")
      refs <- if (file.exists(refs_path)) jsonlite::fromJSON(refs_path) else list()
      for (r in c(branch, tags)) refs[[r]] <- commit
      jsonlite::write_json(refs, refs_path, auto_unbox = TRUE)
      commit
    },
    access = function(repo, gated = FALSE, private = FALSE, tokens = character(), type = "model") {
      dir.create(repo_dir(repo, type), recursive = TRUE, showWarnings = FALSE)
      jsonlite::write_json(list(gated = gated, private = private, tokens = I(tokens)), file.path(repo_dir(repo, type), "access.json"), auto_unbox = TRUE)
    },
    modes = function(...) {
      m <- list(...)
      path <- file.path(root, "_modes.json")
      if (length(m) == 0) unlink(path) else jsonlite::write_json(m, path, auto_unbox = TRUE)
    },
    log = function() read_hub_log(log),
    clear = function() unlink(log),
    # Messages name the server's port and the temporary cache: the same
    # text every run once they are replaced.
    scrub = function(x) {
      x <- gsub(normalizePath(home, mustWork = FALSE), "<home>", x, fixed = TRUE)
      x <- gsub(home, "<home>", x, fixed = TRUE)
      gsub(endpoint, "http://127.0.0.1:PORT", x, fixed = TRUE)
    }
  )
}

read_hub_log <- function(log) {
  lines <- if (file.exists(log)) readLines(log, warn = FALSE) else character()
  rows <- lapply(lines, function(l) {
    e <- jsonlite::fromJSON(l, simplifyVector = FALSE)
    data.frame(
      server = e$server, method = e$method, path = e$path, range = e$range %||% NA_character_,
      auth = e$auth %||% NA_character_, status = e$status, sent = e$sent,
      stringsAsFactors = FALSE
    )
  })
  if (length(rows) == 0) {
    return(data.frame(
      server = character(), method = character(), path = character(), range = character(),
      auth = character(), status = integer(), sent = integer()
    ))
  }
  do.call(rbind, rows)
}

# The files of a cache folder, relative to it, with what each link points
# to (`a -> ../../blobs/x`).
cache_listing <- function(dir) {
  files <- list.files(dir, recursive = TRUE, all.files = TRUE, include.dirs = FALSE)
  vapply(files, function(f) {
    target <- Sys.readlink(file.path(dir, f))
    if (nzchar(target)) paste(f, "->", target) else f
  }, character(1), USE.NAMES = FALSE)
}

# Python with huggingface_hub, for the tests of the cache both ways.
hub_python <- function() {
  find_python("hub_python", "import huggingface_hub, filelock")
}

skip_without_hub_python <- function() {
  skip_on_cran()
  if (is.null(hub_python())) skip("Python with huggingface_hub is not available")
}
