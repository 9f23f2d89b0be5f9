# A file truncated while it is being read, for real: `race_truncation()`
# runs up to `reps` loads in one child R process (callr), stopping once
# `enough` of them met the truncation, while a second child truncates the
# file at a random moment of each load, and returns what each load gave:
# "ok" (the values were the file's) or its error's classes.
# A crash (a SIGBUS the package did not catch) fails the test.
#
# The file holds `n_tensors` F64 tensors `t1`, `t2`, ... of `n` elements
# each (of shape `dim`, R's, when given), tensor k holding
# (k - 1) * n + 1:n, so that a load is checked by its sums. `load` is a function of the path run in the loading child,
# returning the loaded tensors' sums (NULL if they can't be computed);
# `setup` runs once there first (to attach torch, or build a module). With
# `shards` > 1 the tensors are saved as a shard set of that many shards
# (`load` gets the index) and the shard holding the first tensor of the
# second one is truncated (saves name shards as they choose, so the index
# says which file that is).
#
# The truncation comes at a random moment of the time a load takes until
# the truncated file has been read (all of it for one file, two thirds of
# it for the second of three shards), timed on warm loads: a truncation
# after that can't be met, and a window timed on the first, cold load (R's
# first large allocations, the page cache) let all 12 loads of a shard set
# finish first in about one run in ten.
race_truncation <- function(load, setup = function() NULL, reps = 12, enough = 2, n = 2^21, n_tensors = 12,
                            shards = 1, dim = NULL) {
  skip_on_cran()
  skip_on_os("windows") # Windows refuses to truncate a mapped file.
  skip_if_not_installed("callr")
  if (shards > 1) {
    skip_if_not_installed("jsonlite")
  }
  dir <- withr::local_tempdir()
  path <- file.path(dir, "model.safetensors")
  shard_size <- NULL
  victim <- NULL
  read_share <- 1
  if (shards > 1) {
    shard_size <- ceiling(n_tensors / shards) * n * 8
    victim <- paste0("t", ceiling(n_tensors / shards) + 1)
    read_share <- 2 / shards
  }
  want <- vapply(seq_len(n_tensors), function(k) (k - 1) * n * n + n * (n + 1) / 2, numeric(1))
  truncator <- callr::r_bg(
    function(dir, reps) {
      deadline <- Sys.time() + 120
      for (k in seq_len(reps)) {
        go <- file.path(dir, paste0("go", k))
        while (!file.exists(go) && Sys.time() < deadline) Sys.sleep(0.002)
        # The window in seconds, and the file to truncate.
        order <- readLines(go)
        target <- order[[2]]
        Sys.sleep(stats::runif(1, 0, as.numeric(order[[1]])))
        con <- file(target, "r+b")
        seek(con, file.size(target) %/% 3, rw = "write")
        truncate(con)
        close(con)
        file.create(file.path(dir, paste0("done", k)))
      }
    },
    args = list(dir = dir, reps = reps)
  )
  withr::defer(truncator$kill())
  res <- callr::r(
    function(path, dir, reps, enough, n, n_tensors, want, load, setup, shard_size, victim, read_share, dim) {
      setup()
      write <- function() {
        x <- lapply(seq_len(n_tensors), function(j) {
          values <- (j - 1) * n + seq_len(n)
          if (is.null(dim)) values else array(values, dim)
        })
        names(x) <- paste0("t", seq_len(n_tensors))
        # The index of a shard set, else the file.
        invisible(safetensors::safe_save_file(x, path, sync = FALSE, max_shard_size = shard_size))
      }
      target <- path
      path <- write()
      if (!is.null(victim)) {
        target <- file.path(dir, jsonlite::fromJSON(paste0(target, ".index.json"))$weight_map[[victim]])
      }
      load(path)
      took <- min(replicate(2, system.time(load(path))[["elapsed"]]))
      window <- took * read_share
      out <- character()
      deadline <- Sys.time() + 120
      for (k in seq_len(reps)) {
        write()
        # Complete before the other child sees it.
        writeLines(c(format(window), target), file.path(dir, "go"))
        file.rename(file.path(dir, "go"), file.path(dir, paste0("go", k)))
        out[[k]] <- tryCatch(
          {
            sums <- load(path)
            if (isTRUE(all.equal(unname(sums), want, tolerance = 0))) "ok" else "wrong values"
          },
          error = function(e) paste(class(e), collapse = " ")
        )
        while (!file.exists(file.path(dir, paste0("done", k))) && Sys.time() < deadline) Sys.sleep(0.002)
        if (sum(out != "ok") >= enough) {
          break
        }
      }
      out
    },
    args = list(
      path = path, dir = dir, reps = reps, enough = enough, n = n, n_tensors = n_tensors, want = want,
      load = load, setup = setup, shard_size = shard_size, victim = victim, read_share = read_share, dim = dim
    ),
    libpath = .libPaths()
  )
  res
}

# Every load gave the file's values or a classed error of the package, and
# at least one met the truncation. Which error depends on when the
# truncation came: safetensors_error_file_changed where a read noticed it
# (the bytes under a map vanished, or a positioned read came up short);
# a reader of a path that then finds the file changed (read_checkpoint())
# reads it again and reports what is wrong with the truncated file.
expect_race_safe <- function(res) {
  ok <- res == "ok" | grepl("safetensors_error", res, fixed = TRUE)
  expect_true(all(ok), label = paste(res, collapse = "; "))
  expect_true(any(res != "ok"), label = paste(res, collapse = "; "))
}
