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
# just before it (MiB), how much anonymous memory (RssAnon: not file
# pages a memory map brings in) it holds afterwards, and its CPU time (user
# and system), which varies less than the elapsed time where the disk sets
# the pace. A load must at least
# grow by the tensor (1024 MiB); anything above that is the copies the call
# keeps alive at once. The module cases build the module before the reset,
# so their peak is what the call adds to the module: safe_load_model() must
# stay within 64 MiB. Needs torch (with LibTorch) and about 6 GB of free
# memory. Saves to a path include fsync (safe_save_file()'s default, which
# 0.2.x did not do).
#
# Group "set" (issue 13) saves sixteen F32 tensors of 4096 x 4096 (1 GiB)
# with safe_save_file(), with and without fsync, against Python's
# safetensors.torch.save_file() on the same tensors, without and with an
# os.fsync() of the file, each in a fresh process built the same way (the
# tensors exist before the peak RSS is reset). It needs a Python with torch
# and safetensors: BENCH_PYTHON, else TORCH_PY (what build-r-torch.sh's
# env.sh sets), else python3. The ratios printed compare like with like:
# ours without fsync against Python's save_file(), ours with fsync against
# save_file() followed by fsync.
#
# Group "surgery" (issue 24) loads a checkpoint laid out as Hugging Face's
# GPT-2 stores it (names under "model.", the weights of linear layers
# stored transposed, as Conv1D keeps them) into an R module with its own
# names, with safe_load_model(rename =, transform =): a transform that
# returns a view (`x$t()`), one that makes a new tensor
# (`x$t()$contiguous()`), and, as references, safe_load_model() of the
# same weights saved in the module's own names and layout, and the route
# without `rename` and `transform` (safe_load_file(), names and
# transposes changed in R, then load_state_dict()); and Python doing the
# same as transformers users write it (py_surgery_view, py_surgery_copy:
# load_file(), renamed, `.t()` or `.t().contiguous()`, load_state_dict(),
# which needs TORCH_PY or BENCH_PYTHON). The module is
# an embedding of 16384 x D and LAYERS blocks of four linear layers (D x
# 3D, D x D, D x 4D, 4D x D) without biases, F32: with the defaults (D =
# 4096, LAYERS = 5) 4 GiB, whose largest tensor is 256 MiB. A load with
# transforms may add to the module at most 64 MiB and the largest
# transformed tensor (its staging copy), and a transform that copies, that
# tensor again. Needs about 2.5 times the checkpoint in free memory, and
# twice it on disk in the temporary folder.
#
# Environment: BENCH_GROUPS, a comma-separated subset of "tensor" (the
# 1 GiB tensor), "model" (the module), "set" (the 16-tensor save) and
# "surgery" (rename and transform), default the first three; BENCH_REPS,
# how many times each case runs (fresh processes, interleaved), default 1;
# BENCH_SURGERY_D and BENCH_SURGERY_LAYERS, the size of the "surgery"
# module (default 4096 and 5; 512 and 2 make a quick check).

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
  t <- system.time(eval(run, env))
  cat(sprintf("%.2f\\t%.0f\\t%.0f\\t%.2f\\n", t[["elapsed"]], rss("VmHWM") - before, rss("RssAnon") - anon,
    t[["user.self"]] + t[["sys.self"]]))
}
suppressPackageStartupMessages({ library(torch); library(safetensors) })
f <- Sys.getenv("BENCH_FILE")
make <- quote(x <- torch_randn(16384, 16384))
make_set <- quote(x <- setNames(lapply(1:16, function(i) torch_randn(4096, 4096)), sprintf("t%02d", 1:16)))
make_model <- quote({
  torch_manual_seed(1)
  net <- nn_module(initialize = function() {
    self$embed <- nn_embedding(16384, 2048)
    self$layers <- nn_module_list(lapply(1:8, function(i) nn_linear(2048, 2048)))
  })
  model <- net()
})
make_surgery <- quote({
  d <- as.integer(Sys.getenv("BENCH_SURGERY_D", "4096"))
  layers <- as.integer(Sys.getenv("BENCH_SURGERY_LAYERS", "5"))
  block <- nn_module(initialize = function(d) {
    self$attn <- nn_linear(d, 3 * d, bias = FALSE)
    self$proj <- nn_linear(d, d, bias = FALSE)
    self$up <- nn_linear(d, 4 * d, bias = FALSE)
    self$down <- nn_linear(4 * d, d, bias = FALSE)
  })
  net <- nn_module(initialize = function() {
    self$wte <- nn_embedding(16384, d)
    self$h <- nn_module_list(lapply(seq_len(layers), function(i) block(d)))
  })
  model <- with_no_grad(net())
})
surgery_rename <- c("^model\\\\." = "", "\\\\.c_attn\\\\." = ".attn.", "\\\\.c_proj\\\\." = ".proj.", "\\\\.c_fc\\\\." = ".up.", "\\\\.mlp_proj\\\\." = ".down.")
# The two checkpoints of the "surgery" cases: BENCH_FILE with the names
# and layout of the module, BENCH_FILE2 with those of Hugging Face.
surgery_write <- quote({
  state <- model$state_dict()
  safe_save_file(state, f, sync = FALSE)
  hf <- c(attn = "c_attn", proj = "c_proj", up = "c_fc", down = "mlp_proj")
  nms <- names(state)
  for (k in names(hf)) nms <- sub(paste0("\\\\.", k, "\\\\."), paste0(".", hf[[k]], "."), nms)
  out <- lapply(names(state), function(n) if (n == "wte.weight") state[[n]] else state[[n]]$t())
  safe_save_file(setNames(out, paste0("model.", nms)), Sys.getenv("BENCH_FILE2"), sync = FALSE)
})
switch(Sys.getenv("BENCH_CASE"),
  save_path = measure(make, quote(safe_save_file(list(x = x), f))),
  save_path_t = measure(quote({x <- torch_randn(16384, 16384)$t()}), quote(safe_save_file(list(x = x), f))),
  torch_save = measure(make, quote(torch_save(x, f))),
  load_path = measure(quote(NULL), quote(y <- safe_load_file(f, framework = "torch"))),
  load_con = measure(quote(NULL), quote({con <- file(f, "rb"); y <- safe_load_file(con, framework = "torch"); close(con)})),
  torch_load = measure(quote(NULL), quote(y <- torch_load(f))),
  safetensors_new = measure(quote(NULL), quote({s <- safetensors$new(f, framework = "torch"); y <- s$get_tensor(s$keys()[[1]])})),
  set_save = measure(make_set, quote(safe_save_file(x, f))),
  set_save_nosync = measure(make_set, quote(safe_save_file(x, f, sync = FALSE))),
  model_save = measure(make_model, quote(safe_save_model(model, f))),
  model_load = measure(make_model, quote(safe_load_model(model, f))),
  model_load_read = measure(make_model, quote(safe_load_model(model, f, backend = "read"))),
  model_load_file = measure(make_model, quote(y <- safe_load_file(f, framework = "torch"))),
  model_state_dict = measure(make_model, quote(model$load_state_dict(safe_load_file(f, framework = "torch")))),
  surgery_write = measure(make_surgery, surgery_write),
  surgery_plain = measure(make_surgery, quote(safe_load_model(model, f))),
  surgery_view = measure(make_surgery, quote(safe_load_model(model, Sys.getenv("BENCH_FILE2"),
    rename = surgery_rename, transform = list("\\\\.(attn|proj|up|down)\\\\.weight$" = function(x) x$t())))),
  surgery_route = measure(make_surgery, quote({
    state <- safe_load_file(Sys.getenv("BENCH_FILE2"), framework = "torch")
    for (k in seq_along(surgery_rename)) names(state) <- gsub(names(surgery_rename)[[k]], surgery_rename[[k]], names(state))
    for (n in grep("weight$", names(state), value = TRUE)) if (n != "wte.weight") state[[n]] <- state[[n]]$t()
    model$load_state_dict(state)
  })),
  surgery_copy = measure(make_surgery, quote(safe_load_model(model, Sys.getenv("BENCH_FILE2"),
    rename = surgery_rename, transform = list("\\\\.(attn|proj|up|down)\\\\.weight$" = function(x) x$t()$contiguous()))))
)
'

# The same measurement in Python, for the "set" group.
py_code <- '
import gc, os, sys, time, torch
from safetensors.torch import save_file
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
f = os.environ["BENCH_FILE"]
x = {"t%02d" % i: torch.randn(4096, 4096) for i in range(1, 17)}
gc.collect()
open("/proc/self/clear_refs", "w").write("5")
before, anon = rss("VmRSS"), rss("RssAnon")
t, cpu = time.perf_counter(), time.process_time()
save_file(x, f)
if os.environ["BENCH_CASE"] == "py_save_fsync":
    fd = os.open(f, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
t, cpu = time.perf_counter() - t, time.process_time() - cpu
print("%.2f\t%.0f\t%.0f\t%.2f" % (t, rss("VmHWM") - before, rss("RssAnon") - anon, cpu))
'

# The "surgery" loads in Python, as transformers users write them:
# load_file() of the Hugging Face layout, names renamed, the linear weights
# transposed (a view, or a contiguous copy), then load_state_dict() into
# the same module.
py_surgery_code <- '
import gc, os, re, time, torch
from safetensors.torch import load_file
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
d, layers = int(os.environ["BENCH_SURGERY_D"]), int(os.environ["BENCH_SURGERY_LAYERS"])
class Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = torch.nn.Linear(d, 3 * d, bias=False)
        self.proj = torch.nn.Linear(d, d, bias=False)
        self.up = torch.nn.Linear(d, 4 * d, bias=False)
        self.down = torch.nn.Linear(4 * d, d, bias=False)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(16384, d)
        self.h = torch.nn.ModuleList([Block(d) for _ in range(layers)])
with torch.no_grad():
    model = Net()
rename = [(r"^model\\.", ""), (r"\\.c_attn\\.", ".attn."), (r"\\.c_proj\\.", ".proj."), (r"\\.c_fc\\.", ".up."), (r"\\.mlp_proj\\.", ".down.")]
copy = os.environ["BENCH_CASE"] == "py_surgery_copy"
gc.collect()
open("/proc/self/clear_refs", "w").write("5")
before, anon = rss("VmRSS"), rss("RssAnon")
t, cpu = time.perf_counter(), time.process_time()
state = {}
for k, v in load_file(os.environ["BENCH_FILE2"]).items():
    for a, b in rename:
        k = re.sub(a, b, k)
    if re.search(r"\\.(attn|proj|up|down)\\.weight$", k):
        v = v.t().contiguous() if copy else v.t()
    state[k] = v
model.load_state_dict(state)
del state
gc.collect()
t, cpu = time.perf_counter() - t, time.process_time() - cpu
print("%.2f\t%.0f\t%.0f\t%.2f" % (t, rss("VmHWM") - before, rss("RssAnon") - anon, cpu))
'

run_py_surgery <- function(case, file2) {
  python <- Sys.getenv("BENCH_PYTHON", Sys.getenv("TORCH_PY", "python3"))
  out <- system2(python, c("-c", shQuote(py_surgery_code)),
    env = c(
      paste0("BENCH_CASE=", case), paste0("BENCH_FILE2=", file2),
      paste0("BENCH_SURGERY_D=", Sys.getenv("BENCH_SURGERY_D", "4096")),
      paste0("BENCH_SURGERY_LAYERS=", Sys.getenv("BENCH_SURGERY_LAYERS", "5"))
    ),
    stdout = TRUE, stderr = FALSE
  )
  v <- strsplit(utils::tail(out, 1), "\t")[[1]]
  data.frame(
    case = case, seconds = as.numeric(v[[1]]), rss_mib = as.numeric(v[[2]]), anon_after_mib = as.numeric(v[[3]]),
    cpu_seconds = as.numeric(v[[4]])
  )
}

# Each case starts with no dirty pages: the files the cases before it wrote
# are flushed (outside the timing), and the one it writes is gone.
settle <- function(file) {
  unlink(file)
  system2("sync")
}

run_py_case <- function(case, file) {
  settle(file)
  python <- Sys.getenv("BENCH_PYTHON", Sys.getenv("TORCH_PY", "python3"))
  out <- system2(python, c("-c", shQuote(py_code)),
    env = c(paste0("BENCH_CASE=", case), paste0("BENCH_FILE=", file)), stdout = TRUE, stderr = FALSE
  )
  v <- strsplit(utils::tail(out, 1), "\t")[[1]]
  data.frame(
    case = case, seconds = as.numeric(v[[1]]), rss_mib = as.numeric(v[[2]]), anon_after_mib = as.numeric(v[[3]]),
    cpu_seconds = as.numeric(v[[4]])
  )
}

run_case <- function(case, lib, file, file2 = "") {
  if (grepl("save", case)) settle(file)
  env <- c(
    paste0("R_LIBS=", lib), paste0("BENCH_CASE=", case), paste0("BENCH_FILE=", file), paste0("BENCH_FILE2=", file2),
    paste0("BENCH_SURGERY_D=", Sys.getenv("BENCH_SURGERY_D", "4096")),
    paste0("BENCH_SURGERY_LAYERS=", Sys.getenv("BENCH_SURGERY_LAYERS", "5"))
  )
  out <- system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(case_code)),
    env = env, stdout = TRUE, stderr = FALSE
  )
  v <- strsplit(utils::tail(out, 1), "\t")[[1]]
  data.frame(
    case = case, seconds = as.numeric(v[[1]]), rss_mib = as.numeric(v[[2]]), anon_after_mib = as.numeric(v[[3]]),
    cpu_seconds = as.numeric(v[[4]])
  )
}

libs <- c(ours = args[[1]], cran = if (length(args) > 1) args[[2]])
groups <- strsplit(Sys.getenv("BENCH_GROUPS", "tensor,model,set"), ",")[[1]]
reps <- as.integer(Sys.getenv("BENCH_REPS", "1"))
file <- tempfile(fileext = ".safetensors")
model_file <- tempfile(fileext = ".safetensors")
surgery_files <- tempfile(c("plain", "hf"), fileext = ".safetensors")
on.exit(unlink(c(file, model_file, surgery_files)))
res <- list()
if ("surgery" %in% groups) {
  # Written once, outside the rounds.
  run_case("surgery_write", libs[["ours"]], surgery_files[[1]], surgery_files[[2]])
  system2("sync")
}
for (rep in seq_len(reps)) {
  for (nm in names(libs)) {
    cases <- c(
      if ("tensor" %in% groups) c("save_path", "save_path_t", "torch_save", "load_path", "load_con", "torch_load", "safetensors_new"),
      # The module cases read the checkpoint model_save wrote.
      if ("model" %in% groups && nm == "ours") c("model_save", "model_load", "model_load_read", "model_load_file", "model_state_dict"),
      if ("set" %in% groups && nm == "ours") c("set_save", "set_save_nosync"),
      if ("surgery" %in% groups && nm == "ours") c("surgery_plain", "surgery_view", "surgery_copy", "surgery_route")
    )
    for (case in cases) {
      # Loads read the file the torch_save() case wrote with the same package.
      r <- if (startsWith(case, "surgery_")) {
        run_case(case, libs[[nm]], surgery_files[[1]], surgery_files[[2]])
      } else {
        run_case(case, libs[[nm]], if (startsWith(case, "model_")) model_file else file)
      }
      r$package <- nm
      res[[length(res) + 1]] <- r
      print(r)
    }
  }
  if ("surgery" %in% groups) {
    for (case in c("py_surgery_view", "py_surgery_copy")) {
      r <- run_py_surgery(case, surgery_files[[2]])
      r$package <- "python"
      res[[length(res) + 1]] <- r
      print(r)
    }
  }
  if ("set" %in% groups) {
    for (case in c("py_save", "py_save_fsync")) {
      r <- run_py_case(case, file)
      r$package <- "python"
      res[[length(res) + 1]] <- r
      print(r)
    }
  }
}
res <- do.call(rbind, res)
print(res, row.names = FALSE)
if (reps > 1) {
  cat("\nMedians of", reps, "runs:\n")
  print(aggregate(cbind(seconds, cpu_seconds, rss_mib, anon_after_mib) ~ package + case, res, stats::median), row.names = FALSE)
}
if ("set" %in% groups) {
  med <- function(case, col = "seconds") stats::median(res[[col]][res$case == case])
  for (col in c("seconds", "cpu_seconds")) {
    cat(sprintf(
      "\n16 x F32[4096, 4096] save, ours / Python (median %s): %.2f / %.2f = %.2f without fsync, %.2f / %.2f = %.2f with fsync (target 1.5)",
      col, med("set_save_nosync", col), med("py_save", col), med("set_save_nosync", col) / med("py_save", col),
      med("set_save", col), med("py_save_fsync", col), med("set_save", col) / med("py_save_fsync", col)
    ))
  }
  cat("\n")
  cat(sprintf("Peak RSS above the input, ours: %.0f MiB at most (target 64)\n",
    max(res$rss_mib[res$case %in% c("set_save", "set_save_nosync")])))
}
