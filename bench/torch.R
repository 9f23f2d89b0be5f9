# Copies and peak memory of the torch path, on one 1 GiB F32 tensor
# (16384 x 16384), for this package and (optionally) safetensors 0.2.x; and
# loading a 256 MiB checkpoint into a 256 MiB module (an embedding of
# 16384 x 2048 and eight linear layers of 2048 x 2048, F32) with
# safe_load_model(), against reading it with safe_load_file() and then
# load_state_dict().
#
#   Rscript bench/torch.R LIB [CRAN_LIB]
#
# LIB is a library holding this package (and torch, or torch on
# R_LIBS_USER); CRAN_LIB one holding safetensors 0.2.x instead (the module
# cases run only with LIB). Each case runs in a fresh R process: it builds
# its input, resets the peak RSS (/proc/self/clear_refs, Linux), runs the
# call, and reports the call's time, how far the peak RSS rose above the RSS
# just before it (MiB), and how much anonymous memory (RssAnon: not file
# pages a memory map brings in) it holds afterwards. A load must at least
# grow by the tensor (1024 MiB); anything above that is the copies the call
# keeps alive at once. The module cases build the module before the reset,
# so their peak is what the call adds to the module: safe_load_model() must
# stay within 64 MiB. Needs torch (with LibTorch) and about 6 GB of free
# memory. Saves to a path include fsync (safe_save_file()'s default, which
# 0.2.x did not do).
#
# Environment: BENCH_GROUPS, a comma-separated subset of "tensor" (the
# 1 GiB tensor) and "model" (the module), default both; BENCH_REPS, how many
# times each case runs (fresh processes, interleaved), default 1.

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
make_model <- quote({
  torch_manual_seed(1)
  net <- nn_module(initialize = function() {
    self$embed <- nn_embedding(16384, 2048)
    self$layers <- nn_module_list(lapply(1:8, function(i) nn_linear(2048, 2048)))
  })
  model <- net()
})
switch(Sys.getenv("BENCH_CASE"),
  save_path = measure(make, quote(safe_save_file(list(x = x), f))),
  save_path_t = measure(quote({x <- torch_randn(16384, 16384)$t()}), quote(safe_save_file(list(x = x), f))),
  torch_save = measure(make, quote(torch_save(x, f))),
  load_path = measure(quote(NULL), quote(y <- safe_load_file(f, framework = "torch"))),
  load_con = measure(quote(NULL), quote({con <- file(f, "rb"); y <- safe_load_file(con, framework = "torch"); close(con)})),
  torch_load = measure(quote(NULL), quote(y <- torch_load(f))),
  safetensors_new = measure(quote(NULL), quote({s <- safetensors$new(f, framework = "torch"); y <- s$get_tensor(s$keys()[[1]])})),
  model_save = measure(make_model, quote(safe_save_model(model, f))),
  model_load = measure(make_model, quote(safe_load_model(model, f))),
  model_load_read = measure(make_model, quote(safe_load_model(model, f, backend = "read"))),
  model_load_file = measure(make_model, quote(y <- safe_load_file(f, framework = "torch"))),
  model_state_dict = measure(make_model, quote(model$load_state_dict(safe_load_file(f, framework = "torch"))))
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
groups <- strsplit(Sys.getenv("BENCH_GROUPS", "tensor,model"), ",")[[1]]
reps <- as.integer(Sys.getenv("BENCH_REPS", "1"))
file <- tempfile(fileext = ".safetensors")
model_file <- tempfile(fileext = ".safetensors")
on.exit(unlink(c(file, model_file)))
res <- list()
for (rep in seq_len(reps)) {
  for (nm in names(libs)) {
    cases <- c(
      if ("tensor" %in% groups) c("save_path", "save_path_t", "torch_save", "load_path", "load_con", "torch_load", "safetensors_new"),
      # The module cases read the checkpoint model_save wrote.
      if ("model" %in% groups && nm == "ours") c("model_save", "model_load", "model_load_read", "model_load_file", "model_state_dict")
    )
    for (case in cases) {
      # Loads read the file the torch_save() case wrote with the same package.
      r <- run_case(case, libs[[nm]], if (startsWith(case, "model_")) model_file else file)
      r$package <- nm
      res[[length(res) + 1]] <- r
      print(r)
    }
  }
}
res <- do.call(rbind, res)
print(res, row.names = FALSE)
if (reps > 1) {
  cat("\nMedians of", reps, "runs:\n")
  print(aggregate(cbind(seconds, rss_mib, anon_after_mib) ~ package + case, res, stats::median), row.names = FALSE)
}
