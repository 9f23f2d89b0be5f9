# One timed measurement in a fresh R process; prints one JSON line.
#
#   Rscript case.R IMPL CASE ARGS...
#
# IMPL: "ours" (this package, from R_LIBS), "cran" (safetensors 0.2.1, from
# R_LIBS, with user-registered frameworks as compat.md section 5.2 shows) or
# "readbin" (base R readBin of the whole file, the R raw-copy limit). The
# cases whose names start with "torch_" need R torch (driver.py runs them
# only when it is installed).
# Only the call is timed; package loading and input preparation are not.
# Peak RSS is VmHWM after the call, reset (clear_refs 5) just before it;
# "rss_base" is VmRSS at the reset.

args <- commandArgs(trailingOnly = TRUE)
impl <- args[[1]]
case <- args[[2]]
rest <- args[-(1:2)]

status <- function() {
  lines <- readLines("/proc/self/status")
  get <- function(key) {
    l <- grep(paste0("^", key, ":"), lines, value = TRUE)
    as.numeric(strsplit(trimws(sub("^[^:]+:", "", l)), " +")[[1]][[1]]) * 1024
  }
  c(hwm = get("VmHWM"), rss = get("VmRSS"))
}
reset_peak <- function() {
  cat("5", file = "/proc/self/clear_refs")
  status()[["rss"]]
}
now <- function() as.numeric(Sys.time())

if (impl %in% c("ours", "cran")) {
  suppressPackageStartupMessages(library(safetensors))
}
if (nzchar(Sys.getenv("BENCH_THREADS"))) {
  options(safetensors.threads = as.integer(Sys.getenv("BENCH_THREADS")))
}

if (impl == "cran") {
  stopifnot(!exists("safe_open", asNamespace("safetensors")))
  # A framework returning each tensor's bytes (compat.md 5.2) ...
  safetensors_frameworks[["raw"]] <- list(packages = character(0), constructor = function(raw, meta, ...) raw)
  # ... and one building the same R arrays as this package does: what a
  # user of 0.2.1 without torch has to write.
  safetensors_frameworks[["rarray"]] <- list(
    packages = character(0),
    constructor = function(raw, meta, ...) {
      shape <- as.numeric(unlist(meta$shape))
      n <- prod(shape)
      v <- switch(meta$dtype,
        F64 = readBin(raw, "double", n, size = 8),
        F32 = readBin(raw, "double", n, size = 4),
        I32 = readBin(raw, "integer", n, size = 4),
        U8 = as.integer(raw),
        stop("dtype not handled in the benchmark")
      )
      if (length(shape) > 1) {
        dim(v) <- rev(shape)
        v <- aperm(v)
      } else if (length(shape) == 1) {
        dim(v) <- shape
      }
      v
    }
  )
  # Writing plain R arrays needs methods for the generics (compat.md 5.2).
  registerS3method("safe_tensor_meta", "default", function(x) {
    list(shape = dim(x) %||% length(x), dtype = getOption("bench.dtype"))
  })
  registerS3method("safe_tensor_buffer", "default", function(x) {
    size <- if (getOption("bench.dtype") == "F32") 4L else 8L
    v <- if (length(dim(x)) > 1) aperm(x) else x
    writeBin(as.vector(v), raw(), size = size)
  })
}
`%||%` <- function(x, y) if (is.null(x)) y else x

fsync_path <- function(path) {
  # coreutils `sync FILE` fsyncs that file.
  stopifnot(system2("sync", shQuote(path)) == 0)
}

input <- NULL
if (startsWith(case, "save_")) {
  out <- rest[[1]]
  rows <- as.integer(rest[[2]])
  n <- as.integer(rest[[3]])
  set.seed(1)
  input <- lapply(seq_len(n), function(i) matrix(rnorm(rows * 4096), rows, 4096))
  names(input) <- sprintf("t%02d", seq_len(n) - 1L)
  dtype <- if (case == "save_f64") "F64" else "F32"
  options(bench.dtype = dtype)
}
if (startsWith(case, "torch_")) {
  suppressPackageStartupMessages(library(torch))
  invisible(torch_zeros(1))
  # Namespaces that torch_load() and torch_save() load at their first call
  # in a session (torch uses them as jsonlite:: and withr:: without
  # importing them; jsonlite took 15-23 ms here), loaded now as LibTorch is
  # above: a one-time cost of torch's own code, as Python's imports are
  # before its timings. Every torch case gets them, whether it uses them or
  # not.
  for (ns in c("jsonlite", "withr")) loadNamespace(ns)
  if (case %in% c("torch_save", "torch_save_sync")) {
    # 16 F32 tensors of ROWS x 4096, as case.py makes them.
    out <- rest[[1]]
    torch_manual_seed(1)
    input <- setNames(lapply(1:16, function(i) torch_randn(as.integer(rest[[2]]), 4096)), sprintf("t%02d", 1:16))
    unlink(out)
  }
  if (case == "torch_model") {
    # 128 BF16 linear layers of 8192 -> ROWS, the shape of the shards'
    # tensors, as case.py builds them.
    # Each layer made in F32 (as nn_linear() initialises) and turned into
    # BF16 at once: a whole F32 module first (8 GiB) pushed the shards out
    # of the page cache, and loads of it took 0.53 to 0.88 s.
    net <- nn_module(initialize = function(rows) {
      self$layers <- nn_module_list(lapply(1:128, function(i) {
        nn_linear(8192, rows, bias = FALSE)$to(dtype = torch_bfloat16())
      }))
    })
    model <- net(as.integer(rest[[2]]))
  }
}
# Bytes of the torch tensors in `x` (object.size() does not see them).
torch_bytes <- function(x) sum(vapply(x, function(t) t$numel() * t$element_size(), numeric(1)))

framework_of <- function(x) if (x %in% c("array", "rawarray")) if (impl == "cran") "rarray" else "r" else x
# "rawarray": R arrays with U8 tensors as raw arrays. The argument is given
# only then, so that builds from before it (A/B runs) run the other cases.
uint8_arg <- function(x) if (x == "rawarray") list(uint8 = "raw")

invisible(gc())
base <- reset_peak()
# R's collections during the call, reported apart (the first large
# allocation of a fresh session costs one; see bench/README.md).
g0 <- gc.time()[[3]]
c0 <- proc.time()
t0 <- now()
res <- switch(paste(impl, case),
  "ours load" = do.call(safe_load_file, c(
    list(rest[[1]], framework = framework_of(rest[[2]])),
    # The default backend unless BENCH_BACKEND names one.
    if (nzchar(Sys.getenv("BENCH_BACKEND"))) list(backend = Sys.getenv("BENCH_BACKEND")),
    uint8_arg(rest[[2]])
  )),
  "cran load" = safe_load_file(rest[[1]], framework = framework_of(rest[[2]])),
  "ours open_one" = {
    # Like Python's safe_open() + get_tensor(): a handle (memory map by
    # default, as in Python), one tensor, closed.
    h <- safe_open(rest[[1]])
    x <- list(h[[rest[[2]]]])
    close(h)
    x
  },
  "cran open_one" = {
    f <- safetensors$new(rest[[1]], framework = "rarray")
    x <- list(f$get_tensor(rest[[2]]))
    close(f$con)
    x
  },
  "ours save_f64" = ,
  "ours save_f32" = {
    safe_save_file(input, out, dtype = dtype, sync = TRUE)
    input
  },
  "cran save_f64" = ,
  "cran save_f32" = {
    safe_save_file(input, out)
    fsync_path(out)
    input
  },
  "readbin load" = list(readBin(rest[[1]], "raw", file.size(rest[[1]]))),
  # torch users' paths (issue 22), each with the package's defaults.
  "ours torch_load" = torch_load(rest[[1]]),
  "ours torch_file" = ,
  "ours torch_f32" = ,
  "ours torch_bf16" = ,
  "ours torch_shards" = safe_load_file(rest[[1]], framework = "torch"),
  "ours torch_model" = {
    safe_load_model(model, rest[[1]], strict = FALSE)
    list()
  },
  "ours torch_save" = {
    torch_save(input, out)
    list()
  },
  "ours torch_save_sync" = {
    torch_save(input, out)
    fsync_path(out)
    list()
  },
  stop("unknown case ", impl, " ", case)
)
elapsed <- now() - t0
cpu <- sum((proc.time() - c0)[c("user.self", "sys.self")])
gc_time <- gc.time()[[3]] - g0
st <- status()
# The returned objects, attributes (the header list) included.
out_bytes <- if (startsWith(case, "torch_")) torch_bytes(res) else as.numeric(object.size(res))
if (startsWith(case, "save_") || startsWith(case, "torch_save")) unlink(out)
cat(sprintf(
  '{"time": %.6f, "cpu": %.6f, "gc": %.6f, "rss_peak": %.0f, "rss_base": %.0f, "out_bytes": %.0f}\n',
  elapsed, cpu, gc_time, st[["hwm"]], base, out_bytes
))
