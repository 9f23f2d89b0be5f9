# safe_convert() against Python (issue 24): a sharded F32 checkpoint (random
# tensors of 16384 x 1024, 64 MiB each; by default 4 GiB in 4 shards)
# converted to BF16 in shards of half the output's size (2 shards), by
#
#   R:      safe_convert(index, out, dtype = "BF16", max_shard_size = ...,
#                        sync = FALSE)
#   Python: bench/convert.py: load each shard with safetensors.torch, convert
#           each tensor with .to(torch.bfloat16), save_file() each output
#           shard (no fsync, as safe_convert(sync = FALSE)).
#
#   Rscript bench/convert.R LIB [GIB]
#
# LIB is a library holding a release build of this package
# (`DEBUG=false tools/dev-install.sh LIB`). GIB (default 4) is the size of
# the F32 checkpoint; the input is generated once (by convert.py gen) in
# BENCH_DIR (default a folder under tempdir(), removed at the end unless
# BENCH_DIR is given). Each case runs in a fresh process under
# /usr/bin/time, BENCH_REPS times (default 3), R and Python interleaved,
# after one untimed run of each that brings the input into the page cache;
# the report gives each case's median elapsed time and its largest peak RSS
# (the process's maxrss, everything it mapped or allocated), the time ratio
# R / Python and whether the targets hold (ratio <= 1.0, R's peak RSS <=
# 128 MiB). Both outputs are checked to hold the same tensors in the same
# dtype and shapes. Python is BENCH_PYTHON, else TORCH_PY (a Python with
# torch and safetensors, as build-r-torch.sh's env.sh sets it), else python3.

args <- commandArgs(trailingOnly = TRUE)
if (length(args) == 0) {
  stop("usage: Rscript bench/convert.R LIB [GIB]")
}
lib <- normalizePath(args[[1]])
gib <- if (length(args) >= 2) as.numeric(args[[2]]) else 4
reps <- as.integer(Sys.getenv("BENCH_REPS", "3"))
python <- Sys.getenv("BENCH_PYTHON", Sys.getenv("TORCH_PY", Sys.which("python3")))
here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))))
peer <- file.path(here, "convert.py")
dir <- Sys.getenv("BENCH_DIR", "")
keep <- nzchar(dir)
if (!keep) dir <- tempfile("bench-convert-")
dir.create(dir, showWarnings = FALSE, recursive = TRUE)
if (!keep) on.exit(unlink(dir, recursive = TRUE), add = TRUE)

src <- file.path(dir, "src")
index <- file.path(src, "model.safetensors.index.json")
max_bytes <- gib * 2^30 / 2 / 2 # BF16 is half of F32; two shards
if (!file.exists(index)) {
  cat(sprintf("Generating %g GiB of F32 in 4 shards in %s\n", gib, src))
  status <- system2(python, c(peer, "gen", src, gib, 4))
  if (status != 0) stop("convert.py gen failed")
}

# Runs `cmd` (a program and its arguments) under /usr/bin/time: elapsed
# seconds and peak RSS in MiB.
timed <- function(cmd, args) {
  report <- tempfile()
  on.exit(unlink(report))
  status <- system2("/usr/bin/time", c("-f", "'%e %M'", "-o", report, cmd, args))
  if (status != 0) stop(cmd, " failed with status ", status)
  v <- as.numeric(strsplit(readLines(report)[[1]], " ")[[1]])
  c(seconds = v[[1]], rss_mib = v[[2]] / 1024)
}

r_out <- file.path(dir, "out-r")
py_out <- file.path(dir, "out-py")
rscript <- file.path(R.home("bin"), "Rscript")
r_code <- sprintf(
  ".libPaths(c(%s, .libPaths())); library(safetensors); safe_convert(%s, %s, dtype = 'BF16', max_shard_size = %.0f, sync = FALSE)",
  deparse(lib), deparse(index), deparse(r_out), max_bytes
)
cases <- list(
  R = function() {
    unlink(r_out, recursive = TRUE)
    dir.create(r_out)
    timed(rscript, c("--vanilla", "-e", shQuote(r_code)))
  },
  Python = function() {
    unlink(py_out, recursive = TRUE)
    timed(python, c(peer, "run", index, py_out, sprintf("%.0f", max_bytes)))
  }
)

# Untimed runs first (the page cache), then the timed ones, interleaved.
for (case in cases) case()
results <- list(R = NULL, Python = NULL)
for (k in seq_len(reps)) {
  for (name in names(cases)) {
    results[[name]] <- rbind(results[[name]], cases[[name]]())
  }
}

# Both outputs hold the same tensors, dtypes and shapes (and R's output
# the bytes torch's .to() makes: test-convert.R checks that bit for bit).
.libPaths(c(lib, .libPaths()))
library(safetensors)
a <- safe_info(file.path(r_out, "model.safetensors.index.json"))
b <- safe_info(file.path(py_out, "model.safetensors.index.json"))
# The two may group tensors into their 2 shards differently.
a <- a[order(a$name), ]
b <- b[order(b$name), ]
stopifnot(identical(a$name, b$name), identical(a$dtype, b$dtype), identical(a$shape, b$shape), all(a$dtype == "BF16"))
stopifnot(length(unique(a$file)) == 2)

med <- vapply(results, function(m) stats::median(m[, "seconds"]), numeric(1))
rss <- vapply(results, function(m) max(m[, "rss_mib"]), numeric(1))
ratio <- med[["R"]] / med[["Python"]]
cat(sprintf("\nConverting %g GiB of F32 in 4 shards to BF16 in 2 shards, %d runs each (median time, largest peak RSS)\n", gib, reps))
cat(sprintf("  %-7s %8.2f s  %8.0f MiB\n", names(med), med, rss), sep = "")
cat(sprintf("  ratio R / Python: %.2f (target <= 1.0: %s); R's peak RSS %.0f MiB (target <= 128: %s)\n",
  ratio, if (ratio <= 1) "met" else "not met", rss[["R"]], if (rss[["R"]] <= 128) "met" else "not met"))
