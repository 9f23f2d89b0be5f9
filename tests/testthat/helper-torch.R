# Skips unless R torch and its LibTorch are installed.
skip_if_no_torch <- function() {
  skip_if_not_installed("torch")
  skip_if_not(torch::torch_is_installed(), "LibTorch is not installed")
}

# Reads tensor `name` of `part` (an open part of a handle) into `dest`, an
# existing torch tensor of its shape (any dtype, layout and device), piece
# by piece as safe_load_model() does, in pieces of at most `chunk` bytes.
# Returns `dest`.
torch_read_piecewise <- function(part, name, dest, chunk) {
  i <- match(name, part$info$name)
  torch::with_no_grad(safetensors:::read_part_pieces(
    part, name, part$info$dtype[i], part$info$shape[i],
    target = function(j) dest, fill = safetensors:::torch_fill, done = function(j, x) NULL,
    views = TRUE, call = NULL, plan_sizes = list(dest$element_size()), chunk = chunk
  ))
  dest
}
