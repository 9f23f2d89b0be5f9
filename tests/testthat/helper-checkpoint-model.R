# A model of what checkpoints hold, and the driver that runs random
# operations against the package and the model (test-checkpoint-model.R).
#
# Two checkpoints are modelled: "model" in folder `a` (saved through the
# folder, its model.safetensors and its index path) and "weights" in
# folder `b` (saved through b/weights.safetensors). Each folder also holds
# a file of the user's that no save may touch. The model of a checkpoint is
# the tensors (as they load back) and metadata of the last save that
# succeeded, and the files that save left: its single file, or its index
# and shards.
#
# Operations: saves (single file or shards, through each path), saves that
# fail on a value mid-way, saves that fail on a full disk (the folders are
# a small tmpfs when one can be mounted), saves killed at a random moment
# in a child process, loads (safe_load_file(), safe_info(), safe_open()
# with a slice, safe_metadata()) through every path, and saves and loads
# from concurrent processes. After every step each checkpoint loads as
# its model through every path, and its folder holds its files and the
# user's, nothing else; after a kill, until the next save to that
# checkpoint, also what a killed save may leave: temporary files
# (`.NAME.<id>.tmp`, `.NAME.index.json.<id>.old`, `.NAME.<pid>-<n>.tmp`)
# and files of the checkpoint it replaced.
#
# Replay: SAFETENSORS_MODEL_SEED sets the seed, SAFETENSORS_MODEL_STEPS
# the number of steps; a failure reports both and the step.

model_seed <- function() {
  s <- Sys.getenv("SAFETENSORS_MODEL_SEED")
  if (nzchar(s)) as.integer(s) else 20250611L
}

model_steps <- function(default = 300L) {
  s <- Sys.getenv("SAFETENSORS_MODEL_STEPS")
  if (nzchar(s)) as.integer(s) else default
}

# The tensors `x` as they load: plain vectors and arrays, without the
# "dtype" attribute, by name.
model_values <- function(x) {
  lapply(x, function(v) {
    attr(v, "dtype") <- NULL
    v
  })
}

# A random set of tensors to save: names from a pool (one may be the empty
# name), doubles, integers and logicals, and the dtypes to ask for; `big`
# makes about `big` bytes (for saves that should take a while).
random_tensors <- function(big = 0) {
  pool <- c("embed.weight", "layer.0.weight", "layer.0.bias", "layer.1.weight", "layer.1.bias", "norm.weight", "lm_head.weight", "", "step", "mask")
  n <- sample(1:7, 1)
  nms <- sample(pool, n)
  x <- lapply(nms, function(nm) {
    switch(nm,
      step = sample.int(1000, 1),
      mask = sample(c(TRUE, FALSE), sample(1:40, 1), replace = TRUE),
      {
        len <- sample(c(1, 8, 50, 200, 600), 1)
        v <- round(rnorm(len), 3)
        if (len > 1 && runif(1) < 0.5) dim(v) <- c(len / 2, 2)
        v
      }
    )
  })
  names(x) <- nms
  if (big > 0) {
    k <- max(2, ceiling(big / 8e5))
    extra <- lapply(seq_len(k), function(i) runif(1e5))
    names(extra) <- sprintf("big.%02d", seq_len(k))
    x <- c(x, extra)
  }
  dtype <- NULL
  if (runif(1) < 0.3) {
    dtype <- sample(c("F32", "F16", "BF16"), 1)
    if (!any(vapply(x, is.double, logical(1)))) dtype <- NULL
  }
  meta <- if (runif(1) < 0.5) list(format = "pt", run = as.character(sample.int(1e6, 1)))
  list(tensors = x, dtype = dtype, metadata = meta)
}

# What loading `set` gives back, through a raw vector.
expected_of <- function(set) {
  bytes <- safe_serialize(set$tensors, dtype = set$dtype, metadata = set$metadata)
  list(values = model_values(safe_deserialize(bytes)), metadata = safe_metadata(bytes))
}

# The files of checkpoint `stem` in its folder after a save of `n_shards`
# shards (0 or 1: a single file).
checkpoint_names <- function(stem, n_shards) {
  if (n_shards <= 1) {
    return(paste0(stem, ".safetensors"))
  }
  c(sprintf("%s-%05d-of-%05d.safetensors", stem, seq_len(n_shards), n_shards), paste0(stem, ".safetensors.index.json"))
}

# What a killed save may leave in a folder, besides files of the
# checkpoint it replaced: the temporary files of saves.
is_save_leftover <- function(files) {
  grepl("^\\..+\\.[0-9a-f]{32}\\.(tmp|old)$", files) | grepl("^\\..+\\.[0-9]+-[0-9]+\\.tmp$", files)
}

# A driver: the folders, the model of each checkpoint, and the steps.
new_checkpoint_model <- function(root, seed) {
  a <- file.path(root, "a")
  b <- file.path(root, "b")
  dir.create(a)
  dir.create(b)
  writeLines("{\"model_type\": \"test\"}", file.path(a, "config.json"))
  writeLines("keep me", file.path(b, "notes.txt"))
  cks <- list(
    model = list(
      dir = a, stem = "model", user = "config.json",
      paths = c(folder = a, file = file.path(a, "model.safetensors"), index = file.path(a, "model.safetensors.index.json"))
    ),
    weights = list(dir = b, stem = "weights", user = "notes.txt", paths = c(file = file.path(b, "weights.safetensors")))
  )
  for (k in names(cks)) {
    cks[[k]]$want <- NULL
    cks[[k]]$files <- character()
    # After a kill: the files of the checkpoint before it, and leftovers,
    # may be there until the next save.
    cks[[k]]$stale <- NULL
  }
  env <- new.env()
  env$cks <- cks
  env$seed <- seed
  env$step <- 0L
  env$log <- character()
  env$counts <- list()
  env
}

# Records that step `what` ran.
model_count <- function(m, what) {
  m$counts[[what]] <- (m$counts[[what]] %||% 0L) + 1L
}

# Fails with the seed and step, so that the run can be replayed.
model_fail <- function(m, what) {
  stop(sprintf(
    "checkpoint model: %s\n  at step %d of seed %d; replay with SAFETENSORS_MODEL_SEED=%d SAFETENSORS_MODEL_STEPS=%d\n  last steps: %s",
    what, m$step, m$seed, m$seed, m$step, paste(utils::tail(m$log, 8), collapse = " | ")
  ), call. = FALSE)
}

# The paths that load checkpoint `ck` as the model has it: all of them,
# but the index path only when the checkpoint is sharded (a single file
# has no index).
model_paths <- function(ck) {
  sharded <- any(grepl("\\.index\\.json$", ck$files))
  ck$paths[sharded | names(ck$paths) != "index"]
}

# The paths that load checkpoint `ck` whatever its form.
any_form_paths <- function(ck) {
  ck$paths[names(ck$paths) != "index"]
}

# A save that succeeded: the model takes its tensors and files.
model_saved <- function(m, k, set, out) {
  ck <- m$cks[[k]]
  ck$want <- expected_of(set)
  files <- if (is_index_path(out)) unique(safe_info(out)$file) else character()
  ck$files <- checkpoint_names(ck$stem, length(files))
  ck$stale <- NULL
  m$cks[[k]] <- ck
}

# Checks every checkpoint against the model: loads through every path,
# and the folder's files.
model_check <- function(m, thorough = TRUE) {
  for (k in names(m$cks)) {
    ck <- m$cks[[k]]
    files <- list.files(ck$dir, all.files = TRUE, no.. = TRUE)
    if (is.null(ck$want)) {
      extra <- setdiff(files, ck$user)
      if (!is.null(ck$stale)) extra <- extra[!is_save_leftover(extra) & !extra %in% ck$stale]
      if (length(extra) > 0) model_fail(m, sprintf("%s: files %s before any save", k, paste(extra, collapse = ", ")))
      next
    }
    allowed <- c(ck$files, ck$user)
    extra <- setdiff(files, allowed)
    missing <- setdiff(allowed, files)
    if (!is.null(ck$stale)) {
      extra <- extra[!is_save_leftover(extra) & !extra %in% ck$stale]
      # A save killed while it renamed its shards leaves the rest under
      # their temporary names, where readers read them, until the next save.
      pending <- vapply(missing, function(f) any(grepl(paste0("^\\.", gsub(".", "\\.", f, fixed = TRUE), "\\.[0-9a-f]{32}\\.tmp$"), files)), logical(1))
      missing <- missing[!pending]
    }
    if (length(extra) > 0 || length(missing) > 0) {
      model_fail(m, sprintf(
        "%s: the folder holds %s; the model says %s",
        k, paste(files, collapse = ", "), paste(allowed, collapse = ", ")
      ))
    }
    paths <- model_paths(ck)
    if (!thorough) paths <- paths[sample(length(paths), 1)]
    for (p in paths) {
      got <- tryCatch(model_values(safe_load_file(p)), error = function(e) e)
      if (!identical(got, ck$want$values)) {
        model_fail(m, sprintf("%s: loading %s gave %s", k, p, if (inherits(got, "error")) conditionMessage(got) else "other tensors"))
      }
    }
  }
}

# Loads through every reading function and path, checked against the model.
model_read <- function(m, k) {
  ck <- m$cks[[k]]
  if (is.null(ck$want)) {
    return(invisible())
  }
  paths <- model_paths(ck)
  p <- paths[[sample(length(paths), 1)]]
  info <- safe_info(p)
  if (!identical(info$name, names(ck$want$values))) model_fail(m, sprintf("%s: safe_info(%s) names other tensors", k, p))
  if (!identical(safe_metadata(p), ck$want$metadata)) model_fail(m, sprintf("%s: safe_metadata(%s) differs", k, p))
  h <- safe_open(p)
  on.exit(close(h))
  i <- sample(length(ck$want$values), 1)
  want <- ck$want$values[[i]]
  got <- h[[i]]
  attr(got, "dtype") <- NULL
  if (!identical(got, want)) model_fail(m, sprintf("%s: safe_open(%s)[[%d]] differs", k, p, i))
  if (length(dim(want)) == 2) {
    sl <- h$slice(i)[1, , drop = FALSE]
    attr(sl, "dtype") <- NULL
    if (!identical(sl, want[1, , drop = FALSE])) model_fail(m, sprintf("%s: a slice of tensor %d through %s differs", k, i, p))
  }
}

# A save to a random path of checkpoint `k`.
model_save <- function(m, k, set = random_tensors()) {
  ck <- m$cks[[k]]
  p <- ck$paths[[sample(length(ck$paths), 1)]]
  size <- sample(list(NULL, 600, 2000, "1GB"), 1)[[1]]
  if (is.null(size) && is_index_path(p)) size <- 2000
  m$log <- c(m$log, sprintf("%d save %s shard %s", m$step, basename(p), format(size %||% "NULL")))
  out <- safe_save_file(set$tensors, p, metadata = set$metadata, dtype = set$dtype, max_shard_size = size)
  model_saved(m, k, set, out)
}

# A save that fails on a value in its last tensors (NA as I32): an error of
# class safetensors_error_conversion, and nothing changes.
model_save_conversion_error <- function(m, k) {
  ck <- m$cks[[k]]
  set <- random_tensors()
  bad <- c(set$tensors, list(zz.bad = c(1L, NA, 3L)))
  p <- ck$paths[[sample(length(ck$paths), 1)]]
  size <- sample(list(NULL, 600), 1)[[1]]
  if (is.null(size) && is_index_path(p)) size <- 600
  m$log <- c(m$log, sprintf("%d failing save %s", m$step, basename(p)))
  res <- tryCatch(safe_save_file(bad, p, max_shard_size = size), error = function(e) e)
  if (!inherits(res, "safetensors_error_conversion")) model_fail(m, "a save with NA in an I32 tensor did not fail with a conversion error")
  if (grepl(".tmp", conditionMessage(res), fixed = TRUE)) model_fail(m, "an error names a temporary file")
  # It began, so it cleaned up after a killed save before it failed.
  m$cks[[k]]$stale <- NULL
}

# A save too large for the folder's file system (a tmpfs of `space` bytes):
# an error of class safetensors_error_io, and nothing changes.
model_save_disk_full <- function(m, k, space) {
  ck <- m$cks[[k]]
  x <- lapply(1:4, function(i) runif(space / 8 / 3))
  names(x) <- sprintf("huge.%d", 1:4)
  p <- ck$paths[[sample(length(ck$paths), 1)]]
  size <- sample(list(NULL, space / 4), 1)[[1]]
  m$log <- c(m$log, sprintf("%d disk-full save %s", m$step, basename(p)))
  res <- tryCatch(safe_save_file(x, p, max_shard_size = size), error = function(e) e)
  if (!inherits(res, "safetensors_error_io")) {
    model_fail(m, sprintf("a save larger than the disk gave %s", if (inherits(res, "error")) class(res)[[1]] else "no error"))
  }
  if (grepl(".tmp", conditionMessage(res), fixed = TRUE)) model_fail(m, "an error names a temporary file")
  m$cks[[k]]$stale <- NULL
}

# How long a save of `set` takes in a child process: calibrates the kills.
model_time_child_save <- function(m, k, set) {
  ck <- m$cks[[k]]
  scratch <- file.path(dirname(ck$dir), "scratch")
  dir.create(scratch, showWarnings = FALSE)
  child <- start_saving_child(file.path(scratch, "model.safetensors"), set, 4e5)
  t <- wait_child_started(child)
  child$proc$wait(60000)
  elapsed <- as.numeric(Sys.time() - t, units = "secs")
  unlink(scratch, recursive = TRUE)
  elapsed
}

# A child process that saves `set` to `path` once it signals it started.
start_saving_child <- function(path, set, size) {
  flag <- tempfile("started")
  proc <- callr::r_bg(
    function(path, set, size, flag) {
      library(safetensors)
      file.create(flag)
      safe_save_file(set$tensors, path, metadata = set$metadata, dtype = set$dtype, max_shard_size = size)
      TRUE
    },
    list(path, set, size, flag),
    libpath = .libPaths()
  )
  list(proc = proc, flag = flag)
}

wait_child_started <- function(child) {
  deadline <- Sys.time() + 60
  while (!file.exists(child$flag) && child$proc$is_alive() && Sys.time() < deadline) Sys.sleep(0.002)
  Sys.time()
}

# A large save in a child process, killed (SIGKILL) at a random moment:
# after a random delay within about its duration, or as soon as its first
# temporary file appears (mid-write), or as soon as the checkpoint's index
# or single file changes (just after its commit, while it renames shards).
# Afterwards the checkpoint loads as before or as that save, never a mix;
# the folder may hold what the kill left until the next save to the
# checkpoint.
model_save_killed <- function(m, k, duration) {
  ck <- m$cks[[k]]
  set <- random_tensors(big = 4e6)
  p <- ck$paths[[sample(length(ck$paths), 1)]]
  size <- sample(list(NULL, 4e5), 1)[[1]]
  if (is.null(size) && is_index_path(p)) size <- 4e5
  when <- sample(c("delay", "temporary file", "commit"), 1)
  delay <- runif(1, 0, 1.2 * duration)
  m$log <- c(m$log, sprintf(
    "%d killed save %s shard %s at %s", m$step, basename(p), format(size %||% "NULL"),
    if (when == "delay") sprintf("%.3f s", delay) else when
  ))
  before <- list.files(ck$dir, all.files = TRUE, no.. = TRUE)
  stamp <- function() {
    f <- file.path(ck$dir, paste0(ck$stem, c(".safetensors", ".safetensors.index.json")))
    file.info(f, extra_cols = FALSE)[, c("size", "mtime")]
  }
  was <- stamp()
  child <- start_saving_child(p, set, size)
  wait_child_started(child)
  if (when == "delay") {
    Sys.sleep(delay)
  } else {
    deadline <- Sys.time() + 30
    repeat {
      hit <- if (when == "commit") {
        !identical(stamp(), was)
      } else {
        any(is_save_leftover(list.files(ck$dir, all.files = TRUE, no.. = TRUE)))
      }
      if (hit || !child$proc$is_alive() || Sys.time() > deadline) break
    }
  }
  child$proc$kill()
  child$proc$wait(5000)
  unlink(child$flag)
  model_count(m, paste("kill at", when))
  new <- expected_of(set)
  got <- tryCatch(model_values(safe_load_file(ck$paths[[1]])), error = function(e) e)
  if (identical(got, new$values) && !identical(got, ck$want$values)) {
    model_count(m, "kill: new")
    files <- if (is_index_path(resolve_folder(ck$paths[[1]]))) unique(safe_info(ck$paths[[1]])$file) else character()
    old_files <- before
    ck$want <- new
    ck$files <- checkpoint_names(ck$stem, length(files))
  } else if (identical(got, ck$want$values) || (is.null(ck$want) && inherits(got, "safetensors_error_file_not_found"))) {
    # As before: the old tensors, or still no checkpoint at all.
    model_count(m, "kill: old")
    old_files <- before
  } else {
    model_fail(m, sprintf("after a kill, %s loads %s", k, if (inherits(got, "error")) conditionMessage(got) else "neither the old nor the new tensors"))
  }
  ck$stale <- setdiff(old_files, ck$user)
  m$cks[[k]] <- ck
}

# Saves from two child processes while this one reads: every load is one
# of the saved sets, complete; afterwards the checkpoint is the last save
# of one of the writers.
model_concurrent_writers <- function(m, k) {
  ck <- m$cks[[k]]
  sets <- lapply(1:2, function(w) lapply(1:4, function(i) random_tensors()))
  if (runif(1) < 0.5) {
    # The second writer saves the first one's tensors with other values:
    # the same names, shapes and dtypes, so the same index bytes.
    sets[[2]] <- lapply(sets[[1]], function(s) {
      s$tensors <- lapply(s$tensors, function(v) if (is.logical(v)) !v else v + 1L)
      s
    })
  }
  m$log <- c(m$log, sprintf("%d two writers", m$step))
  writer <- function(paths, sets) {
    library(safetensors)
    for (i in seq_along(sets)) {
      s <- sets[[i]]
      p <- paths[[(i %% length(paths)) + 1]]
      safe_save_file(s$tensors, p, metadata = s$metadata, dtype = s$dtype, max_shard_size = if (i %% 2 == 0 || grepl("json$", p)) 600)
    }
    TRUE
  }
  procs <- lapply(sets, function(s) callr::r_bg(writer, list(as.list(ck$paths), s), libpath = .libPaths()))
  readable <- any_form_paths(ck)
  allowed <- c(list(ck$want$values), lapply(unlist(sets, recursive = FALSE), function(s) expected_of(s)$values))
  loads <- 0
  while (any(vapply(procs, function(p) p$is_alive(), logical(1)))) {
    got <- withCallingHandlers(
      tryCatch(model_values(safe_load_file(readable[[sample(length(readable), 1)]])), error = function(e) e),
      warning = function(w) model_fail(m, sprintf("a load during saves warned: %s", conditionMessage(w)))
    )
    loads <- loads + 1
    if (inherits(got, "error")) {
      # Before the first save, a folder may hold no checkpoint yet.
      if (!(is.null(ck$want) && inherits(got, "safetensors_error_file_not_found"))) {
        model_fail(m, sprintf("a load during saves failed: %s", conditionMessage(got)))
      }
    } else if (!any(vapply(allowed, identical, logical(1), got))) {
      model_fail(m, "a load during saves mixed two saves")
    }
  }
  m$counts[["concurrent loads"]] <- (m$counts[["concurrent loads"]] %||% 0L) + loads
  for (p in procs) {
    if (!isTRUE(p$get_result())) model_fail(m, "a concurrent writer failed")
  }
  got <- model_values(safe_load_file(ck$paths[[1]]))
  last <- Filter(function(s) identical(expected_of(s)$values, got), list(sets[[1]][[4]], sets[[2]][[4]]))
  if (length(last) == 0) model_fail(m, "after two writers, the checkpoint is neither's last save")
  out <- resolve_folder(ck$paths[[1]])
  model_saved(m, k, last[[1]], out)
}

# Loads from a child process while this one saves: the child's loads are
# each one of the saved sets (it reports a fingerprint of each).
model_concurrent_reader <- function(m, k) {
  ck <- m$cks[[k]]
  if (is.null(ck$want)) {
    return(model_save(m, k))
  }
  m$log <- c(m$log, sprintf("%d a reader during saves", m$step))
  stop_flag <- tempfile("stop")
  reader <- callr::r_bg(function(paths, stop_flag) {
    library(safetensors)
    out <- character()
    while (!file.exists(stop_flag)) {
      x <- tryCatch(safe_load_file(paths[[sample(length(paths), 1)]]), error = function(e) e)
      out <- c(out, if (inherits(x, "error")) paste("error:", conditionMessage(x)) else {
        x <- lapply(x, function(v) {
          attr(v, "dtype") <- NULL
          v
        })
        rlang::hash(x)
      })
    }
    out
  }, list(as.list(any_form_paths(ck)), stop_flag), libpath = .libPaths())
  allowed <- rlang::hash(ck$want$values)
  deadline <- Sys.time() + 10
  while (!reader$is_alive() && Sys.time() < deadline) Sys.sleep(0.01)
  Sys.sleep(0.3)
  for (i in 1:4) {
    set <- random_tensors()
    model_save(m, k, set)
    allowed <- c(allowed, rlang::hash(m$cks[[k]]$want$values))
  }
  file.create(stop_flag)
  reader$wait(30000)
  seen <- reader$get_result()
  unlink(stop_flag)
  m$counts[["concurrent loads"]] <- (m$counts[["concurrent loads"]] %||% 0L) + length(seen)
  bad <- seen[!seen %in% allowed]
  if (length(bad) > 0) model_fail(m, sprintf("a reader in another process got %s", bad[[1]]))
}

# Runs `steps` random steps.
run_checkpoint_model <- function(m, steps, disk_space = NULL, kill_duration = NULL, concurrency = TRUE) {
  kinds <- c(
    save = 34, read = 30, check = 8, conversion_error = 10,
    disk_full = if (!is.null(disk_space)) 5 else 0,
    kill = if (!is.null(kill_duration)) 5 else 0,
    writers = if (concurrency) 2 else 0,
    reader = if (concurrency) 2 else 0
  )
  for (step in seq_len(steps)) {
    m$step <- step
    kind <- sample(names(kinds), 1, prob = kinds)
    k <- sample(names(m$cks), 1)
    model_count(m, kind)
    switch(kind,
      save = model_save(m, k),
      read = model_read(m, k),
      check = model_check(m, thorough = TRUE),
      conversion_error = model_save_conversion_error(m, k),
      disk_full = model_save_disk_full(m, k, disk_space),
      kill = model_save_killed(m, k, kill_duration),
      writers = model_concurrent_writers(m, k),
      reader = model_concurrent_reader(m, k)
    )
    model_check(m, thorough = kind != "read")
  }
  invisible(m)
}
