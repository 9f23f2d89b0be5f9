# Copies and peak memory of the torch path, on one 1 GiB F32 tensor
# (16384 x 16384), for this package and (optionally) safetensors 0.2.x.
#
#   Rscript bench/torch.R LIB [CRAN_LIB]
#
# LIB is a library holding this package (and torch, or torch on
# R_LIBS_USER); CRAN_LIB one holding safetensors 0.2.x instead. Each case
# runs in a fresh R process: it builds its input, resets the peak RSS
# (/proc/self/clear_refs, Linux), runs the call, and reports the call's time,
# how far the peak RSS rose above the RSS just before it (MiB), and how much
# anonymous memory (RssAnon: not file pages a memory map brings in) it holds
# afterwards. A load must at least grow by the tensor (1024 MiB); anything
# above that is the copies the call keeps alive at once. Needs torch (with
# LibTorch) and about 6 GB of free memory. Saves to a path include fsync
# (safe_save_file()'s default, which 0.2.x did not do).

args <- commandArgs(trailingOnly = TRUE)
if (length(args) == 0) {
  stop("usage: Rscript bench/torch.R LIB [CRAN_LIB]")
}

case_code <- '
rss <- function(field) {
  line <- grep(paste0("^", field, ":"), readLines("/proc/self/status"), value = TRUE)
  as.numeric(strsplit(trimws(sub(".*:", "", line)), " +")[[1]][1]) / 1024
}
measure <- function(setup, run) {
  env <- new.env()
  eval(setup, env)
  invisible(gc(full = TRUE))
  writeLines("5", "/proc/self/clear_refs")
  before <- rss("VmRSS")
  anon <- rss("RssAnon")
  t <- system.time(eval(run, env))[["elapsed"]]
  cat(sprintf("%.2f\\t%.0f\\t%.0f\\n", t, rss("VmHWM") - before, rss("RssAnon") - anon))
}
suppressPackageStartupMessages({ library(torch); library(safetensors) })
f <- Sys.getenv("BENCH_FILE")
make <- quote(x <- torch_randn(16384, 16384))
switch(Sys.getenv("BENCH_CASE"),
  save_path = measure(make, quote(safe_save_file(list(x = x), f))),
  save_path_t = measure(quote({x <- torch_randn(16384, 16384)$t()}), quote(safe_save_file(list(x = x), f))),
  torch_save = measure(make, quote(torch_save(x, f))),
  load_path = measure(quote(NULL), quote(y <- safe_load_file(f, framework = "torch"))),
  load_con = measure(quote(NULL), quote({con <- file(f, "rb"); y <- safe_load_file(con, framework = "torch"); close(con)})),
  torch_load = measure(quote(NULL), quote(y <- torch_load(f))),
  safetensors_new = measure(quote(NULL), quote({s <- safetensors$new(f, framework = "torch"); y <- s$get_tensor(s$keys()[[1]])}))
)
'

run_case <- function(case, lib, file) {
  env <- c(
    paste0("R_LIBS=", lib), paste0("BENCH_CASE=", case), paste0("BENCH_FILE=", file)
  )
  out <- system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(case_code)),
    env = env, stdout = TRUE, stderr = FALSE
  )
  v <- strsplit(utils::tail(out, 1), "\t")[[1]]
  data.frame(case = case, seconds = as.numeric(v[[1]]), rss_mib = as.numeric(v[[2]]), anon_after_mib = as.numeric(v[[3]]))
}

libs <- c(ours = args[[1]], cran = if (length(args) > 1) args[[2]])
file <- tempfile(fileext = ".safetensors")
on.exit(unlink(file))
res <- list()
for (nm in names(libs)) {
  for (case in c("save_path", "save_path_t", "torch_save", "load_path", "load_con", "torch_load", "safetensors_new")) {
    # Loads read the file the torch_save() case wrote with the same package.
    r <- run_case(case, libs[[nm]], file)
    r$package <- nm
    res[[length(res) + 1]] <- r
    print(r)
  }
}
print(do.call(rbind, res), row.names = FALSE)
