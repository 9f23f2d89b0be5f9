# Fails on any non-API R entry point used by the Rust binding sources.
#
#   Rscript tools/check-nonapi.R [FILE.rs or DIR ...]   (default: src/rust/src)
#
# CRAN's `R CMD check` ("checking compiled code") notes, and in R >= 4.5
# warns about, calls into R outside its API. It looks at the built library,
# where it can only be seen after a full build on each R version; this check
# reads the sources instead, so it runs in a second on any R:
#
# * R entry points used: the identifiers imported from extendr-ffi (`use
#   extendr_ffi::{...}`, also through an alias or a glob import) or named
#   by path (`extendr_ffi::R_NilValue`), and those declared by the sources
#   themselves in `extern "C" { ... }` blocks (or via `#[link_name]`).
#   Comments and string literals are ignored.
# * Non-API: R's own list, `tools:::nonAPI` (and `tools:::warnNonAPI`) of
#   the R running this script, plus the entries that newer R versions added
#   (below), so that an older R still finds what R-devel's check reports.
#
# It prints the entry points found, with the files using them, then the
# non-API ones with file and line, and exits 1 if there are any (2 on a
# usage error). Entry points reached only through extendr-api's own code are
# not seen here; extendr-ffi switches those to API calls on R >= 4.5.

# Entries of `nonAPI` and `warnNonAPI` in R-devel's
# src/library/tools/R/sotools.R that R 4.2.2's `tools:::nonAPI` lacks (R 4.2
# has no `warnNonAPI`). Read from the GitHub mirror of R's sources,
# wch/r-source, file version 012bedcfe1ce4e303855f14dcfb44431306234df; most
# were added for R 4.4 and 4.5, several from the section "Some API
# replacements for non-API entry points" of Writing R Extensions. Update
# this list from a newer sotools.R when R adds more.
newer_non_api <- c(
  "ALTREP_LENGTH", "ALTSTRING_ELT", "ALTVEC_DATAPTR", "ALTVEC_DATAPTR_RO",
  "ATTRIB", "BODY", "CLOENV", "COMPLEX0", "DATAPTR", "ddfind", "DDVAL",
  "ENCLOS", "ENSURE_NAMEDMAX", "ENVFLAGS", "EXTPTR_PROT", "EXTPTR_PTR",
  "EXTPTR_TAG", "FORMALS", "FRAME", "free_R_HOME", "freeRUser", "HASHTAB",
  "INTEGER0", "INTERNAL", "IS_ASCII", "IS_S4_OBJECT", "IS_UTF8", "LOGICAL0",
  "NAMED", "OBJECT", "PRCODE", "PRENV", "PRSEEN", "PRVALUE",
  "R_asHashtable", "R_BadLongVector", "R_closedir", "R_clrhash",
  "R_duplicate_attr", "R_findVarLoc", "R_gethash", "R_HashtabSEXP",
  "R_isHashtable", "R_lsInternal", "R_makePartialMatchWarningCondition",
  "R_maphash", "R_maphashC", "R_MissingArgError", "R_MissingArgError_c",
  "R_mkhashtab", "R_nchar", "R_numhash", "R_opendir", "R_popen", "R_Pretty",
  "R_PromiseExpr", "R_readdir", "R_remhash", "R_sethash",
  "R_shallow_duplicate_attr", "R_signal_protect_error",
  "R_signal_reprotect_error", "R_signal_unprotect_error", "R_strtod5",
  "R_system", "R_tryWrap", "R_typeToChar", "R_typhash", "RAW0", "RDEBUG",
  "REAL0", "REFCNT", "Rf_acopy_string", "Rf_allocSExp", "Rf_allocVector3",
  "Rf_asBool2", "Rf_asRbool", "Rf_csduplicated", "Rf_currentTime",
  "Rf_EncodeChar", "Rf_EncodeReal0", "Rf_findVarInFrame3", "Rf_gsetVar",
  "Rf_isValidString", "Rf_isValidStringF", "Rf_lazy_duplicate", "Rf_matchE",
  "Rf_mbcsToUcs2", "Rf_mbcsValid", "Rf_memtrace_report",
  "Rf_NonNullStringMatch", "Rf_setSVector", "Rf_substitute",
  "Rf_translateCharFP", "Rf_type2rstr", "Rf_utf8clen", "Rf_utf8toucs",
  "Rf_utf8Valid", "Rf_wait_usec", "Rf_wtransChar", "Rstrdup", "SET_ATTRIB",
  "SET_BODY", "SET_CLOENV", "SET_ENCLOS", "SET_ENVFLAGS", "SET_FORMALS",
  "SET_FRAME", "SET_HASHTAB", "SET_NAMED", "SET_OBJECT", "SET_PRCODE",
  "SET_PRENV", "SET_PRSEEN", "SET_PRVALUE", "SET_RDEBUG", "SET_S4_OBJECT",
  "SET_TYPEOF", "STRING_PTR", "SYMVALUE", "UNSET_S4_OBJECT", "XLENGTH_EX"
)

local({
  args <- commandArgs(trailingOnly = TRUE)
  if (any(args %in% c("-h", "--help"))) {
    cat("usage: Rscript tools/check-nonapi.R [FILE.rs or DIR ...]  (default: src/rust/src)\n")
    quit(status = 0)
  }
  if (!length(args)) {
    file_arg <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
    root <- if (length(file_arg)) file.path(dirname(file_arg), "..") else "."
    args <- file.path(root, "src", "rust", "src")
  }
  files <- unlist(lapply(args, function(a) {
    if (dir.exists(a)) list.files(a, pattern = "\\.rs$", full.names = TRUE, recursive = TRUE) else a
  }))
  files <- normalizePath(files, mustWork = FALSE)
  if (!length(files) || !all(file.exists(files))) {
    message("no such Rust source: ", paste(files[!file.exists(files)], collapse = ", "))
    quit(status = 2)
  }

  tools_ns <- asNamespace("tools")
  from_r <- unlist(lapply(c("nonAPI", "warnNonAPI"), function(n) {
    if (exists(n, envir = tools_ns, inherits = FALSE)) get(n, envir = tools_ns) else character()
  }))
  non_api <- unique(c(from_r, newer_non_api))

  # Blanks comments and string and character literals (keeping line breaks,
  # so that line numbers stay right). Lifetimes ('a) are not literals.
  blank <- function(text) {
    pattern <- paste0(
      "(?s)//[^\\n]*", "|/\\*.*?\\*/",
      "|b?r(#*)\".*?\"\\1",
      "|b?\"(?:\\\\.|[^\"\\\\])*\"",
      "|b?'(?:\\\\.|[^'\\\\])'"
    )
    m <- gregexpr(pattern, text, perl = TRUE)
    regmatches(text, m) <- lapply(regmatches(text, m), function(x) gsub("[^\n]", " ", x))
    text
  }
  line_of <- function(text, pos) {
    nl <- gregexpr("\n", text, fixed = TRUE)[[1]]
    vapply(pos, function(p) sum(nl > 0 & nl < p) + 1L, 1L)
  }
  idents <- function(s) {
    x <- regmatches(s, gregexpr("[A-Za-z_][A-Za-z0-9_]*", s))[[1]]
    setdiff(x, c("self", "super", "crate", "as", "_", "pub", "mut", "static", "fn", "unsafe", "extern"))
  }
  # Every match of `pattern` in `text`: identifiers and their lines. `pick`
  # turns a match (with groups) into the identifiers it names.
  find <- function(text, pattern, pick) {
    m <- gregexpr(pattern, text, perl = TRUE)[[1]]
    if (m[1] < 0) return(data.frame(name = character(), line = integer()))
    out <- lapply(seq_along(m), function(i) {
      s <- substr(text, m[i], m[i] + attr(m, "match.length")[i] - 1L)
      ids <- unique(pick(s))
      if (!length(ids)) return(NULL)
      # The line of each name's first appearance in the match.
      at <- vapply(ids, function(id) {
        p <- regexpr(paste0("(?<![A-Za-z0-9_])", id, "(?![A-Za-z0-9_])"), s, perl = TRUE)
        if (p > 0) as.integer(p) else 1L
      }, 1L)
      data.frame(name = ids, line = line_of(text, m[i] + at - 1L))
    })
    do.call(rbind, c(list(data.frame(name = character(), line = integer())), out))
  }

  found <- data.frame(name = character(), file = character(), line = integer(), how = character())
  texts <- list()
  add <- function(df, file, how) {
    if (nrow(df)) found <<- rbind(found, data.frame(name = df$name, file = basename(file), line = df$line, how = how))
  }
  for (f in files) {
    raw <- paste(readLines(f, warn = FALSE, encoding = "UTF-8"), collapse = "\n")
    text <- blank(raw)
    texts[[basename(f)]] <- strsplit(text, "\n", fixed = TRUE)[[1]]
    crates <- "(?:extendr_ffi|libR_sys)"
    aliases <- regmatches(text, gregexpr(paste0("\\b(?:use|extern\\s+crate)\\s+", crates, "\\s+as\\s+\\w+"), text, perl = TRUE))[[1]]
    prefixes <- unique(c("extendr_ffi", "libR_sys", sub(".*\\s", "", aliases)))
    prefix <- paste0("(?:", paste(prefixes, collapse = "|"), ")")
    # use extendr_ffi::{A, B as C, sub::{D}};  use extendr_ffi::E;
    add(find(text, paste0("\\buse\\s+", prefix, "::[^;]*;"), function(s) {
      s <- sub(paste0("^use\\s+", prefix, "::"), "", s, perl = TRUE)
      s <- gsub("\\bas\\s+\\w+", "", s, perl = TRUE)
      idents(s)
    }), f, "use")
    # extendr_ffi::NAME in code (not in a use, already seen).
    add(find(text, paste0("(?<!use )(?<!\\w)", prefix, "(?:::\\w+)+(?!\\s*::\\s*\\{)"), function(s) {
      idents(sub(paste0("^", prefix, "::"), "", s, perl = TRUE))
    }), f, "path")
    # A glob import brings every name: take the file's identifiers that R
    # declares as non-API.
    if (grepl(paste0("\\buse\\s+", prefix, "::\\*"), text, perl = TRUE)) {
      add(find(text, "\\b[A-Za-z_][A-Za-z0-9_]*\\b", function(s) intersect(s, non_api)), f, "glob")
    }
    # extern "C" { fn NAME(...); static NAME: T; } (its ABI string is
    # blanked like the other literals).
    blocks <- gregexpr("\\bextern\\s*\\{", text, perl = TRUE)[[1]]
    if (blocks[1] > 0) {
      for (i in seq_along(blocks)) {
        start <- blocks[i] + attr(blocks, "match.length")[i]
        depth <- 1L
        pos <- start
        chars <- strsplit(substr(text, start, nchar(text)), "")[[1]]
        for (ch in chars) {
          if (ch == "{") depth <- depth + 1L
          if (ch == "}") depth <- depth - 1L
          if (depth == 0L) break
          pos <- pos + 1L
        }
        body <- substr(text, start, pos - 1L)
        decl <- find(body, "\\b(?:fn|static(?:\\s+mut)?)\\s+[A-Za-z_][A-Za-z0-9_]*", function(s) {
          sub("^.*\\s", "", s)
        })
        if (nrow(decl)) {
          decl$line <- decl$line + line_of(text, start) - 1L
          add(decl, f, "extern")
        }
      }
    }
    # #[link_name = "NAME"] (the string is blanked in `text`).
    add(find(raw, "#\\[link_name\\s*=\\s*\"[A-Za-z_][A-Za-z0-9_]*\"\\]", function(s) {
      sub("^.*\"([^\"]+)\".*$", "\\1", s)
    }), f, "link_name")
  }
  found <- unique(found)
  found <- found[order(found$name, found$file, found$line), ]

  cat(sprintf("check-nonapi: %d Rust files, non-API list of %d entries (%s %s, plus %d from R-devel)\n",
              length(files), length(non_api), R.version$version.string,
              if (length(from_r)) "tools:::nonAPI" else "without tools:::nonAPI",
              length(setdiff(newer_non_api, from_r))))
  names_found <- unique(found$name)
  cat(sprintf("R names used (entry points, and the types and constants imported with them) (%d):\n", length(names_found)))
  for (n in names_found) {
    files_n <- unique(found$file[found$name == n])
    cat(sprintf("  %-28s %s\n", n, paste(files_n, collapse = ", ")))
  }
  hits <- found[found$name %in% non_api, ]
  if (!nrow(hits)) {
    cat("No non-API R entry points.\n")
    quit(status = 0)
  }
  cat(sprintf("\nNon-API R entry points (%d), where they are imported or declared, and used:\n", length(unique(hits$name))))
  for (n in unique(hits$name)) {
    h <- hits[hits$name == n, ]
    where <- vapply(unique(h$file), function(b) {
      uses <- setdiff(grep(paste0("\\b", n, "\\b"), texts[[b]], perl = TRUE), h$line[h$file == b])
      paste0(b, ":", paste(c(h$line[h$file == b], if (length(uses)) paste0("used ", paste(uses, collapse = ","))), collapse = " "))
    }, "")
    cat(sprintf("  %s  %s\n", n, paste(where, collapse = "; ")))
  }
  quit(status = 1)
})
