# The checkpoint model (helper-checkpoint-model.R): random sequences of
# saves, failed saves, killed saves, reads and concurrent saves and reads,
# each checked against a model of what every path holds. Seeded: set
# SAFETENSORS_MODEL_SEED and SAFETENSORS_MODEL_STEPS to replay or to run
# longer (a failure prints both).

test_that("every path loads the last save that succeeded, and folders hold only their checkpoints' files", {
  skip_on_cran()
  skip_if_not_installed("callr")
  root <- withr::local_tempdir()
  # A small file system of its own when one can be mounted (root on
  # Linux), so that saves can fail on a full disk.
  space <- 24e6
  mounted <- Sys.info()[["sysname"]] == "Linux" && Sys.info()[["effective_user"]] == "root" &&
    suppressWarnings(system2("mount", c("-t", "tmpfs", "-o", sprintf("size=%d", space), "tmpfs", shQuote(root)), stdout = FALSE, stderr = FALSE)) == 0
  if (mounted) withr::defer(system2("umount", shQuote(root)))
  seed <- model_seed()
  steps <- model_steps()
  withr::local_seed(seed)
  m <- new_checkpoint_model(root, seed)
  # How long a save that gets killed takes, so that kills land all
  # through it.
  duration <- if (.Platform$OS.type == "unix") model_time_child_save(m, "model", random_tensors(big = 4e6))
  t0 <- Sys.time()
  run_checkpoint_model(m, steps, disk_space = if (mounted) space, kill_duration = duration)
  elapsed <- as.numeric(Sys.time() - t0, units = "secs")
  counts <- unlist(m$counts)
  message(sprintf(
    "checkpoint model: seed %d, %d steps in %.0f s (%s)%s",
    seed, steps, elapsed, paste(names(counts), counts, sep = " ", collapse = ", "),
    if (mounted) "" else "; no tmpfs, so no full-disk saves"
  ))
  expect_identical(m$step, steps)
  expect_gt(counts[["save"]], 0)
})
