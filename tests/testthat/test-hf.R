# Hugging Face Hub paths (R/hf.R): parsing, the settings read from the
# environment, the cache layout (read and written, and shared with Python's
# huggingface_hub both ways), resolution with the fewest requests, the
# origin record, and every error, against hub-server.py (helper-hub.R).

tiny_model <- function(seed = 1, rows = 8) {
  set.seed(seed)
  list(
    embed = matrix(rnorm(rows * 5), rows, 5),
    layer.weight = matrix(runif(25), 5, 5),
    layer.bias = rnorm(5),
    steps = 3L
  )
}

same_tensors <- function(x, y) {
  expect_identical(lapply(unclass(x)[names(y)], as.vector), lapply(y, as.vector))
}

# ---- paths --------------------------------------------------------------------

test_that("hf:// paths parse as huggingface_hub's file system writes them", {
  p <- hf_parse("hf://openai-community/gpt2/model.safetensors")
  expect_identical(p[c("type", "repo", "revision", "file", "folder")], list(
    type = "model", repo = "openai-community/gpt2", revision = NULL, file = "model.safetensors", folder = FALSE
  ))
  p <- hf_parse("hf://datasets/org/data@v1.0/sub/dir/w.safetensors")
  expect_identical(p[c("type", "repo", "revision", "file")], list(type = "dataset", repo = "org/data", revision = "v1.0", file = "sub/dir/w.safetensors"))
  p <- hf_parse("hf://spaces/org/app@main")
  expect_identical(p[c("type", "repo", "revision", "file", "folder")], list(type = "space", repo = "org/app", revision = "main", file = "", folder = TRUE))
  expect_identical(hf_parse("hf://models/o/n/unet")[c("type", "file", "folder")], list(type = "model", file = "unet", folder = TRUE))
  # Special refs keep their slashes; other revisions encode theirs.
  p <- hf_parse("hf://o/n@refs/pr/12/model.safetensors.index.json")
  expect_identical(p[c("revision", "file", "folder")], list(revision = "refs/pr/12", file = "model.safetensors.index.json", folder = FALSE))
  expect_identical(hf_parse("hf://o/n@refs/convert/parquet")$revision, "refs/convert/parquet")
  expect_identical(hf_parse("hf://o/n@feature%2Fx/a.safetensors")$revision, "feature/x")
  # An @ past the repository is part of a file name.
  p <- hf_parse("hf://o/n/weights@2.safetensors")
  expect_identical(p[c("revision", "file")], list(revision = NULL, file = "weights@2.safetensors"))
  expect_identical(hf_parse("hf://o/n/")$file, "")
  expect_true(hf_parse("hf://o/n/A.JSON")$folder == FALSE)

  for (bad in c(
    "hf://", "hf://gpt2", "hf://model/o/n", "hf://datasets", "hf://buckets/o/b/x", "hf://o/n@/x",
    "hf://o--x/n", "hf://o/n..x", "hf://-o/n", "hf://o/n.git", "hf://o/n/a//b", "hf://o/n/../x",
    "hf://o/n/./x", "hf://o/n@../x/y", "hf://o/n/C:/x", "hf://o/n/a\\b", "hf://o/n@a//b", paste0("hf://o/", strrep("n", 97)),
    "hf://o/n@v%zz/x"
  )) {
    expect_error(hf_parse(bad), class = "safetensors_error_invalid_argument", label = bad)
  }
  expect_snapshot(safe_info("hf://gpt2"), error = TRUE)
  # What each kind of malformed path is told.
  expect_snapshot({
    for (bad in c(
      "hf://", "hf://dataset/o/n/x.safetensors", "hf://buckets/o/b/x", "hf://o/n@/x", "hf://o--x/n",
      "hf://o/n/../x.safetensors", "hf://o/n@a//b"
    )) {
      cat(bad, ":", conditionMessage(tryCatch(hf_parse(bad, call = NULL), error = identity)), "\n", sep = "")
    }
  })
})

test_that("URLs and display paths are those of huggingface_hub", {
  withr::local_envvar(HF_ENDPOINT = "https://hub.example.org/")
  p <- hf_parse("hf://datasets/o/n/x")
  expect_identical(hf_url(p, "refs/pr/1", "a b/é.safetensors"), "https://hub.example.org/datasets/o/n/resolve/refs%2Fpr%2F1/a%20b/%C3%A9.safetensors")
  expect_identical(hf_path_of(p, "refs/pr/1", "x.json"), "hf://datasets/o/n@refs/pr/1/x.json")
  expect_identical(hf_path_of(p, "a/b", "x.json"), "hf://datasets/o/n@a%2Fb/x.json")
  expect_identical(hf_storage(p, "/c"), "/c/datasets--o--n")
  expect_identical(hf_storage(hf_parse("hf://o/n"), "/c"), "/c/models--o--n")
})

# ---- settings -------------------------------------------------------------------

test_that("the cache folder, offline mode and the endpoint come from the environment as in huggingface_hub", {
  withr::local_envvar(
    HF_HUB_CACHE = NA, HUGGINGFACE_HUB_CACHE = NA, HF_HOME = NA, XDG_CACHE_HOME = NA,
    HF_HUB_OFFLINE = NA, TRANSFORMERS_OFFLINE = NA, HF_ENDPOINT = NA
  )
  expect_identical(hf_cache_dir(), path.expand("~/.cache/huggingface/hub"))
  withr::local_envvar(XDG_CACHE_HOME = "/x")
  expect_identical(hf_cache_dir(), "/x/huggingface/hub")
  withr::local_envvar(HF_HOME = "~/hfhome")
  expect_identical(hf_cache_dir(), file.path(path.expand("~/hfhome"), "hub"))
  withr::local_envvar(HUGGINGFACE_HUB_CACHE = "/old")
  expect_identical(hf_cache_dir(), "/old")
  withr::local_envvar(HF_HUB_CACHE = "$SOMEWHERE/${OTHER}/$UNSET_VAR_X/c", SOMEWHERE = "/s", OTHER = "o", UNSET_VAR_X = NA)
  expect_identical(hf_cache_dir(), "/s/o/$UNSET_VAR_X/c")

  expect_false(hf_offline())
  for (v in c("1", "ON", "yes", "True")) {
    withr::local_envvar(HF_HUB_OFFLINE = v)
    expect_true(hf_offline(), label = v)
  }
  withr::local_envvar(HF_HUB_OFFLINE = "0")
  expect_false(hf_offline())
  withr::local_envvar(TRANSFORMERS_OFFLINE = "1")
  expect_true(hf_offline())

  expect_identical(hf_endpoint(), "https://huggingface.co")
  withr::local_envvar(HF_ENDPOINT = "https://mirror.example.org//")
  expect_identical(hf_endpoint(), "https://mirror.example.org")
})

test_that("the token comes from HF_TOKEN or the token file, and goes to the endpoint only", {
  home <- withr::local_tempdir()
  withr::local_envvar(
    HF_TOKEN = NA, HUGGING_FACE_HUB_TOKEN = NA, HF_TOKEN_PATH = NA, HF_HOME = home,
    HF_HUB_DISABLE_IMPLICIT_TOKEN = NA, HF_ENDPOINT = NA
  )
  expect_null(hf_token())
  writeLines("  hf_from_file\r", file.path(home, "token"))
  expect_identical(hf_token(), "hf_from_file")
  withr::local_envvar(HUGGING_FACE_HUB_TOKEN = "hf_old")
  expect_identical(hf_token(), "hf_old")
  withr::local_envvar(HF_TOKEN = "hf_env")
  expect_identical(hf_token(), "hf_env")
  expect_setequal(hf_token(all = TRUE), c("hf_env", "hf_old", "hf_from_file"))
  withr::local_envvar(HF_HUB_DISABLE_IMPLICIT_TOKEN = "1")
  expect_null(hf_token())
  withr::local_envvar(HF_HUB_DISABLE_IMPLICIT_TOKEN = NA, HF_TOKEN = NA, HUGGING_FACE_HUB_TOKEN = NA)
  other <- withr::local_tempfile()
  writeLines("hf_elsewhere", other)
  withr::local_envvar(HF_TOKEN_PATH = other)
  expect_identical(hf_token(), "hf_elsewhere")
  # Secrets from every source are scrubbed from messages.
  withr::local_envvar(HF_TOKEN = "hf_env_secret")
  expect_identical(http_scrub("a hf_env_secret b hf_elsewhere"), "a *** b ***")

  allowed <- function(url) hf_token_allowed(url_parse(url))
  expect_true(allowed("https://huggingface.co/o/n/resolve/main/x"))
  expect_true(allowed("https://hf.co/x"))
  expect_false(allowed("https://cdn-lfs.huggingface.co/x"))
  expect_false(allowed("https://huggingface.co:8443/x"))
  expect_false(allowed("http://huggingface.co/x"))
  withr::local_envvar(HF_ENDPOINT = "https://mirror.example.org")
  expect_true(allowed("https://mirror.example.org/o/n"))
  expect_false(allowed("http://mirror.example.org/o/n"))
  expect_false(allowed("https://mirror.example.org:444/o/n"))
  expect_false(allowed("https://cdn.example.org/o/n"))
  # Plain HTTP only to this machine (a test server).
  withr::local_envvar(HF_ENDPOINT = "http://mirror.example.org")
  expect_false(allowed("http://mirror.example.org/o/n"))
  withr::local_envvar(HF_ENDPOINT = "http://127.0.0.1:8080")
  expect_true(allowed("http://127.0.0.1:8080/o/n"))
  expect_false(allowed("http://127.0.0.1:8081/o/n"))
  withr::local_envvar(HF_ENDPOINT = "http://localhost:8080")
  expect_true(allowed("http://localhost:8080/o/n"))
})

test_that("saving to an hf:// path is an error, not a folder named hf:", {
  dir <- withr::local_tempdir()
  withr::local_dir(dir)
  expect_snapshot(safe_save_file(list(a = 1), "hf://o/n/model.safetensors"), error = TRUE)
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), character())
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed())
  expect_error(safe_save_model(torch::nn_linear(2, 2), "hf://o/n"), class = "safetensors_error_invalid_argument")
})

test_that("option safetensors.hf_cache is checked", {
  withr::local_options(safetensors.hf_cache = "yes")
  expect_error(hf_cache_option(NULL), class = "safetensors_error_invalid_argument")
  expect_snapshot(safe_load_file("hf://o/n/model.safetensors"), error = TRUE)
})

# ---- the cache, written and read ----------------------------------------------------

test_that("a whole load stores the file in the cache layout; the next load reads it with no request", {
  hub <- local_hub()
  x <- tiny_model()
  commit <- hub$commit("org/tiny", list("model.safetensors" = x, "config.json" = "{}"))
  got <- safe_load_file("hf://org/tiny/model.safetensors")
  same_tensors(got, x)
  log <- hub$log()
  # One HEAD for the commit and the file's metadata, the file from the CDN.
  expect_identical(log$method[[1]], "HEAD")
  expect_identical(log$server, c("hub", "cdn"))
  expect_identical(log$status, c(302L, 206L))
  storage <- file.path(hub$cache, "models--org--tiny")
  etag <- sub(".*/", "", sub("\\?.*$", "", log$path[[2]]))
  expect_identical(sort(cache_listing(storage)), sort(c(
    paste0("blobs/", etag),
    "refs/main",
    paste0("snapshots/", commit, "/model.safetensors -> ../../blobs/", etag)
  )))
  expect_identical(readLines(file.path(storage, "refs", "main"), warn = FALSE), commit)
  expect_true(file.exists(file.path(hub$cache, "CACHEDIR.TAG")))
  expect_true(file.exists(file.path(hub$cache, ".locks", "models--org--tiny", paste0(etag, ".lock"))))
  # The origin, recorded and printed.
  origin <- attr(got, "origin")
  expect_s3_class(origin, "safetensors_origin")
  expect_identical(origin[c("type", "repo", "revision", "commit", "file")], list(
    type = "model", repo = "org/tiny", revision = "main", commit = commit, file = "model.safetensors"
  ))
  expect_identical(normalizePath(origin$path), normalizePath(file.path(storage, "snapshots", commit, "model.safetensors")))
  expect_identical(format(origin), sprintf("hf://org/tiny@%s/model.safetensors", commit))
  expect_snapshot(print(origin), transform = hub$scrub)

  # Pinned to the commit: the cache alone.
  hub$clear()
  again <- safe_load_file(sprintf("hf://org/tiny@%s/model.safetensors", commit))
  expect_identical(nrow(hub$log()), 0L)
  same_tensors(again, x)
  expect_identical(format(attr(again, "origin")), sprintf("hf://org/tiny@%s/model.safetensors", commit))
  # A branch: one HEAD, then the cache.
  hub$clear()
  safe_load_file("hf://org/tiny/model.safetensors")
  expect_identical(hub$log()$method, "HEAD")
  # Offline: no request, the branch from refs/.
  withr::local_envvar(HF_HUB_OFFLINE = "1")
  hub$clear()
  same_tensors(safe_load_file("hf://org/tiny/model.safetensors"), x)
  expect_identical(nrow(hub$log()), 0L)
  expect_snapshot(print(safe_load_file(sprintf("hf://org/tiny@%s/model.safetensors", commit))), transform = hub$scrub)
})

test_that("lazy reads fetch ranges and store nothing; cached files are read locally", {
  hub <- local_hub()
  # Over 64 KiB, so that tensors are fetched when read.
  x <- tiny_model(rows = 2000)
  commit <- hub$commit("org/lazy", list("model.safetensors" = x))
  info <- safe_info("hf://org/lazy/model.safetensors")
  expect_identical(info$name, names(x))
  expect_false(dir.exists(hub$cache))
  expect_identical(hub$log()$method, c("HEAD", "GET", "GET"))
  expect_identical(hub$log()$server, c("hub", "hub", "cdn"))
  h <- safe_open("hf://org/lazy/model.safetensors")
  expect_identical(h$layer.bias, safe_load_file(safe_serialize(x))$layer.bias)
  expect_identical(as.vector(h$slice("embed")[2, 1:3]), x$embed[2, 1:3])
  expect_match(format(h)[[3]], "read over HTTP on demand")
  close(h)
  s <- safe_summary("hf://org/lazy/model.safetensors")
  expect_identical(s$origin$commit, commit)
  expect_identical(as.vector(safe_slice("hf://org/lazy/model.safetensors", "layer.bias", 2:3)), x$layer.bias[2:3])
  expect_identical(names(safe_load_file("hf://org/lazy/model.safetensors", tensors = "steps")), "steps")
  expect_false(dir.exists(hub$cache))
  expect_identical(safe_metadata("hf://org/lazy/model.safetensors"), NULL)
  st <- safetensors$new("hf://org/lazy/model.safetensors")
  expect_identical(as.vector(st$get_tensor("steps")), 3L)

  # Once cached: local (read as a local file is, by default with
  # positioned reads for R arrays), no request when pinned.
  safe_load_file("hf://org/lazy/model.safetensors")
  hub$clear()
  h <- safe_open(sprintf("hf://org/lazy@%s/model.safetensors", commit))
  expect_match(format(h)[[3]], "read on demand")
  # Wide enough that the cache path is shown whole (and scrubbed).
  expect_snapshot(print(h, width = 200), transform = hub$scrub)
  close(h)
  expect_snapshot(print(safe_info(sprintf("hf://org/lazy@%s/model.safetensors", commit))), transform = hub$scrub)
  expect_snapshot(print(safe_summary(sprintf("hf://org/lazy@%s/model.safetensors", commit))), transform = hub$scrub)
  expect_identical(nrow(hub$log()), 0L)
  # A handle given to safe_info() keeps its origin.
  h <- safe_open(sprintf("hf://org/lazy@%s/model.safetensors", commit))
  expect_identical(attr(safe_info(h), "origin")$commit, commit)
  close(h)
})

test_that("option safetensors.hf_cache = FALSE reads whole files over HTTP and stores nothing", {
  hub <- local_hub()
  x <- tiny_model()
  hub$commit("org/nocache", list("model.safetensors" = x))
  withr::local_options(safetensors.hf_cache = FALSE)
  got <- safe_load_file("hf://org/nocache/model.safetensors")
  same_tensors(got, x)
  expect_null(attr(got, "origin")$path)
  expect_false(dir.exists(hub$cache))
})

test_that("a branch that moved is followed; an old commit stays readable", {
  hub <- local_hub()
  old <- hub$commit("org/moving", list("model.safetensors" = tiny_model(1)))
  safe_load_file("hf://org/moving/model.safetensors")
  new <- hub$commit("org/moving", list("model.safetensors" = tiny_model(2)), tags = "v2")
  same_tensors(safe_load_file("hf://org/moving/model.safetensors"), tiny_model(2))
  storage <- file.path(hub$cache, "models--org--moving")
  expect_identical(readLines(file.path(storage, "refs", "main"), warn = FALSE), new)
  expect_length(list.files(file.path(storage, "blobs")), 2)
  same_tensors(safe_load_file("hf://org/moving@v2/model.safetensors"), tiny_model(2))
  expect_identical(readLines(file.path(storage, "refs", "v2"), warn = FALSE), new)
  hub$clear()
  same_tensors(safe_load_file(sprintf("hf://org/moving@%s/model.safetensors", old)), tiny_model(1))
  expect_identical(nrow(hub$log()), 0L)
})

test_that("the same blob in two commits is downloaded once", {
  hub <- local_hub()
  x <- tiny_model()
  a <- hub$commit("org/same", list("model.safetensors" = x))
  b <- hub$commit("org/same", list("model.safetensors" = x, "README.md" = "hi"))
  safe_load_file(sprintf("hf://org/same@%s/model.safetensors", a))
  hub$clear()
  safe_load_file(sprintf("hf://org/same@%s/model.safetensors", b))
  expect_identical(hub$log()$server, "hub")
  expect_true(file.exists(file.path(hub$cache, "models--org--same", "snapshots", b, "model.safetensors")))
})

test_that("folders read their checkpoint: a single file or a sharded index and its shards", {
  hub <- local_hub()
  x <- tiny_model()
  shards <- withr::local_tempdir()
  safe_save_file(x, shards, max_shard_size = 400)
  files <- list.files(shards)
  expect_gt(length(files), 2)
  sd <- setNames(file.path(shards, files), paste0("unet/", sub("^model", "diffusion_pytorch_model", files)))
  idx <- grep("index", names(sd), value = TRUE)
  # diffusers names: the index names its shards.
  text <- gsub("model-", "diffusion_pytorch_model-", readLines(sd[[idx]], warn = FALSE), fixed = TRUE)
  tmp <- withr::local_tempfile()
  writeLines(text, tmp)
  sd[[idx]] <- tmp
  commit <- hub$commit("org/pipe", c(as.list(sd), list("model.safetensors" = tiny_model(3), "text/a.safetensors" = list(a = 1), "text/b.safetensors" = list(b = 2))))

  got <- safe_load_file("hf://org/pipe/unet")
  same_tensors(got, x)
  expect_identical(attr(got, "origin")$file, "unet/diffusion_pytorch_model.safetensors.index.json")
  log <- hub$log()
  # One API request for the commit and the files, the index, then each shard.
  expect_identical(log$path[[1]], "/api/models/org/pipe/revision/main")
  expect_identical(sum(log$server == "cdn"), length(sd) - 1L)
  snap <- file.path(hub$cache, "models--org--pipe", "snapshots", commit)
  expect_setequal(list.files(file.path(snap, "unet")), sub("^unet/", "", names(sd)))
  # Now cached: pinned, no request; lazily too.
  hub$clear()
  same_tensors(safe_load_file(sprintf("hf://org/pipe@%s/unet", commit)), x)
  h <- safe_open(sprintf("hf://org/pipe@%s/unet", commit))
  expect_identical(h$layer.bias, got$layer.bias)
  close(h)
  expect_identical(nrow(hub$log()), 0L)
  # The repository's root: its model.safetensors.
  same_tensors(safe_load_file("hf://org/pipe"), tiny_model(3))
  same_tensors(safe_load_file("hf://org/pipe@main/"), tiny_model(3))
  # A folder with several files and no index, or none.
  expect_snapshot(safe_info("hf://org/pipe/text"), error = TRUE, transform = hub$scrub)
  expect_snapshot(safe_info("hf://org/pipe/nothing"), error = TRUE, transform = hub$scrub)
  # Lazily, uncached: the index and shards over HTTP, nothing stored.
  lazy <- local_hub()
  lazy_commit <- lazy$commit("org/pipe", as.list(sd))
  h <- safe_open("hf://org/pipe/unet")
  expect_identical(h$layer.bias, got$layer.bias)
  expect_match(format(h)[[3]], "shards, read over HTTP")
  close(h)
  expect_false(dir.exists(lazy$cache))
})

test_that("Hub errors are classed and say what to do", {
  hub <- local_hub()
  hub$commit("org/open", list("model.safetensors" = tiny_model()))
  hub$commit("org/gated", list("model.safetensors" = tiny_model()))
  hub$access("org/gated", gated = TRUE, tokens = "hf_granted")
  hub$commit("org/private", list("model.safetensors" = tiny_model()))
  hub$access("org/private", private = TRUE, tokens = "hf_granted")

  cnd <- expect_error(safe_load_file("hf://org/missing/model.safetensors"), class = "safetensors_error_repo_not_found")
  expect_identical(cnd$status, 401L)
  expect_identical(cnd$repo, "org/missing")
  expect_snapshot(safe_load_file("hf://org/missing/model.safetensors"), error = TRUE, transform = hub$scrub)
  expect_error(safe_info("hf://org/private/model.safetensors"), class = "safetensors_error_repo_not_found")
  expect_snapshot(safe_open("hf://org/gated/model.safetensors"), error = TRUE, transform = hub$scrub)
  cnd <- expect_error(safe_info("hf://org/gated"), class = "safetensors_error_gated")
  expect_identical(cnd$status, 401L)
  expect_snapshot(safe_info("hf://org/open@v9/model.safetensors"), error = TRUE, transform = hub$scrub)
  cnd <- expect_error(safe_info("hf://org/open@v9"), class = "safetensors_error_revision_not_found")
  expect_identical(cnd$revision, "v9")
  expect_snapshot(safe_info("hf://org/open/other.safetensors"), error = TRUE, transform = hub$scrub)

  # With a token: sent to the Hub, never to the CDN.
  withr::local_envvar(HF_TOKEN = "hf_wrong")
  hub$clear()
  cnd <- expect_error(safe_info("hf://org/gated/model.safetensors"), class = "safetensors_error_gated")
  expect_identical(cnd$status, 403L)
  expect_snapshot(safe_load_file("hf://org/gated/model.safetensors"), error = TRUE, transform = hub$scrub)
  expect_snapshot(safe_load_file("hf://org/private/model.safetensors"), error = TRUE, transform = hub$scrub)
  expect_identical(hub$log()$auth, rep("Bearer hf_wrong", 3))
  withr::local_envvar(HF_TOKEN = "hf_granted")
  hub$clear()
  same_tensors(safe_load_file("hf://org/gated/model.safetensors"), tiny_model())
  same_tensors(safe_load_file("hf://org/private/model.safetensors"), tiny_model())
  h <- safe_open("hf://org/private/model.safetensors", backend = "read")
  expect_identical(as.vector(h$steps), 3L)
  close(h)
  log <- hub$log()
  expect_true(all(log$auth[log$server == "hub"] == "Bearer hf_granted"))
  expect_true(all(is.na(log$auth[log$server == "cdn"])))
  # The token file does as well.
  withr::local_envvar(HF_TOKEN = NA)
  writeLines("hf_granted", file.path(hub$home, "token"))
  unlink(hub$cache, recursive = TRUE)
  same_tensors(safe_load_file("hf://org/gated/model.safetensors"), tiny_model())
})

test_that("a missing file is remembered as huggingface_hub does, and read offline", {
  hub <- local_hub()
  commit <- hub$commit("org/m", list("model.safetensors" = tiny_model()))
  expect_error(safe_load_file("hf://org/m/nope.safetensors"), class = "safetensors_error_file_not_found")
  expect_true(file.exists(file.path(hub$cache, "models--org--m", ".no_exist", commit, "nope.safetensors")))
  hub$clear()
  cnd <- expect_error(safe_info(sprintf("hf://org/m@%s/nope.safetensors", commit)), class = "safetensors_error_file_not_found")
  expect_identical(nrow(hub$log()), 0L)
  expect_identical(cnd$file, "nope.safetensors")
  withr::local_envvar(HF_HUB_OFFLINE = "1")
  expect_error(safe_info("hf://org/m/nope.safetensors"), class = "safetensors_error_file_not_found")
})

test_that("offline without a cached copy is a classed error; with one, no request", {
  hub <- local_hub()
  hub$commit("org/off", list("model.safetensors" = tiny_model()))
  withr::local_envvar(HF_HUB_OFFLINE = "1")
  cnd <- expect_error(safe_load_file("hf://org/off/model.safetensors"), class = "safetensors_error_offline")
  expect_identical(cnd$repo, "org/off")
  expect_snapshot(safe_load_file("hf://org/off/model.safetensors"), error = TRUE, transform = hub$scrub)
  expect_snapshot(safe_open("hf://org/off@v1"), error = TRUE, transform = hub$scrub)
  expect_identical(nrow(hub$log()), 0L)
})

test_that("a Hub that can't be reached falls back to the cache for a branch", {
  hub <- local_hub()
  commit <- hub$commit("org/down", list("model.safetensors" = tiny_model(), "b.safetensors" = tiny_model(2)))
  safe_load_file("hf://org/down/model.safetensors")
  hub$modes(hub_status = 503)
  hub$clear()
  got <- safe_load_file("hf://org/down/model.safetensors")
  same_tensors(got, tiny_model())
  expect_identical(attr(got, "origin")$commit, commit)
  # Asked once, without retries, since the cache had an answer.
  expect_identical(hub$log()$status, 503L)
  # Not cached: retried, then the HTTP error.
  withr::local_options(safetensors.http_retries = 1)
  cnd <- expect_error(safe_load_file("hf://org/down/other.safetensors"), class = "safetensors_error_http")
  expect_identical(cnd$status, 503L)
  # A server that is not a Hub, or not quite.
  hub$modes(hub_no_commit = TRUE)
  expect_snapshot(safe_info("hf://org/down/model.safetensors"), error = TRUE, transform = hub$scrub)
  hub$modes(hub_no_etag = TRUE)
  expect_snapshot(safe_load_file("hf://org/down/b.safetensors"), error = TRUE, transform = hub$scrub)
  hub$modes(api_garbage = TRUE)
  expect_snapshot(safe_info("hf://org/down"), error = TRUE, transform = hub$scrub)
  # No server at all: retried, then an error that says how to read the
  # cache alone.
  hub$modes()
  withr::local_envvar(HF_ENDPOINT = "http://127.0.0.1:1")
  withr::local_options(safetensors.http_retries = 0)
  expect_snapshot(
    safe_info("hf://org/down/b.safetensors"),
    error = TRUE, transform = function(x) gsub("after [0-9]+ ms", "after N ms", x)
  )
})

test_that("datasets and spaces have their own URLs and cache folders", {
  hub <- local_hub()
  x <- tiny_model()
  hub$commit("org/d", list("data/w.safetensors" = x), type = "dataset")
  same_tensors(safe_load_file("hf://datasets/org/d/data/w.safetensors"), x)
  expect_match(hub$log()$path[[1]], "^/datasets/org/d/resolve/main/data/w.safetensors")
  expect_true(dir.exists(file.path(hub$cache, "datasets--org--d", "snapshots")))
  expect_error(safe_info("hf://org/d/data/w.safetensors"), class = "safetensors_error_repo_not_found")
})

test_that("without symbolic links the snapshot holds the file itself", {
  hub <- local_hub()
  withr::local_envvar(HF_HUB_DISABLE_SYMLINKS = "1")
  commit <- hub$commit("org/nolink", list("model.safetensors" = tiny_model()))
  safe_load_file("hf://org/nolink/model.safetensors")
  snap <- file.path(hub$cache, "models--org--nolink", "snapshots", commit, "model.safetensors")
  expect_identical(Sys.readlink(snap), "")
  same_tensors(safe_load_file(snap), tiny_model())
})

# ---- torch -------------------------------------------------------------------------

test_that("safe_load_model() reads hf:// checkpoints through the cache", {
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed())
  hub <- local_hub()
  net <- torch::nn_linear(4, 3)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_model(net, path)
  commit <- hub$commit("org/net", list("model.safetensors" = path))
  model <- torch::nn_linear(4, 3)
  res <- safe_load_model(model, "hf://org/net")
  expect_true(torch::torch_equal(model$weight, net$weight))
  expect_identical(attr(res, "origin")$commit, commit)
  hub$clear()
  model2 <- torch::nn_linear(4, 3)
  safe_load_model(model2, sprintf("hf://org/net@%s", commit))
  expect_true(torch::torch_equal(model2$bias, net$bias))
  expect_identical(nrow(hub$log()), 0L)
})

# ---- Python's huggingface_hub ----------------------------------------------------------

test_that("R reads what huggingface_hub stored, with no request when pinned", {
  skip_without_hub_python()
  hub <- local_hub()
  x <- tiny_model()
  commit <- hub$commit("org/py", list("model.safetensors" = x, "config.json" = "{\"a\": 1}"))
  out <- run_python(c(
    "import os, sys",
    "os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'",
    "from huggingface_hub import hf_hub_download",
    "print(hf_hub_download('org/py', 'model.safetensors'))"
  ), exe = hub_python())
  expect_match(out[[length(out)]], commit, fixed = TRUE)
  hub$clear()
  same_tensors(safe_load_file(sprintf("hf://org/py@%s/model.safetensors", commit)), x)
  same_tensors(safe_load_file("hf://org/py/model.safetensors"), x)
  # The branch: one HEAD; the file came from Python's cache.
  expect_identical(hub$log()$method, "HEAD")
  h <- safe_open("hf://org/py/model.safetensors")
  expect_match(format(h)[[3]], "read on demand")
  close(h)
})

test_that("huggingface_hub finds what R stored", {
  skip_without_hub_python()
  hub <- local_hub()
  x <- tiny_model()
  shards <- withr::local_tempdir()
  safe_save_file(x, shards, max_shard_size = 400)
  files <- setNames(as.list(file.path(shards, list.files(shards))), list.files(shards))
  commit <- hub$commit("org/fromr", c(files, list("single.safetensors" = x)))
  safe_load_file("hf://org/fromr/single.safetensors")
  safe_load_file("hf://org/fromr")
  hub$clear()
  out <- run_python(c(
    "import os, sys",
    "from huggingface_hub import try_to_load_from_cache, hf_hub_download, scan_cache_dir",
    "commit = sys.argv[1]",
    "for f in sys.argv[2:]:",
    "    for rev in ('main', commit):",
    "        p = try_to_load_from_cache('org/fromr', f, revision=rev)",
    "        q = hf_hub_download('org/fromr', f, revision=rev, local_files_only=True)",
    "        assert isinstance(p, str) and p == q, (f, rev, p, q)",
    "        print(os.path.getsize(p))",
    "info = scan_cache_dir()",
    "print(len(info.warnings), len(info.repos), [r.repo_id for r in info.repos])",
    "repo = list(info.repos)[0]",
    "print(sorted(f.file_name for rev in repo.revisions for f in rev.files))"
  ), c(commit, "single.safetensors", names(files)), exe = hub_python())
  sizes <- as.numeric(out[seq_len(2 * (length(files) + 1))])
  served <- file.path(hub$root, "models/org/fromr/commits", commit, c("single.safetensors", names(files)))
  expect_identical(sizes, rep(as.numeric(file.size(served)), each = 2))
  expect_identical(out[[length(out) - 1]], "0 1 ['org/fromr']")
  # Python asks nothing about the files (it may fetch a registry of its
  # own, /api/agent-harnesses, to describe itself in its user agent).
  log <- hub$log()
  expect_identical(sum(!startsWith(log$path, "/api/agent-harnesses")), 0L)
})

test_that("R and Python take the same lock on a blob", {
  skip_without_hub_python()
  hub <- local_hub()
  commit <- hub$commit("org/lock", list("model.safetensors" = tiny_model()))
  meta <- hf_meta(hf_parse("hf://org/lock/model.safetensors"), "main", "model.safetensors", TRUE, NULL)
  lock <- file.path(hub$cache, ".locks", "models--org--lock", paste0(meta$etag, ".lock"))
  dir.create(dirname(lock), recursive = TRUE)
  ready <- withr::local_tempfile()
  script <- withr::local_tempfile(fileext = ".py")
  writeLines(c(
    "import sys, time",
    "from filelock import FileLock",
    "with FileLock(sys.argv[1]):",
    "    open(sys.argv[2], 'w').close()",
    "    time.sleep(2.5)"
  ), script)
  p <- withr::with_envvar(c(LD_LIBRARY_PATH = NA), processx::process$new(hub_python(), c(script, lock, ready)))
  withr::defer(if (p$is_alive()) p$kill())
  deadline <- Sys.time() + 10
  while (!file.exists(ready) && Sys.time() < deadline) Sys.sleep(0.05)
  expect_true(file.exists(ready))
  t0 <- Sys.time()
  # R waits for the lock, and says so after two seconds.
  expect_snapshot(got <- safe_load_file("hf://org/lock/model.safetensors"), transform = hub$scrub)
  expect_gt(as.numeric(Sys.time() - t0, units = "secs"), 1.5)
  same_tensors(got, tiny_model())
  p$wait(5000)
})
