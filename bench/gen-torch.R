# Writes the data files of the torch cases of the benchmark suite (issue
# 22), with R torch and this package, and their manifest torch.json:
#
#   Rscript bench/gen-torch.R DIR [SCALE]
#
#   f32.safetensors         16 x F32[4096, 4096]    1 GiB of data
#   torchsave.safetensors   the same list, written by torch_save()
#   bf16.safetensors        32 x BF16[2048, 8192]   1 GiB: one shard
#   shards/                 128 x BF16[2048, 8192]  4 GiB in 4 shards of
#                           1 GiB and model.safetensors.index.json
#
# SCALE (default 1) shrinks the rows for a trial run. Existing files are
# kept when the manifest says they were made at the same scale.

args <- commandArgs(trailingOnly = TRUE)
dir <- args[[1]]
scale <- if (length(args) > 1) as.numeric(args[[2]]) else 1
suppressPackageStartupMessages({
  library(torch)
  library(safetensors)
})
dir.create(file.path(dir, "shards"), recursive = TRUE, showWarnings = FALSE)
manifest <- file.path(dir, "torch.json")
if (file.exists(manifest) && identical(jsonlite::fromJSON(manifest)$scale, scale)) {
  quit(save = "no")
}
rows <- function(n) max(1, round(n * scale))
torch_manual_seed(1)
f32 <- setNames(lapply(1:16, function(i) torch_randn(rows(4096), 4096)), sprintf("t%02d", 1:16))
safe_save_file(f32, file.path(dir, "f32.safetensors"), metadata = list(format = "pt"))
torch_save(f32, file.path(dir, "torchsave.safetensors"))
rm(f32)
invisible(gc())
bf16 <- function(n, from = 0) {
  x <- lapply(seq_len(n), function(i) torch_randn(rows(2048), 8192)$to(dtype = torch_bfloat16()))
  setNames(x, sprintf("layers.%d.weight", from + seq_len(n) - 1))
}
safe_save_file(bf16(32), file.path(dir, "bf16.safetensors"), metadata = list(format = "pt"))
invisible(gc())
# 4 shards of 32 tensors each, written one at a time (4 GiB would not need
# to be in memory at once), with the index transformers writes.
shard_names <- sprintf("model-%05d-of-00004.safetensors", 1:4)
weight_map <- list()
for (s in 1:4) {
  x <- bf16(32, (s - 1) * 32)
  safe_save_file(x, file.path(dir, "shards", shard_names[[s]]), metadata = list(format = "pt"))
  weight_map[names(x)] <- shard_names[[s]]
  rm(x)
  invisible(gc())
}
total <- 128 * rows(2048) * 8192 * 2
writeLines(
  jsonlite::toJSON(list(metadata = list(total_size = total), weight_map = weight_map), auto_unbox = TRUE, pretty = TRUE),
  file.path(dir, "shards", "model.safetensors.index.json")
)
writeLines(jsonlite::toJSON(list(
  scale = scale,
  f32 = list(path = file.path(dir, "f32.safetensors"), data_bytes = 16 * rows(4096) * 4096 * 4),
  torchsave = list(path = file.path(dir, "torchsave.safetensors"), data_bytes = 16 * rows(4096) * 4096 * 4),
  bf16 = list(path = file.path(dir, "bf16.safetensors"), data_bytes = 32 * rows(2048) * 8192 * 2),
  shards = list(
    path = file.path(dir, "shards", "model.safetensors.index.json"), dir = file.path(dir, "shards"),
    rows = rows(2048), data_bytes = total
  ),
  save = list(rows = rows(4096), data_bytes = 16 * rows(4096) * 4096 * 4)
), auto_unbox = TRUE, pretty = TRUE), manifest)
