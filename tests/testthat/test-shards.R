shard_tensors <- function() {
  list(
    embed = matrix(as.numeric(1:40), 10, 4),
    w1 = as_loaded_dtype(matrix(seq(0, 1, length.out = 30), 5, 6), "F32"),
    b1 = as.numeric(1:6),
    w2 = structure(array(1:24, c(2, 3, 4)), dtype = "I16"),
    flag = c(TRUE, FALSE)
  )
}

strip_attrs <- function(x) {
  attr(x, "dtype") <- NULL
  x
}

# Writes a hand-made index beside `files` (named list of tensors per shard).
write_index <- function(dir, shards, weight_map, metadata = "{\"total_size\": 0}") {
  for (f in names(shards)) {
    safe_save_file(shards[[f]], file.path(dir, f))
  }
  entries <- paste0("\"", names(weight_map), "\": \"", unlist(weight_map), "\"", collapse = ", ")
  path <- file.path(dir, "model.safetensors.index.json")
  writeLines(paste0("{\"metadata\": ", metadata, ", \"weight_map\": {", entries, "}}"), path)
  path
}

test_that("max_shard_size writes transformers-style shards and an index", {
  dir <- withr::local_tempdir()
  x <- shard_tensors()
  # embed (320 bytes) is over the limit and alone; then w1 + b1; then w2 + flag.
  index <- safe_save_file(x, file.path(dir, "model.safetensors"), max_shard_size = 200, metadata = list(format = "pt"))
  expect_identical(index, file.path(dir, "model.safetensors.index.json"))
  shards <- sprintf("model-%05d-of-00003.safetensors", 1:3)
  expect_setequal(list.files(dir), c(shards, "model.safetensors.index.json"))
  idx <- jsonlite::fromJSON(index, simplifyVector = FALSE)
  sizes <- c(embed = 320, w1 = 120, b1 = 48, w2 = 48, flag = 2)
  expect_equal(idx$metadata$total_size, sum(sizes))
  expect_identical(
    idx$weight_map,
    list(b1 = shards[[2]], embed = shards[[1]], flag = shards[[3]], w1 = shards[[2]], w2 = shards[[3]])
  )
  for (s in shards) {
    expect_identical(safe_metadata(file.path(dir, s)), c(format = "pt"))
  }
  expect_identical(sum(safe_info(file.path(dir, shards[[1]]))$bytes), 320)
  expect_lte(sum(safe_info(file.path(dir, shards[[2]]))$bytes), 200)
  expect_lte(sum(safe_info(file.path(dir, shards[[3]]))$bytes), 200)
  # Every shard is a plain safetensors file.
  expect_identical(safe_info(file.path(dir, shards[[2]]))$name, c("w1", "b1"))

  back <- safe_load_file(index)
  expect_identical(names(back), names(x))
  for (nm in names(x)) {
    expect_identical(back[[nm]], safe_load_file(safe_serialize(x))[[nm]], label = nm)
  }
  expect_identical(attr(back, "metadata")[["__metadata__"]], list(format = "pt"))
  expect_identical(attr(back, "metadata")$w2$data_offsets, c(0L, 48L))
})

test_that("sharded checkpoints open as one set of tensors", {
  dir <- withr::local_tempdir()
  x <- shard_tensors()
  index <- safe_save_file(x, dir, max_shard_size = "0.2kB")
  expect_identical(basename(index), "model.safetensors.index.json")
  eager <- safe_load_file(index)
  for (backend in c("mmap", "read")) {
    h <- safe_open(index, backend = backend)
    expect_identical(names(h), names(x))
    for (nm in names(x)) {
      expect_identical(h[[nm]], eager[[nm]])
    }
    expect_identical(strip_attrs(h$slice("w2")[2, , 3:4]), strip_attrs(eager$w2[2, , 3:4]))
    close(h)
    expect_error(h$embed, class = "safetensors_error_closed")
  }
  sub <- safe_load_file(index, tensors = c("w2", "embed"))
  expect_named(sub, c("w2", "embed"))
  expect_identical(sub$w2, eager$w2)
  expect_error(safe_load_file(index, tensors = "nope"), class = "safetensors_error_tensor_not_found")
  info <- safe_info(index)
  expect_identical(info$name, names(x))
  expect_identical(info$file, sprintf("model-%05d-of-00003.safetensors", c(1, 2, 2, 3, 3)))
  # Offsets are within each tensor's own shard.
  shard2 <- safe_info(file.path(dir, info$file[[2]]))
  expect_identical(info[2:3, c("begin", "end")], shard2[, c("begin", "end")], ignore_attr = TRUE)
  r6 <- safetensors$new(index)
  expect_identical(r6$keys(), names(x))
  expect_identical(r6$get_tensor("b1"), eager$b1)
  h <- safe_open(index)
  expect_snapshot(print(h), transform = function(x) gsub(dir, "<dir>", x, fixed = TRUE))
})

test_that("everything in one shard is written as a single file, as transformers does", {
  dir <- withr::local_tempdir()
  path <- file.path(dir, "model.safetensors")
  out <- safe_save_file(shard_tensors(), path, max_shard_size = "5GB")
  expect_identical(out, path)
  expect_identical(list.files(dir), "model.safetensors")
  out <- safe_save_file(shard_tensors(), file.path(dir, "m.safetensors.index.json"), max_shard_size = 1e9)
  expect_identical(out, file.path(dir, "m.safetensors"))
})

test_that("a tensor larger than the shard size gets a shard of its own", {
  expect_identical(group_by_size(c(5, 50, 5, 5), 10), c(1L, 2L, 3L, 3L))
  expect_identical(group_by_size(c(4, 4, 4), 8), c(1L, 1L, 2L))
  expect_identical(group_by_size(numeric(0), 8), integer(0))
  dir <- withr::local_tempdir()
  index <- safe_save_file(list(a = 1, big = as.numeric(1:100), c = 2), dir, max_shard_size = 100)
  expect_identical(safe_info(index)$file, sprintf("model-%05d-of-00003.safetensors", 1:3))
})

test_that("shard sizes parse like transformers' sizes", {
  expect_identical(parse_size("5GB"), 5e9)
  expect_identical(parse_size("5gb"), 5e9)
  expect_identical(parse_size("2GiB"), 2 * 2^30)
  expect_identical(parse_size("500MB"), 5e8)
  expect_identical(parse_size("10 KiB"), 10240)
  expect_identical(parse_size("1.5kB"), 1500)
  expect_identical(parse_size("123"), 123)
  expect_identical(parse_size(1e6), 1e6)
  for (bad in list("5 parsecs", "GB", "-1GB", 0, -5, NA, c(1, 2), "0.1B", TRUE)) {
    expect_error(parse_size(bad), class = "safetensors_error_invalid_argument")
  }
  expect_error(
    safe_save_file(list(a = 1), withr::local_tempfile(), max_shard_size = "big"),
    class = "safetensors_error_invalid_argument"
  )
  con <- rawConnection(raw(), "wb")
  withr::defer(close(con))
  expect_error(safe_save_file(list(a = 1), con, max_shard_size = 10), class = "safetensors_error_invalid_argument")
})

test_that("a bad shard size is quoted in the message", {
  path <- withr::local_tempfile(fileext = ".safetensors")
  x <- list(a = 1)
  expect_snapshot(error = TRUE, {
    safe_save_file(x, path, max_shard_size = 0)
    safe_save_file(x, path, max_shard_size = -1)
    safe_save_file(x, path, max_shard_size = "5 gigs")
    safe_save_file(x, path, max_shard_size = c(1, 2))
  })
})

test_that("the weight map is an allowlist checked against the shards", {
  dir <- withr::local_tempdir()
  index <- write_index(
    dir,
    list("s1.safetensors" = list(a = 1, hidden = 2), "s2.safetensors" = list(b = 3)),
    list(b = "s2.safetensors", a = "s1.safetensors")
  )
  h <- safe_open(index)
  expect_identical(names(h), c("a", "b"))
  expect_error(h[["hidden"]], class = "safetensors_error_tensor_not_found")
  expect_named(safe_load_file(index), c("a", "b"))

  missing <- write_index(dir, list("s3.safetensors" = list(c = 1)), list(c = "s3.safetensors", d = "s3.safetensors"))
  expect_error(safe_open(missing), class = "safetensors_error_invalid_index")
  expect_error(safe_load_file(missing), class = "safetensors_error_format")
})

test_that("malformed indexes and escaping shard paths are rejected", {
  dir <- withr::local_tempdir()
  sub <- file.path(dir, "sub")
  dir.create(sub)
  safe_save_file(list(a = 1), file.path(dir, "outside.safetensors"))
  index <- file.path(sub, "model.safetensors.index.json")
  bad <- c(
    "{\"weight_map\": {\"a\": \"../outside.safetensors\"}}",
    paste0("{\"weight_map\": {\"a\": \"", file.path(dir, "outside.safetensors"), "\"}}"),
    "{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"x.safetensors\"}}",
    "{\"weight_map\": {\"a\": 1}}",
    "{\"metadata\": {}}",
    "[]",
    "{\"weight_map\": "
  )
  for (text in bad) {
    writeLines(text, index)
    expect_error(safe_open(index), class = "safetensors_error_invalid_index", label = text)
  }
  writeLines("{\"weight_map\": {\"a\": \"gone.safetensors\"}}", index)
  expect_error(safe_open(index), class = "safetensors_error_file_not_found")
  expect_error(safe_open(file.path(dir, "none.index.json")), class = "safetensors_error_file_not_found")
  writeLines("{\"weight_map\": {\"a\": \"../outside.safetensors\"}}", index)
  expect_snapshot(safe_load_file(index), error = TRUE, transform = function(x) gsub(dir, "<dir>", x, fixed = TRUE))
})

test_that("the index is the JSON Python's json.dumps(indent=2, sort_keys=True) writes", {
  skip_without_python()
  dir <- withr::local_tempdir()
  index <- safe_save_file(shard_tensors(), dir, max_shard_size = 200)
  out <- run_python(c(
    "import sys, json",
    "d = json.load(open(sys.argv[1]))",
    "sys.stdout.write(json.dumps(d, indent=2, sort_keys=True) + '\\n')"
  ), index)
  expect_identical(out, readLines(index))
})

# The tensors of a checkpoint set `k` (`n` tensors of 400 bytes each).
set_tensors <- function(k, n) {
  structure(
    lapply(seq_len(n), function(i) seq(k * 1000 + i, by = 1, length.out = 50)),
    names = sprintf("layer.%d.weight", seq_len(n))
  )
}

# The files of folder `dir` that make up checkpoints (shards and index).
checkpoint_files <- function(dir) {
  sort(list.files(dir, pattern = "safetensors"))
}

test_that("saving into a folder replaces the checkpoint that was there, as a whole", {
  dir <- withr::local_tempdir()
  writeLines("{}", file.path(dir, "config.json"))
  load_dir <- function() lapply(safe_load_file(dir), as.vector)
  # Three shards, then four, then four again, then two tensors in one file.
  safe_save_file(set_tensors(1, 6), dir, max_shard_size = 800)
  expect_identical(checkpoint_files(dir), c(sprintf("model-%05d-of-00003.safetensors", 1:3), "model.safetensors.index.json"))
  expect_identical(load_dir(), lapply(set_tensors(1, 6), as.vector))

  safe_save_file(set_tensors(2, 8), dir, max_shard_size = 800)
  expect_identical(checkpoint_files(dir), c(sprintf("model-%05d-of-00004.safetensors", 1:4), "model.safetensors.index.json"))
  expect_identical(load_dir(), lapply(set_tensors(2, 8), as.vector))

  # The same shard names as the checkpoint there: the standard names
  # again (the new shards wait under temporary names until the new index
  # is in place).
  safe_save_file(set_tensors(3, 7), dir, max_shard_size = 800)
  expect_identical(checkpoint_files(dir), c(sprintf("model-%05d-of-00004.safetensors", 1:4), "model.safetensors.index.json"))
  expect_identical(load_dir(), lapply(set_tensors(3, 7), as.vector))
  safe_save_file(set_tensors(4, 8), dir, max_shard_size = 800)
  expect_identical(checkpoint_files(dir), c(sprintf("model-%05d-of-00004.safetensors", 1:4), "model.safetensors.index.json"))

  # Everything fits in one file: the index and the shards go.
  safe_save_file(set_tensors(5, 2), dir, max_shard_size = 800)
  expect_identical(checkpoint_files(dir), "model.safetensors")
  expect_identical(load_dir(), lapply(set_tensors(5, 2), as.vector))
  # And back to shards: the single file goes.
  safe_save_file(set_tensors(6, 4), dir, max_shard_size = 800)
  expect_identical(checkpoint_files(dir), c(sprintf("model-%05d-of-00002.safetensors", 1:2), "model.safetensors.index.json"))
  # Without max_shard_size, a folder gets one file.
  safe_save_file(set_tensors(7, 3), dir)
  expect_identical(checkpoint_files(dir), "model.safetensors")
  expect_identical(load_dir(), lapply(set_tensors(7, 3), as.vector))
  # Other files are left alone.
  expect_true(file.exists(file.path(dir, "config.json")))
})

test_that("a folder loads through its index, else its model.safetensors", {
  dir <- withr::local_tempdir()
  expect_error(safe_load_file(dir), class = "safetensors_error_file_not_found")
  safe_save_file(set_tensors(1, 4), dir, max_shard_size = 800, metadata = list(k = "v"))
  want <- safe_load_file(file.path(dir, "model.safetensors.index.json"))
  expect_identical(safe_load_file(dir), want)
  h <- safe_open(dir)
  expect_identical(names(h), names(want))
  expect_identical(h[["layer.2.weight"]], want[["layer.2.weight"]])
  close(h)
  expect_identical(safe_info(dir)$name, names(want))
  expect_identical(safe_metadata(dir), c(k = "v"))
  expect_identical(safetensors$new(dir)$keys(), names(want))
  safe_save_file(list(a = 1), dir)
  expect_identical(names(safe_load_file(dir)), "a")
  expect_identical(safe_info(dir)$name, "a")
})

test_that("a save killed at any point leaves the old checkpoint or the new one, never a mix", {
  skip_on_cran()
  skip_if_not_installed("callr")
  dir <- withr::local_tempdir()
  old <- set_tensors(1, 40)
  new <- set_tensors(2, 48)
  # Large enough that the kill lands in the middle: 48 x 2 MB in shards of 8 MB.
  big <- function(x) lapply(x, function(v) rep(v, 5000))
  safe_save_file(big(old), dir, max_shard_size = 8e6)
  want_old <- lapply(big(old), as.vector)
  want_new <- lapply(big(new), as.vector)
  start <- Sys.time()
  bg <- callr::r_bg(function(dir, x) safetensors::safe_save_file(x, dir, max_shard_size = 8e6), list(dir, big(new)), libpath = .libPaths())
  bg$wait()
  full <- as.numeric(Sys.time() - start, units = "secs")
  expect_identical(lapply(safe_load_file(dir), as.vector), want_new)
  seen <- character()
  for (frac in c(0.1, 0.3, 0.5, 0.7, 0.85, 0.95)) {
    safe_save_file(big(if (length(seen) %% 2 == 0) old else new), dir, max_shard_size = 8e6)
    before <- lapply(safe_load_file(dir), as.vector)
    after <- if (identical(before, want_old)) want_new else want_old
    bg <- callr::r_bg(
      function(dir, x) safetensors::safe_save_file(x, dir, max_shard_size = 8e6),
      list(dir, if (identical(after, want_new)) big(new) else big(old)),
      libpath = .libPaths()
    )
    Sys.sleep(frac * full)
    bg$kill()
    got <- lapply(safe_load_file(dir), as.vector)
    state <- if (identical(got, before)) "old" else if (identical(got, after)) "new" else "mix"
    expect_true(state %in% c("old", "new"), label = sprintf("killed after %.0f%%", 100 * frac))
    seen <- c(seen, state)
  }
  # Some kills landed before the commit and some after.
  expect_true("old" %in% seen)
})

# Every file of folder `dir`, dot files included.
all_files <- function(dir) {
  sort(list.files(dir, all.files = TRUE, no.. = TRUE, recursive = TRUE))
}

# `x` as loaded back: plain vectors by name.
as_values <- function(x) lapply(x, as.vector)

test_that("whatever form a save takes, the path it was given and its folder load what it saved", {
  dir <- withr::local_tempdir()
  writeLines("{}", file.path(dir, "config.json"))
  file <- file.path(dir, "model.safetensors")
  sets <- lapply(1:8, function(k) set_tensors(k, 3 + k %% 3))
  # (path, shard size): a single file or shards, to the file path, the
  # folder or the index path, each over what the one before left.
  forms <- list(
    list(file, "1kB"), list(file, NULL), list(dir, "1kB"), list(file, "1kB"), list(dir, NULL),
    list(file.path(dir, "model.safetensors.index.json"), "1kB"), list(file, NULL), list(dir, "1kB")
  )
  for (k in seq_along(forms)) {
    path <- forms[[k]][[1]]
    size <- forms[[k]][[2]]
    out <- safe_save_file(sets[[k]], path, max_shard_size = size)
    want <- as_values(sets[[k]])
    label <- sprintf("save %d to %s, max_shard_size %s", k, basename(path), format(size %||% "NULL"))
    for (p in unique(c(path, dir, file, out))) {
      expect_identical(as_values(safe_load_file(p)), want, label = paste(label, "- load", basename(p)))
      expect_identical(safe_info(p)$name, names(want), label = label)
      h <- safe_open(p)
      expect_identical(names(h), names(want), label = label)
      close(h)
    }
    sharded <- !is.null(size) && length(want) > 2
    expected_files <- if (sharded) {
      n <- length(unique(safe_info(out)$file))
      c(sprintf("model-%05d-of-%05d.safetensors", seq_len(n), n), "model.safetensors.index.json")
    } else {
      "model.safetensors"
    }
    expect_identical(all_files(dir), sort(c("config.json", expected_files)), label = label)
  }
})

test_that("the issue's case: a single file saved over shards replaces them", {
  d <- withr::local_tempdir()
  path <- file.path(d, "model.safetensors")
  safe_save_file(list(old_a = runif(300), old_b = runif(300)), path, max_shard_size = "3kB")
  # No file at the path: it loads through the index beside it.
  expect_named(safe_load_file(path), c("old_a", "old_b"))
  safe_save_file(list(new = 1:10), path)
  expect_identical(all_files(d), "model.safetensors")
  expect_named(safe_load_file(d), "new")
  expect_identical(safe_info(d)$name, "new")
  # Files the old index didn't name stay.
  safe_save_file(list(old_a = runif(300), old_b = runif(300)), path, max_shard_size = "3kB")
  writeLines("x", file.path(d, "model-00009-of-00009.safetensors"))
  safe_save_file(list(new = 1:10), path)
  expect_identical(all_files(d), c("model-00009-of-00009.safetensors", "model.safetensors"))
})

test_that("a failed sharded save leaves the old checkpoint as it was and no new file; its error names the shard", {
  dir <- withr::local_tempdir()
  safe_save_file(set_tensors(1, 6), dir, max_shard_size = 800)
  before <- all_files(dir)
  bytes <- lapply(file.path(dir, before), read_bytes)
  check_intact <- function(label) {
    expect_identical(all_files(dir), before, label = label)
    expect_identical(lapply(file.path(dir, before), read_bytes), bytes, label = label)
  }
  # The third tensor can't be converted: two shards were written already.
  x <- set_tensors(2, 6)
  x[[3]][[2]] <- NA
  x[3] <- list(as.integer(x[[3]]))
  cnd <- expect_error(safe_save_file(x, dir, max_shard_size = 800, dtype = c(layer.3.weight = "I32")), class = "safetensors_error_conversion")
  check_intact("conversion error")
  expect_match(conditionMessage(cnd), "model-00002-of-00003.safetensors", fixed = TRUE)
  expect_snapshot(
    safe_save_file(x, dir, max_shard_size = 800, dtype = c(layer.3.weight = "I32")),
    error = TRUE,
    transform = function(s) gsub(dir, "<dir>", s, fixed = TRUE)
  )
  check_intact("snapshot")
  # An error in the middle of the save (as an interrupt is): a framework
  # tensor whose bytes can't be had, in the third shard.
  registerS3method("safe_tensor_meta", "st_failing_tensor", function(x) list(shape = list(50), dtype = "F64"))
  registerS3method("safe_tensor_buffer", "st_failing_tensor", function(x) stop("no bytes today"))
  y <- set_tensors(3, 6)
  y[[5]] <- structure(list(), class = "st_failing_tensor")
  expect_error(safe_save_file(y, dir, max_shard_size = 800), "no bytes today")
  check_intact("an error between shards")
  # The next save works and leaves only its files.
  safe_save_file(set_tensors(4, 2), dir, max_shard_size = 800)
  expect_identical(all_files(dir), "model.safetensors")
})

test_that("a full disk fails a sharded save and leaves the old checkpoint as it was", {
  skip_on_cran()
  skip_if_not(Sys.info()[["sysname"]] == "Linux" && Sys.info()[["effective_user"]] == "root", "needs root on Linux")
  dir <- withr::local_tempdir()
  ok <- suppressWarnings(system2("mount", c("-t", "tmpfs", "-o", "size=256k", "tmpfs", shQuote(dir)), stdout = FALSE, stderr = FALSE))
  skip_if(ok != 0, "can't mount a tmpfs here")
  withr::defer(system2("umount", shQuote(dir)))
  safe_save_file(set_tensors(1, 6), dir, max_shard_size = 800)
  before <- all_files(dir)
  bytes <- lapply(file.path(dir, before), read_bytes)
  big <- lapply(1:6, function(i) runif(10000))
  names(big) <- sprintf("w%d", 1:6)
  cnd <- expect_error(safe_save_file(big, dir, max_shard_size = 1e5), class = "safetensors_error_io")
  expect_no_match(conditionMessage(cnd), "\\.tmp", fixed = FALSE)
  expect_identical(all_files(dir), before)
  expect_identical(lapply(file.path(dir, before), read_bytes), bytes)
  safe_save_file(set_tensors(2, 6), dir, max_shard_size = 800)
  expect_identical(as_values(safe_load_file(dir)), as_values(set_tensors(2, 6)))
  # A read-only file system (which root can't write either).
  before <- all_files(dir)
  bytes <- lapply(file.path(dir, before), read_bytes)
  skip_if(system2("mount", c("-o", "remount,ro", shQuote(dir)), stdout = FALSE, stderr = FALSE) != 0, "can't remount read-only")
  expect_error(safe_save_file(set_tensors(3, 6), dir, max_shard_size = 800), class = "safetensors_error_io")
  expect_error(safe_save_file(set_tensors(3, 2), dir), class = "safetensors_error_io")
  expect_snapshot(safe_save_file(set_tensors(3, 2), dir), error = TRUE, transform = function(s) gsub(dir, "<dir>", s, fixed = TRUE))
  expect_identical(all_files(dir), before)
  expect_identical(lapply(file.path(dir, before), read_bytes), bytes)
})

test_that("a folder that can't be written fails the save, classed, and leaves it as it was", {
  skip_on_cran()
  skip_on_os("windows")
  skip_if(Sys.info()[["effective_user"]] == "root", "root writes to read-only folders")
  dir <- withr::local_tempdir()
  safe_save_file(set_tensors(1, 6), dir, max_shard_size = 800)
  before <- all_files(dir)
  Sys.chmod(dir, "555")
  withr::defer(Sys.chmod(dir, "755"))
  expect_error(safe_save_file(set_tensors(2, 6), dir, max_shard_size = 800), class = "safetensors_error_io")
  expect_error(safe_save_file(set_tensors(2, 2), dir), class = "safetensors_error_io")
  expect_identical(all_files(dir), before)
})

test_that("readers during saves get one whole checkpoint or the other, never a mix, and no warnings", {
  skip_on_cran()
  skip_if_not_installed("callr")
  dir <- withr::local_tempdir()
  a <- set_tensors(1, 8)
  b <- set_tensors(2, 8)
  c1 <- set_tensors(3, 3)
  safe_save_file(a, dir, max_shard_size = 800)
  wants <- list(as_values(a), as_values(b), as_values(c1))
  # Two writers alternate between a sharded set, another sharded set of
  # the same names, and a single file, for a few seconds each.
  writer <- function(dir, sets, secs) {
    end <- Sys.time() + secs
    k <- 0
    while (Sys.time() < end) {
      k <- k + 1
      x <- sets[[k %% length(sets) + 1]]
      safetensors::safe_save_file(x, dir, max_shard_size = if (length(x) > 3) 800)
    }
    k
  }
  secs <- 4
  w1 <- callr::r_bg(writer, list(dir, list(a, b, c1), secs), libpath = .libPaths())
  w2 <- callr::r_bg(writer, list(dir, list(b, c1, a), secs), libpath = .libPaths())
  withr::defer({
    w1$kill()
    w2$kill()
  })
  loads <- 0
  bad <- 0
  warned <- 0
  end <- Sys.time() + secs
  while (Sys.time() < end) {
    got <- withCallingHandlers(
      tryCatch(as_values(safe_load_file(dir)), error = function(e) e),
      warning = function(w) {
        warned <<- warned + 1
        invokeRestart("muffleWarning")
      }
    )
    loads <- loads + 1
    if (inherits(got, "error") || !any(vapply(wants, identical, logical(1), got))) {
      bad <- bad + 1
    }
  }
  w1$wait(30000)
  w2$wait(30000)
  saves <- w1$get_result() + w2$get_result()
  expect_gt(saves, 10)
  expect_gt(loads, 10)
  expect_identical(c(bad = bad, warned = warned), c(bad = 0, warned = 0))
  # Once the saves end, the folder holds one checkpoint and nothing else.
  final <- as_values(safe_load_file(dir))
  expect_true(any(vapply(wants, identical, logical(1), final)))
  expect_false(any(grepl("^\\.", all_files(dir))))
})

test_that("a shard set replaced while its shards are opened is read again, not reported as a bad index", {
  dir <- withr::local_tempdir()
  index <- safe_save_file(set_tensors(1, 6), dir, max_shard_size = 800)
  old <- read_index(index)
  # Another save: other tensors in shards of the same names.
  other <- setNames(set_tensors(2, 6), sprintf("other.%d", 1:6))
  safe_save_file(other, dir, max_shard_size = 800)
  cnd <- expect_error(stop_if_replaced(index, old, index, NULL), class = "safetensors_error_file_changed")
  expect_true(cnd$checkpoint_changed)
  expect_silent(stop_if_replaced(index, read_index(index), index, NULL))
  # A reader that read the old index and then opens the new shards finds
  # them without its tensors: the index changed, so it says so (and a
  # read starts over), instead of calling the index malformed.
  local({
    local_package_function("read_index", function(path, call) old)
    expect_error(open_shard_set(index, "read"), class = "safetensors_error_file_changed")
  })
  expect_named(safe_load_file(dir), names(other))
})

test_that("a checkpoint replaced while it is opened says so", {
  dir <- withr::local_tempdir()
  index <- safe_save_file(set_tensors(1, 6), dir, max_shard_size = 800)
  old <- read_index(index)
  h <- open_shard_set(index, "read")
  withr::defer(for (p in h$parts) close_part(p))
  expect_silent(stop_if_replaced(index, old, index, NULL, h$parts))
  # The same tensors saved again: the same index bytes, other shard files.
  safe_save_file(set_tensors(1, 6), dir, max_shard_size = 800)
  expect_identical(read_index(index), old)
  expect_error(stop_if_replaced(index, old, index, NULL, h$parts), class = "safetensors_error_file_changed")
  expect_snapshot(stop_if_replaced(index, old, index, NULL, h$parts), error = TRUE, transform = function(s) gsub(dir, "<dir>", s, fixed = TRUE))
})

test_that("a save killed while renaming its shards leaves a checkpoint readers read whole, which the next save finishes", {
  dir <- withr::local_tempdir()
  x <- set_tensors(1, 6)
  index <- safe_save_file(x, dir, max_shard_size = 800)
  # As a save killed after its commit leaves the folder: the index names
  # its save id, and a shard is still under its temporary name.
  id <- strrep("0123456789abcdef", 2)
  idx <- jsonlite::read_json(index)
  idx$metadata$save_id <- id
  jsonlite::write_json(idx, index, auto_unbox = TRUE)
  shard <- "model-00003-of-00003.safetensors"
  pending <- paste0(".", shard, ".", id, ".tmp")
  file.rename(file.path(dir, shard), file.path(dir, pending))
  expect_identical(as_values(safe_load_file(dir)), as_values(x))
  expect_identical(as_values(safe_load_file(file.path(dir, "model.safetensors"))), as_values(x))
  h <- safe_open(dir)
  expect_identical(as.vector(h[["layer.6.weight"]]), as.vector(x[["layer.6.weight"]]))
  close(h)
  # Any save to the name first renames it into place (and then replaces
  # the checkpoint); here one that fails, so the checkpoint stays.
  expect_error(safe_save_file(list(a = c(1L, NA)), dir, dtype = c(a = "I32")), class = "safetensors_error_conversion")
  expect_identical(all_files(dir), c(sprintf("model-%05d-of-00003.safetensors", 1:3), "model.safetensors.index.json"))
  expect_identical(as_values(safe_load_file(dir)), as_values(x))
})
