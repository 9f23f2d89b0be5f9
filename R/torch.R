# The "torch" framework: reading tensors into R torch tensors, and writing
# torch tensors through safe_tensor_buffer() / safe_tensor_meta().
#
# Copies, reading. From a file path, a raw vector, a shard index or a handle,
# each tensor is allocated by torch (torch_empty(), CPU) and the Rust core
# reads the file's bytes straight into it (pread or a memory map, see
# src/rust/src/torch.rs): one copy, no R vector in between. From a
# connection, R's readBin() reads each tensor in chunks of `torch_read_chunk`
# bytes and each chunk is copied into the tensor: two passes over the bytes
# (R has no way to read a connection into foreign memory), but a chunk is
# the only memory beyond the tensors, where 0.2.x held two copies. A
# `device` other than "cpu" adds torch's own copy to that device. The
# registered constructor, torch_tensor_from_raw(), which receives a raw
# vector (slices, and callers of the 0.2.x contract), copies it once, with
# torch's own clone() of a temporary view.
#
# Copies, writing. safe_tensor_buffer() allocates a raw vector and has
# torch copy the tensor into it through a view of that vector (copy_()), so
# strides, storage offsets and devices are handled by torch, sizes are
# 64-bit, and that copy is the only one. The writers (R/save.R,
# write_stream()) take torch tensors a piece of `torch_write_chunk` bytes at a
# time (torch_write_chunks()): each piece is copied once into a small raw
# vector and written to the file (or the result of safe_serialize()), so no
# second copy of a whole tensor, let alone of a model, is held; only a
# tensor whose last dimension is strided (transposed, permuted) is copied
# whole, which is far faster for those. On a connection, writeBin() copies
# each piece once more into its own buffer.

# safetensors dtype -> name of R torch's dtype function.
torch_dtype_fns <- c(
  F64 = "torch_float64", F32 = "torch_float32", F16 = "torch_float16",
  BF16 = "torch_bfloat16", I64 = "torch_int64", I32 = "torch_int32",
  I16 = "torch_int16", I8 = "torch_int8", U8 = "torch_uint8",
  BOOL = "torch_bool", C64 = "torch_cfloat",
  F8_E4M3 = "torch_float8_e4m3fn", F8_E5M2 = "torch_float8_e5m2"
)

# torch dtype (as `dtype$.type()` names it) -> safetensors dtype.
torch_dtype_names <- c(
  Double = "F64", Float = "F32", Half = "F16", BFloat16 = "BF16",
  Long = "I64", Int = "I32", Short = "I16", Char = "I8", Byte = "U8",
  Bool = "BOOL", ComplexFloat = "C64", Float8_e4m3fn = "F8_E4M3",
  Float8_e5m2 = "F8_E5M2"
)

# The torch dtype for safetensors dtype `dtype`, or a classed error for the
# dtypes R torch has no type for.
torch_dtype_of <- function(dtype, name = NULL, call = parent.frame()) {
  check_torch_dtypes(dtype, name, call = call)
  getExportedValue("torch", torch_dtype_fns[[dtype]])()
}

# A classed error naming the first of tensors `names` whose dtype (in
# `dtypes`) R torch has no type for; nothing if there is none. Readers check
# every tensor they are asked for before reading any.
check_torch_dtypes <- function(dtypes, names = NULL, call = parent.frame()) {
  bad <- which(!dtypes %in% names(torch_dtype_fns))
  if (length(bad) == 0) {
    return(invisible())
  }
  dtype <- dtypes[[bad[[1]]]]
  name <- if (is.null(names)) NULL else names[[bad[[1]]]]
  what <- if (is.null(name)) "A tensor" else "Tensor {.val {name}}"
  st_abort(
    "unsupported_dtype",
    c(
      paste(what, "has dtype {.val {dtype}}, which R torch has no type for."),
      i = "Read it with {.code framework = \"r\"} (R arrays) or {.code framework = \"raw\"} (its bytes) instead.",
      i = "torch reads these dtypes: {.val {names(torch_dtype_fns)}}."
    ),
    dtype = dtype,
    tensor = name,
    call = call
  )
}

# The safetensors dtype of torch dtype `x`.
torch_dtype_to_safe <- function(x, call = parent.frame()) {
  type <- x$.type()
  out <- torch_dtype_names[type]
  if (is.na(out)) {
    st_abort(
      "unsupported_dtype",
      c(
        "Can't write a torch tensor of dtype {.val {type}}: safetensors has no such dtype.",
        i = "Convert it first, for example with {.code x$to(dtype = torch_float())}.",
        i = "torch dtypes safetensors holds: {.val {names(torch_dtype_names)}}."
      ),
      dtype = type,
      call = call
    )
  }
  unname(out)
}

#' @rdname safe_tensor_buffer
#' @export
safe_tensor_meta.torch_tensor <- function(x) {
  shape <- x$shape
  if (anyNA(shape) || any(shape < 0)) {
    # R torch reports extents as R integers; one over 2^31 - 1 wraps around.
    st_abort(
      "invalid_argument",
      "Can't write a torch tensor with an extent over 2^31 - 1: R torch reports its shape as {.val {shape}}."
    )
  }
  list(shape = as.list(shape), dtype = torch_dtype_to_safe(x$dtype))
}

#' @rdname safe_tensor_buffer
#' @export
safe_tensor_buffer.torch_tensor <- function(x) {
  # A view of an R raw vector of the tensor's size, dtype and shape, into
  # which torch copies the tensor: logical (row-major) values whatever its
  # strides and storage offset, from any device, with 64-bit sizes (torch's
  # buffer_from_torch_tensor() copies from the storage start and takes a
  # 32-bit size). The view does not own the vector's memory and is not used
  # after this function, which keeps `buf` referenced while it runs.
  x <- x$detach()
  n <- prod(as.numeric(x$shape)) * x$element_size()
  buf <- st_check(alloc_raw_(n), "Can't allocate the tensor's buffer.")
  if (n > 0) {
    view <- torch::torch_tensor_from_buffer(buf, shape = x$shape, dtype = x$dtype)
    view$copy_(x)
    rm(view)
  }
  buf
}

# The constructor registered for "torch", with safetensors 0.2.x's
# signature: `raw` holds the tensor's bytes, `meta` its header entry.
torch_tensor_from_raw <- function(raw, meta, device = "cpu") {
  dtype <- torch_dtype_of(meta$dtype)
  shape <- as.numeric(unlist(meta$shape))
  check_torch_bytes(raw, meta$dtype, shape)
  if (identical(meta$dtype, "BOOL") && any(raw > as.raw(1))) {
    raw[raw > as.raw(1)] <- as.raw(1)
  }
  # A temporary view of `raw` (referenced here while torch copies it); the
  # clone owns its memory.
  x <- torch::torch_tensor_from_buffer(raw, shape = shape, dtype = dtype)$clone()
  torch_to_device(x, device)
}

# 0.2.x handed the bytes to torch unchecked; a short raw vector made torch
# read past its end.
check_torch_bytes <- function(raw, dtype, shape, call = parent.frame()) {
  want <- tensor_bytes(dtype, shape)
  if (!is.raw(raw) || length(raw) != want) {
    st_abort(
      "invalid_argument",
      "A {.val {dtype}} tensor of shape {format_shape(shape)} needs {want} bytes, not {length(raw)}.",
      call = call
    )
  }
}

torch_to_device <- function(x, device) {
  if (identical(device, "cpu")) x else x$to(device = device)
}

# The `device` of the torch framework's `...`: as the constructor takes it,
# so unknown arguments are the same error.
torch_device_arg <- function(args) {
  do.call(function(device = "cpu") device, args)
}

# Whether tensors of `framework` are read straight into torch memory: the
# built-in "torch" entry (not one a user registered in its place), with a
# working libtorch whose data addresses this session could verify.
torch_direct <- function(framework) {
  identical(framework, "torch") &&
    identical(safetensors_frameworks[["torch"]]$constructor, torch_tensor_from_raw) &&
    torch_address_ok()
}

torch_state <- new.env(parent = emptyenv())

# Verifies once per session that Storage$data_ptr() gives the address of a
# tensor's data: Rust reads (never writes) the bytes there and compares them
# with those the tensor was made from. If not, every read falls back to the
# raw-vector constructor. LibTorch is known to be there (check_framework()
# runs check_libtorch()).
torch_address_ok <- function() {
  if (is.null(torch_state$address_ok)) {
    torch_state$address_ok <- tryCatch(
      {
        pattern <- as.integer((seq_len(64) * 37 + 11) %% 256)
        t <- torch::torch_tensor(pattern, dtype = torch::torch_uint8())
        isTRUE(probe_address_(t$storage()$data_ptr(), as.raw(pattern)))
      },
      error = function(e) FALSE
    )
  }
  torch_state$address_ok
}

# The R package torch installs LibTorch apart (install_torch()); without it
# torch's functions fail with an unclassed C++ error.
check_libtorch <- function(installed = torch::torch_is_installed(), call = parent.frame()) {
  if (!installed) {
    st_abort(
      "framework_not_installed",
      c(
        "Framework {.val torch} needs LibTorch, which is not installed.",
        i = "Install it with {.code torch::install_torch()}."
      ),
      package = "torch",
      call = call
    )
  }
}

# An uninitialised CPU tensor of safetensors dtype `dtype` and `shape`, and
# the address and size of its data, checked as src/rust/src/torch.rs needs.
torch_empty_for <- function(dtype, shape, name, call) {
  dt <- torch_dtype_of(dtype, name, call = call)
  x <- if (length(shape) == 0) {
    torch::torch_empty(1L, dtype = dt)$reshape(list())
  } else {
    torch::torch_empty(as.numeric(shape), dtype = dt)
  }
  nbytes <- tensor_bytes(dtype, shape)
  if (prod(as.numeric(x$shape)) * x$element_size() != nbytes || !x$is_contiguous()) {
    st_abort("invalid_argument", "torch allocated an unexpected tensor for {.val {name}}.", call = call)
  }
  list(x = x, nbytes = nbytes, address = if (nbytes > 0) x$storage()$data_ptr() else "")
}

# Reads tensors `names` of handle `h` straight into torch tensors, updating
# the cli progress `bar` if given. Returns list(tensors, max_offset) as
# read_handle() does.
torch_read_handle <- function(h, names, args, call = parent.frame(), bar = NULL) {
  device <- torch_device_arg(args)
  at <- match(names, hget(h, "names"))
  parts <- hget(h, "parts")
  part_of <- hget(h, "part_of")[at]
  pos <- hget(h, "pos")[at]
  dtypes <- vapply(seq_along(names), function(k) parts[[part_of[[k]]]]$info$dtype[[pos[[k]]]], character(1))
  check_torch_dtypes(dtypes, names, call = call)
  out <- vector("list", length(names))
  max_offset <- 0
  for (k in seq_along(names)) {
    part <- parts[[part_of[[k]]]]
    info <- part$info
    t <- torch_empty_for(info$dtype[[pos[[k]]]], info$shape[[pos[[k]]]], names[[k]], call)
    if (t$nbytes > 0) {
      check_part(handle_read_into_(part$ptr, names[[k]], t$address, t$nbytes), part, call = call)
    }
    out[k] <- list(torch_to_device(t$x, device))
    max_offset <- max(max_offset, 8 + info$header_len + info$end[[pos[[k]]]])
    if (!is.null(bar)) {
      cli::cli_progress_update(inc = t$nbytes, id = bar)
    }
  }
  names(out) <- names
  list(tensors = out, max_offset = max_offset)
}

# Chunk sizes for reading tensors from connections into torch memory (each
# chunk a new R vector: small ones are recycled by malloc, large ones cost
# page faults), and for writing torch tensors (each piece one torch copy_(),
# whose fixed cost, its threads' start above all, small pieces multiply).
torch_read_chunk <- 1024^2
torch_write_chunk <- 16 * 1024^2

# Writes torch tensor `x` through `write(bytes)` in the pieces
# torch_pieces() plans, each a safe_tensor_buffer() of a part of `x`, so the
# writer never holds more than a piece of the tensor's bytes.
torch_write_chunks <- function(x, write, chunk = torch_write_chunk) {
  x <- x$detach()
  shape <- as.numeric(x$shape)
  rank <- length(shape)
  inner_contiguous <- rank > 0 && (shape[[rank]] <= 1 || x$stride()[[rank]] == 1)
  for (p in torch_pieces(shape, x$element_size(), inner_contiguous, chunk)) {
    y <- x
    for (i in p$select) {
      y <- y$select(1, i)
    }
    if (!is.null(p$start)) {
      y <- y$narrow(1, p$start, p$n)
    }
    write(safe_tensor_buffer.torch_tensor(y))
  }
  invisible()
}

# The pieces, in row-major order, in which torch_write_chunks() copies a
# tensor of `shape` whose elements have `size` bytes: at most `chunk` bytes
# each where possible, each consecutive outer rows (a row larger than that
# is split the same way). R torch indexes dimensions with R integers, so
# pieces are taken along dimensions, never from a flattened tensor whose
# length may exceed them. A tensor whose last dimension is not contiguous
# (transposed, permuted; `inner_contiguous = FALSE`) is one piece, copied in
# one pass of torch's transposing copy: copying it piece by piece would
# gather each piece from across the whole tensor, many times slower.
#
# Each piece is `list(select, start, n)`: the tensor's `select(1, i)` for
# each `i` of `select` in turn (1-based), then, unless `start` is NULL,
# `narrow(1, start, n)` of that.
torch_pieces <- function(shape, size, inner_contiguous, chunk, select = integer()) {
  nbytes <- prod(shape) * size
  rank <- length(shape)
  if (nbytes <= chunk || rank == 0 || !inner_contiguous) {
    return(list(list(select = select, start = NULL, n = NULL)))
  }
  rows <- shape[[1]]
  row_bytes <- nbytes / rows
  if (row_bytes > chunk) {
    rest <- shape[-1]
    return(do.call(c, lapply(seq_len(rows), function(i) {
      torch_pieces(rest, size, inner_contiguous, chunk, c(select, i))
    })))
  }
  per <- floor(chunk / row_bytes)
  start <- seq(1, rows, by = per)
  n <- pmin(per, rows - start + 1)
  Map(function(start, n) list(select = select, start = start, n = n), start, n)
}

# Reads tensor `name` (`nbytes` bytes of `dtype` and `shape`) from the
# connection's current position into a new torch tensor, chunk by chunk.
torch_read_stream <- function(con, name, dtype, shape, device, part, call) {
  t <- torch_empty_for(dtype, shape, name, call)
  read_chunks(con, t$nbytes, torch_read_chunk, part, name, call, function(chunk, offset) {
    check_part(copy_into_(chunk, t$address, offset, t$nbytes, identical(dtype, "BOOL")), part, call = call)
  })
  torch_to_device(t$x, device)
}

# Registers "torch" in safetensors_frameworks; run by .onLoad().
register_torch <- function() {
  safetensors_frameworks[["torch"]] <- list(constructor = torch_tensor_from_raw, packages = "torch")
}
