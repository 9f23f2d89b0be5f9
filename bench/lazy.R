# Lazy access benchmark (issue 3): open a 1 GiB file and read one 64 MiB
# tensor, against Python's safe_open + get_tensor, in one script.
#
#   Rscript bench/lazy.R [LIBRARY]
#
# Needs a release build of safetensors (DEBUG=false tools/dev-install.sh LIB)
# and Python with safetensors and numpy. Writes a 1 GiB file in tempdir() and
# deletes it. The file is warm in the page cache for every measurement.
# Prints a table of medians over `reps` runs after one warm-up run (min..max
# in brackets); Python's runs are in one process, timed around the calls.

args <- commandArgs(trailingOnly = TRUE)
if (length(args) >= 1) .libPaths(c(args[[1]], .libPaths()))
library(safetensors)
reps <- 15L
python <- Sys.getenv("SAFETENSORS_PYTHON", Sys.which("python3"))
py_run <- function(code, ...) {
  script <- tempfile(fileext = ".py")
  on.exit(unlink(script))
  writeLines(code, script)
  # Without R's LD_LIBRARY_PATH, which can make pyenv's Python load the
  # system libpython.
  withr::with_envvar(c(LD_LIBRARY_PATH = NA), system2(python, c(script, ...), stdout = TRUE))
}

path <- file.path(tempdir(), "bench-lazy.safetensors")
on.exit(unlink(path), add = TRUE)
# 16 x F32[4096, 4096], as in the performance anchor of format.md.
py_run(c(
  "import sys, numpy as np",
  "from safetensors.numpy import save_file",
  "rng = np.random.default_rng(1)",
  "save_file({f't{i:02d}': rng.standard_normal((4096, 4096), dtype=np.float32) for i in range(16)}, sys.argv[1])"
), path)
stopifnot(file.size(path) > 2^30)
# Let writeback finish (page faults on pages under writeback wait for it),
# then warm the page cache.
system2("sync")
system2("cat", c(path), stdout = FALSE)

time_ms <- function(expr, reps) {
  f <- function() NULL
  body(f) <- substitute(expr)
  environment(f) <- parent.frame()
  f() # warm-up, not timed
  vapply(seq_len(reps), function(i) {
    gc()
    t0 <- proc.time()[["elapsed"]]
    f()
    1000 * (proc.time()[["elapsed"]] - t0)
  }, numeric(1))
}

cell <- function(t) sprintf("%.1f ms (%.1f..%.1f)", median(t), min(t), max(t))

r <- list(
  "R safe_open (header only)" = time_ms(close(safe_open(path)), reps),
  "R safe_open + h[[\"t07\"]], mmap, framework = \"raw\"" =
    time_ms({h <- safe_open(path, framework = "raw"); x <- h[["t07"]]; close(h)}, reps),
  "R safe_open + h[[\"t07\"]], read, framework = \"raw\"" =
    time_ms({h <- safe_open(path, framework = "raw", backend = "read"); x <- h[["t07"]]; close(h)}, reps),
  "R safe_open + h[[\"t07\"]], mmap (F32 -> double array)" =
    time_ms({h <- safe_open(path); x <- h[["t07"]]; close(h)}, reps),
  "R safe_open + h[[\"t07\"]], read (F32 -> double array)" =
    time_ms({h <- safe_open(path, backend = "read"); x <- h[["t07"]]; close(h)}, reps),
  "R safetensors$new + $get_tensor(\"t07\") (double array)" =
    time_ms({f <- safetensors$new(path); x <- f$get_tensor("t07")}, reps),
  "R safe_open + slice [1:10, ] of t07" =
    time_ms({h <- safe_open(path); x <- h$slice("t07")[1:10, ]; close(h)}, reps),
  "R safe_open + slice [, 1:10] of t07 (strided)" =
    time_ms({h <- safe_open(path); x <- h$slice("t07")[, 1:10]; close(h)}, reps)
)

py <- py_run(c(
  "import sys, time, gc, json",
  "from safetensors import safe_open",
  "path, reps = sys.argv[1], int(sys.argv[2])",
  "def bench(f):",
  "    f()",
  "    out = []",
  "    for _ in range(reps):",
  "        gc.collect()",
  "        t0 = time.perf_counter()",
  "        f()",
  "        out.append(1000 * (time.perf_counter() - t0))",
  "    return out",
  "def header():",
  "    with safe_open(path, 'np') as f: f.keys()",
  "def one(backend):",
  "    def g():",
  "        with safe_open(path, 'np', backend=backend) as f: x = f.get_tensor('t07')",
  "    return g",
  "def rows():",
  "    with safe_open(path, 'np') as f: x = f.get_slice('t07')[0:10]",
  "def cols():",
  "    with safe_open(path, 'np') as f: x = f.get_slice('t07')[:, 0:10]",
  "print(json.dumps({",
  "  'Python safe_open (header only)': bench(header),",
  "  'Python safe_open + get_tensor(\"t07\"), mmap (float32 numpy)': bench(one('mmap')),",
  "  'Python safe_open + get_tensor(\"t07\"), pread (float32 numpy)': bench(one('pread')),",
  "  'Python safe_open + get_slice(\"t07\")[0:10]': bench(rows),",
  "  'Python safe_open + get_slice(\"t07\")[:, 0:10]': bench(cols),",
  "}))"
), path, reps)
py <- jsonlite::fromJSON(py)

res <- c(r, py)
cat("| measurement | median (min..max) |\n|---|---|\n")
for (nm in names(res)) cat("| ", nm, " | ", cell(res[[nm]]), " |\n", sep = "")
cat("\n", R.version.string, ", safetensors ", format(packageVersion("safetensors")), ", ",
    reps, " runs per cell\n", sep = "")
