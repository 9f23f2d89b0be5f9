# Hollows out the vendored crates that the package build never compiles.
#
# Usage (called by tools/vendor.sh): Rscript tools/vendor-prune.R VENDOR_DIR
#
# Cargo.lock also pins the dev-dependencies (the reference `safetensors`
# crate, proptest and what they pull in: tempfile, rustix, linux-raw-sys,
# windows-sys, ...) and crates for other targets. `cargo build --offline`
# must still find every locked crate and read its Cargo.toml to resolve, but
# it compiles only the library's normal and build dependencies. For the other
# crates this keeps Cargo.toml, the licence and readme files and empty
# placeholders for the target roots, and drops everything else; that is most
# of the bundle's size. `cargo test` can't run from the pruned bundle, which
# is not needed: it is for installing the R package only.
#
# Cargo verifies only the files listed in .cargo-checksum.json, so the list
# is emptied; the crate checksum ("package") stays and still matches
# Cargo.lock.

local({
  args <- commandArgs(trailingOnly = TRUE)
  if (length(args) != 1L || !dir.exists(args[[1]])) {
    stop("usage: Rscript tools/vendor-prune.R VENDOR_DIR")
  }
  vendor <- normalizePath(args[[1]])
  file_arg <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  root <- normalizePath(file.path(dirname(file_arg), ".."), mustWork = TRUE)

  cargo <- Sys.which("cargo")
  if (!nzchar(cargo)) cargo <- path.expand("~/.cargo/bin/cargo")
  json <- system2(cargo, c("metadata", "--format-version", "1", "--locked",
                           "--manifest-path", file.path(root, "src", "rust", "Cargo.toml")),
                  stdout = TRUE)
  if (!is.null(attr(json, "status"))) stop("`cargo metadata` failed.")
  meta <- jsonlite::fromJSON(paste(json, collapse = "\n"), simplifyVector = FALSE)

  # Reachable from the root crate through normal and build dependencies, on
  # any platform (so the bundle also builds on Windows and macOS).
  nodes <- meta$resolve$nodes
  node_ids <- vapply(nodes, `[[`, "", "id")
  linked <- character()
  todo <- meta$resolve$root
  while (length(todo)) {
    id <- todo[[1]]
    todo <- todo[-1]
    if (id %in% linked) next
    linked <- c(linked, id)
    for (dep in nodes[[match(id, node_ids)]]$deps) {
      kinds <- vapply(dep$dep_kinds, function(k) if (is.null(k$kind)) "normal" else k$kind, "")
      if (any(kinds %in% c("normal", "build"))) todo <- c(todo, dep$pkg)
    }
  }

  keep_pattern <- "^(Cargo\\.toml|\\.cargo-checksum\\.json|(LICEN[CS]E|COPYING|COPYRIGHT|NOTICE|AUTHORS|README)[^/]*)$"
  pruned <- character()
  for (p in meta$packages) {
    if (p$id %in% linked) next
    dir <- file.path(vendor, paste0(p$name, "-", p$version))
    if (!dir.exists(dir)) dir <- file.path(vendor, p$name)
    if (!dir.exists(dir)) stop("vendored crate ", p$name, " ", p$version, " not found in ", vendor)
    dir <- normalizePath(dir)
    manifest_dir <- normalizePath(dirname(p$manifest_path))
    roots <- vapply(p$targets, function(t) {
      sub(paste0("^", manifest_dir, "/"), "", normalizePath(t$src_path, mustWork = FALSE))
    }, "")

    files <- list.files(dir, recursive = TRUE, all.files = TRUE, no.. = TRUE)
    drop <- files[!grepl(keep_pattern, files) & !(files %in% roots)]
    unlink(file.path(dir, drop))
    # Remove the directories emptied above (deepest first).
    dirs <- list.dirs(dir, full.names = TRUE, recursive = TRUE)
    for (d in dirs[order(-nchar(dirs))]) {
      if (d != dir && length(list.files(d, all.files = TRUE, no.. = TRUE)) == 0L) unlink(d, recursive = TRUE)
    }
    for (r in roots) {
      dir.create(dirname(file.path(dir, r)), recursive = TRUE, showWarnings = FALSE)
      writeLines("// Emptied by tools/vendor-prune.R: not compiled when installing the R package.",
                 file.path(dir, r))
    }
    ck_file <- file.path(dir, ".cargo-checksum.json")
    ck <- jsonlite::fromJSON(ck_file, simplifyVector = FALSE)
    ck$files <- structure(list(), names = character())
    writeLines(jsonlite::toJSON(ck, auto_unbox = TRUE, null = "null"), ck_file)
    pruned <- c(pruned, paste(p$name, p$version))
  }
  message("Pruned ", length(pruned), " crates not compiled into the package: ",
          paste(pruned, collapse = ", "))
})
