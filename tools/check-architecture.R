# Checks that the tree keeps the structure ARCHITECTURE.md describes:
#
#   Rscript tools/check-architecture.R
#
# 1. The core crate (src/rust/core) depends on neither extendr nor R.
# 2. No `allow(dead_code)` in the Rust sources: the compiler's warnings are
#    trusted.
# 3. No `.Call()` outside R/extendr-wrappers.R.
# 4. No dtype table in R/: no file names four or more dtypes in string
#    literals (the table lives in src/rust/src/dtypes.rs).
# 5. The R files call each other only downwards, in the order of `layers`
#    below (which must list every file): a function may call functions of
#    its own file or of files listed before it. So there are no cycles.
# 6. Mirrors: each binding module src/rust/src/X.rs has R/X.R (but lib.rs
#    and the helpers robj.rs and decimal.rs), and each R file R/X.R has
#    tests/testthat/test-X.R (generated and package-level files excepted).
#
# Prints one line per check and exits non-zero when any fails. Run by
# tools/test.sh; needs only base R and codetools (a recommended package).

layers <- c(
  "errors.R", "utils.R", "dtypes.R", "display.R", "rename.R", "progress.R", "url.R", "http.R", "sources.R", "download.R",
  "frameworks.R", "torch.R", "tensors.R", "write.R", "shards.R", "hf.R", "open.R", "slice.R",
  "info.R", "load.R", "save.R", "writer.R", "convert.R", "model.R", "safetensors-class.R", "safetensors-package.R"
)
# Files outside the layers: generated wrappers (any file may call them).
exempt <- "extendr-wrappers.R"

file_arg <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
root <- if (length(file_arg) == 1L) normalizePath(file.path(dirname(file_arg), "..")) else normalizePath(".")
setwd(root)

failures <- 0L
checks <- 0L
report <- function(ok, what, detail = character()) {
  checks <<- checks + 1L
  cat(if (ok) "ok  " else "FAIL", what, "\n")
  if (!ok) {
    cat(paste0("     ", detail, "\n"), sep = "")
    failures <<- failures + 1L
  }
}

read <- function(f) readLines(f, warn = FALSE)

# 1. The core crate without R.
core_toml <- read("src/rust/core/Cargo.toml")
core_src <- list.files("src/rust/core/src", "\\.rs$", recursive = TRUE, full.names = TRUE)
uses_r <- c(
  grep("extendr|libR", core_toml, value = TRUE),
  unlist(lapply(core_src, function(f) {
    hits <- grep("extendr|\\bRobj\\b|SEXP", read(f))
    if (length(hits)) paste0(f, ":", hits)
  }))
)
report(length(uses_r) == 0, "the core crate uses neither extendr nor R", uses_r)

# 2. No allow(dead_code).
rust <- c(core_src, list.files("src/rust/src", "\\.rs$", full.names = TRUE))
dead <- unlist(lapply(rust, function(f) {
  hits <- grep("allow\\(dead_code\\)", read(f))
  if (length(hits)) paste0(f, ":", hits)
}))
report(length(dead) == 0, "no allow(dead_code) in the Rust sources", dead)

# 3. .Call only in the generated wrappers.
r_files <- list.files("R", "\\.R$")
calls <- unlist(lapply(setdiff(r_files, exempt), function(f) {
  code <- sub("#.*$", "", read(file.path("R", f)))
  hits <- grep("\\.Call\\(", code)
  if (length(hits)) paste0("R/", f, ":", hits)
}))
report(length(calls) == 0, "no .Call() outside R/extendr-wrappers.R", calls)

# 4. No dtype table in R/.
dtypes <- c(
  "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
  "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"
)
tables <- unlist(lapply(r_files, function(f) {
  pd <- utils::getParseData(parse(file.path("R", f), keep.source = TRUE))
  strings <- gsub("^[\"']|[\"']$", "", pd$text[pd$token == "STR_CONST"])
  named <- intersect(strings, dtypes)
  if (length(named) >= 4) sprintf("R/%s names %s", f, paste(named, collapse = ", "))
}))
report(length(tables) == 0, "no dtype table in R/ (it is src/rust/src/dtypes.rs)", tables)

# 5. Calls go downwards only.
unlisted <- setdiff(r_files, c(layers, exempt))
missing_files <- setdiff(layers, r_files)
report(
  length(unlisted) == 0 && length(missing_files) == 0,
  "every R file has its place in the layers",
  c(if (length(unlisted)) paste("not in `layers`:", unlisted), if (length(missing_files)) paste("no such file:", missing_files))
)
defs <- list()
for (f in c(layers[layers %in% r_files], exempt)) {
  env <- new.env()
  sys.source(file.path("R", f), envir = env, keep.source = FALSE, toplevel.env = env)
  defs[[f]] <- Filter(function(n) is.function(env[[n]]), ls(env, all.names = TRUE))
  attr(defs[[f]], "env") <- env
}
owner <- character()
for (f in names(defs)) owner[defs[[f]]] <- f
upward <- character()
for (f in intersect(layers, names(defs))) {
  env <- attr(defs[[f]], "env")
  level <- match(f, layers)
  for (fn in defs[[f]]) {
    used <- codetools::findGlobals(env[[fn]], merge = FALSE)$functions
    used <- intersect(used, names(owner))
    for (u in used) {
      g <- owner[[u]]
      if (g != exempt && g != f && match(g, layers) > level) {
        upward <- c(upward, sprintf("R/%s: %s() calls %s() of R/%s, a higher layer", f, fn, u, g))
      }
    }
  }
}
report(length(upward) == 0, "R files call only their own layer and those below (no cycles)", upward)

# 6. Mirrors.
bindings <- sub("\\.rs$", "", setdiff(list.files("src/rust/src", "\\.rs$"), c("lib.rs", "robj.rs", "decimal.rs")))
no_r <- bindings[!file.exists(file.path("R", paste0(bindings, ".R")))]
report(length(no_r) == 0, "each binding module src/rust/src/X.rs has R/X.R", paste0("src/rust/src/", no_r, ".rs"))
tested <- sub("\\.R$", "", setdiff(r_files, c(exempt, "safetensors-package.R")))
no_test <- tested[!file.exists(file.path("tests/testthat", paste0("test-", tested, ".R")))]
report(length(no_test) == 0, "each R file R/X.R has tests/testthat/test-X.R", paste0("R/", no_test, ".R"))

cat(sprintf("%d passed, %d failed\n", checks - failures, failures))
quit(status = if (failures > 0) 1 else 0)
