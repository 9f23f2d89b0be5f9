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
