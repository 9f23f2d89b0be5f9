# Helpers for tests of large files and tensors. The heavy ones (gigabytes of
# memory or disk) are opt-in: set SAFETENSORS_TEST_LARGE=true to run them.

skip_if_not_large <- function() {
  skip_on_cran()
  if (!identical(Sys.getenv("SAFETENSORS_TEST_LARGE"), "true")) {
    skip("large test: set SAFETENSORS_TEST_LARGE=true to run it")
  }
}

# Memory available to new allocations in GiB (Linux), Inf elsewhere.
available_gib <- function() {
  if (!file.exists("/proc/meminfo")) {
    return(Inf)
  }
  lines <- readLines("/proc/meminfo")
  kb <- function(field) {
    l <- grep(paste0("^", field, ":"), lines, value = TRUE)
    if (length(l) == 0) 0 else as.numeric(strsplit(trimws(sub(".*:", "", l)), " +")[[1]][[1]])
  }
  (kb("MemAvailable") + kb("SwapFree")) / 2^20
}

skip_if_memory_below <- function(gib) {
  if (available_gib() < gib) skip(sprintf("needs %g GiB of free memory", gib))
}

# Writes a file whose header is `json` and whose data section has `data_len`
# bytes: zeros, stored sparsely (no disk used) where the file system allows,
# except for `tail` bytes written at its very end. Returns the path.
local_sparse_file <- function(json, data_len, tail = raw(), env = parent.frame()) {
  path <- withr::local_tempfile(fileext = ".safetensors", .local_envir = env)
  hdr <- charToRaw(json)
  hdr <- c(hdr, rep(charToRaw(" "), (8 - length(hdr) %% 8) %% 8))
  con <- file(path, "wb")
  writeBin(c(u64_le(length(hdr)), hdr), con)
  close(con)
  total <- 8 + length(hdr) + data_len
  if (data_len > 0) {
    con <- file(path, "r+b")
    if (length(tail) > 0) {
      seek(con, total - length(tail), rw = "write")
      writeBin(tail, con)
    } else {
      seek(con, total - 1, rw = "write")
      writeBin(as.raw(0), con)
    }
    close(con)
  }
  stopifnot(file.size(path) == total)
  path
}

# Runs R `code` (a string) in a child process started by bash after
# `setup` (shell commands such as `ulimit -v`), and returns its output.
run_limited_r <- function(setup, code) {
  rscript <- file.path(R.home("bin"), "Rscript")
  script <- withr::local_tempfile(fileext = ".R")
  writeLines(c(sprintf(".libPaths(%s)", deparse1(.libPaths())), code), script)
  cmd <- sprintf("%s; exec %s --vanilla %s 2>&1", setup, shQuote(rscript), shQuote(script))
  suppressWarnings(system2("bash", c("-c", shQuote(cmd)), stdout = TRUE))
}
