# Downloads into the Hugging Face Hub cache (issue 26), against a plain
# `curl` of the same URL, in one script:
#
#   Rscript bench/hub.R [LIBRARY] [MiB]
#
# Needs a release build of safetensors (DEBUG=false tools/dev-install.sh
# LIB), the curl command, and Python 3 to run tests/testthat/hub-server.py,
# the test suite's Hub (the Hub on 127.0.0.1 and a CDN on another port that
# serves files by sendfile). Writes a file of MiB mebibytes (256 by
# default) of U8 values and a Hub cache in tempdir(), and deletes them.
#
# Cases, each the median of `reps` runs after one warm-up run (min..max in
# brackets), in rounds that alternate between them:
#   curl -o FILE          the CDN URL the download fetches, to a file
#   curl -o /dev/null     the same, writing nothing
#   download, 1 range     safe_load_file("hf://...", framework = "raw") into
#                         an empty cache with one connection, minus the
#                         same load from the cache: the download alone
#   download, 4 ranges    the same with four connections (the default)
#   cached load           safe_load_file() of the pinned hf:// path, from
#                         the cache (no request)
#   URL load              safe_load_file() of the CDN URL, streamed into
#                         memory (no cache), as in 0.4.0

args <- commandArgs(trailingOnly = TRUE)
if (length(args) >= 1 && nzchar(args[[1]])) .libPaths(c(args[[1]], .libPaths()))
mib <- if (length(args) >= 2) as.numeric(args[[2]]) else 256
library(safetensors)
reps <- 7L

root <- file.path(tempdir(), "bench-hub")
cache <- file.path(tempdir(), "bench-hub-cache")
unlink(c(root, cache), recursive = TRUE)
on.exit(unlink(c(root, cache), recursive = TRUE), add = TRUE)
commit <- strrep("ab", 20)
dir <- file.path(root, "models", "bench", "model", "commits", commit)
dir.create(dir, recursive = TRUE)
set.seed(1)
safe_save_file(
  list(w = array(as.raw(sample(0:255, mib * 2^20, replace = TRUE)), c(mib, 2^20))),
  file.path(dir, "model.safetensors")
)
writeLines(sprintf('{"main": "%s"}', commit), file.path(root, "models", "bench", "model", "refs.json"))

script <- if (file.exists("tests/testthat/hub-server.py")) "tests/testthat/hub-server.py" else {
  stop("Run from the package's source folder (tests/testthat/hub-server.py).")
}
log <- tempfile(fileext = ".jsonl")
server <- processx::process$new(Sys.which("python3"), c(script, root, log), stdin = "|", stdout = "|", stderr = "|")
on.exit(server$kill(), add = TRUE)
line <- character()
deadline <- Sys.time() + 10
while (length(line) == 0 && Sys.time() < deadline) {
  invisible(server$poll_io(200))
  line <- server$read_output_lines()
}
ports <- as.integer(strsplit(line[[1]], " ")[[1]])
Sys.setenv(HF_ENDPOINT = sprintf("http://127.0.0.1:%d", ports[[1]]), HF_HUB_CACHE = cache, HF_TOKEN = "")
path <- "hf://bench/model/model.safetensors"
pinned <- sprintf("hf://bench/model@%s/model.safetensors", commit)
head <- curl::curl_fetch_memory(
  sprintf("%s/bench/model/resolve/main/model.safetensors", Sys.getenv("HF_ENDPOINT")),
  handle = curl::new_handle(nobody = TRUE, followlocation = FALSE)
)
cdn <- curl::parse_headers_list(head$headers)$location
out <- tempfile()

elapsed <- function(f) {
  gc()
  t0 <- proc.time()[["elapsed"]]
  f()
  proc.time()[["elapsed"]] - t0
}
cold <- function(connections) {
  function() {
    unlink(cache, recursive = TRUE)
    old <- options(safetensors.http_connections = connections)
    on.exit(options(old))
    t <- elapsed(function() safe_load_file(path, framework = "raw"))
    t - elapsed(function() safe_load_file(pinned, framework = "raw"))
  }
}
cases <- list(
  "curl -o FILE" = function() elapsed(function() {
    unlink(out)
    system2("curl", c("-s", "-o", out, shQuote(cdn)))
  }),
  "curl -o /dev/null" = function() elapsed(function() system2("curl", c("-s", "-o", "/dev/null", shQuote(cdn)))),
  "download, 1 range" = cold(1),
  "download, 4 ranges" = cold(4),
  "cached load (pinned, no request)" = function() elapsed(function() safe_load_file(pinned, framework = "raw")),
  "URL load (streamed, no cache)" = function() elapsed(function() safe_load_file(cdn, framework = "raw"))
)
times <- lapply(cases, function(f) numeric())
for (r in 0:reps) {
  for (name in names(cases)) {
    t <- cases[[name]]()
    if (r > 0) times[[name]] <- c(times[[name]], t)
  }
}
unlink(out)
cat(sprintf("%s MiB file, %d runs each (median, min..max):\n", format(mib), reps))
for (name in names(times)) {
  t <- times[[name]]
  cat(sprintf("  %-34s %6.3f s  (%.3f..%.3f)  %5.2f GB/s\n", name, median(t), min(t), max(t), mib * 2^20 / median(t) / 1e9))
}
