# The "torch" framework: reading tensors into R torch tensors, and writing
# torch tensors.
#
# No memory address ever passes between R and Rust as text, and the Rust
# core never writes into torch's memory: torch copies, with its own
# `copy_()`, between its tensors and views (`torch_tensor_from_buffer()`)
# of memory the package owns, so devices, strides and dtype conversions are
# torch's business.
#
# Copies, reading. From a file path, a raw vector, a shard index or a
# handle, each tensor is allocated by torch (`torch_empty()` on the CPU,
# asked for explicitly), then filled by torch from a view of the tensor's
# bytes: in the memory map or raw vector itself (one copy,
# src/rust/src/torch.rs's tensor_view_()), or, with `backend = "read"`,
# in pieces of `torch_read_chunk` bytes read by the Rust core into one
# reusable staging raw vector. From a connection, R's readBin() reads each
# tensor in chunks that torch copies the same way: a chunk is the only
# memory beyond the tensors. A `device` other than "cpu" adds torch's own
# copy to that device. The registered constructor, torch_tensor_from_raw(),
# which receives a raw vector (slices, and callers of the 0.2.x contract),
# copies it once, with torch's own clone() of a temporary view.
#
# Copies, into a module (R/model.R). torch_read_into() fills an existing
# tensor (a parameter or buffer, of any dtype, layout and device) the same
# way, piece by piece: views of at most `torch_read_chunk` bytes of the map
# (each piece's pages let go of once copied) or raw vector, or the staging
# raw vector, so nothing but one piece is held beside the module.
#
# Copies, writing. The writers (R/write.R) take a torch tensor in pieces of
# at most `torch_write_chunk` bytes (torch_pieces()): torch copies each
# piece's logical values (any strides, storage offset or device) into one
# staging raw vector reused for the whole save, which the write engine
# writes out. Strided tensors (transposed, permuted) too: torch gathers each
# piece, which saves a transposed 1 GiB tensor faster than one contiguous()
# copy of it did (5.3 s against 6.2 s, bench/README.md) and holds one piece
# instead of a second tensor.
# safe_tensor_buffer() copies a whole tensor once into a new raw vector.

# safetensors dtype -> name of R torch's dtype function, for the dtypes R
# torch has (from the dtype table, R/dtypes.R).
torch_dtype_fns <- function() {
  tab <- dtype_table()
  has <- !is.na(tab$torch)
  structure(tab$torch[has], names = tab$name[has])
}

# torch dtype (as `dtype$.type()` names it) -> safetensors dtype.
torch_dtype_names <- function() {
  tab <- dtype_table()
  has <- !is.na(tab$torch_type)
  structure(tab$name[has], names = tab$torch_type[has])
}

# The torch dtype for safetensors dtype `dtype`, or a classed error for the
# dtypes R torch has no type for.
torch_dtype_of <- function(dtype, name = NULL, call = parent.frame()) {
  check_torch_dtypes(dtype, name, call = call)
  getExportedValue("torch", torch_dtype_fns()[[dtype]])()
}

# A classed error naming the first of tensors `names` whose dtype (in
# `dtypes`) R torch has no type for; nothing if there is none. Readers check
# every tensor they are asked for before reading any.
check_torch_dtypes <- function(dtypes, names = NULL, call = parent.frame()) {
  fns <- torch_dtype_fns()
  bad <- which(!dtypes %in% names(fns))
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
      i = "torch reads these dtypes: {.val {names(fns)}}."
    ),
    dtype = dtype,
    tensor = name,
    call = call
  )
}

# The safetensors dtype of torch dtype `x`.
torch_dtype_to_safe <- function(x, call = parent.frame()) {
  type <- x$.type()
  known <- torch_dtype_names()
  out <- known[type]
  if (is.na(out)) {
    st_abort(
      "unsupported_dtype",
      c(
        "Can't write a torch tensor of dtype {.val {type}}: safetensors has no such dtype.",
        i = "Convert it first, for example with {.code x$to(dtype = torch_float())}.",
        i = "torch dtypes safetensors holds: {.val {names(known)}}."
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
  torch_local_cpu()
  # A view of an R raw vector of the tensor's size, dtype and shape, into
  # which torch copies the tensor: logical (row-major) values whatever its
  # strides and storage offset, from any device, with 64-bit sizes (torch's
  # buffer_from_torch_tensor() copies from the storage start and takes a
  # 32-bit size). The view does not own the vector's memory and is not used
  # after this function, which keeps `buf` referenced while it runs.
  x <- x$detach()
  buf <- raw(prod(as.numeric(x$shape)) * x$element_size())
  torch_copy_into(buf, x)
  buf
}

# Has torch copy the logical values of `x` (any strides, storage offset or
# device) into the first bytes of the raw vector `buf`, through a view of
# it (which does not own the vector's memory, is not used after this
# function, and is dropped while `buf` is still referenced here).
torch_copy_into <- function(buf, x) {
  if (x$numel() > 0) {
    view <- torch::torch_tensor_from_buffer(buf, shape = x$shape, dtype = x$dtype)
    view$copy_(x)
    rm(view)
  }
  invisible()
}

# The constructor registered for "torch", with safetensors 0.2.x's
# signature: `raw` holds the tensor's bytes, `meta` its header entry.
torch_tensor_from_raw <- function(raw, meta, device = "cpu") {
  dtype <- torch_dtype_of(meta$dtype)
  torch_local_cpu()
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

# Whether tensors of `framework` are read by torch itself from the file's
# bytes (torch_read_part()): the built-in "torch" entry, not one a user
# registered in its place, whose constructor receives raw vectors instead.
torch_direct <- function(framework) {
  identical(framework, "torch") &&
    identical(safetensors_frameworks[["torch"]]$constructor, torch_tensor_from_raw)
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

# Makes the CPU torch's default device until `.env` exits: the views this
# package makes of its own memory (torch_tensor_from_buffer(), which takes
# no device) must be CPU tensors whatever default a user set with
# torch::with_device() or local_device(). Older torch has no default device.
torch_local_cpu <- function(.env = parent.frame()) {
  ns <- asNamespace("torch")
  if (exists("local_device", envir = ns, inherits = FALSE)) {
    ns$local_device(torch::torch_device("cpu"), .env = .env)
  }
  invisible()
}

# An uninitialised tensor of safetensors dtype `dtype` and `shape`, on the
# CPU whatever torch's default device (with_device(), local_device()).
torch_empty_for <- function(dtype, shape, name, call) {
  dt <- torch_dtype_of(dtype, name, call = call)
  if (length(shape) == 0) {
    torch::torch_empty(1L, dtype = dt, device = "cpu")$reshape(list())
  } else {
    torch::torch_empty(as.numeric(shape), dtype = dt, device = "cpu")
  }
}

# The torch dtype a tensor's bytes are viewed as: its own, but BOOL as
# uint8, so that copying into a bool tensor turns any non-zero byte into
# true (a file may hold any non-zero byte for true; a bool view of such a
# byte would be an invalid C++ bool).
torch_view_dtype <- function(dtype) {
  torch_dtype_of(if (identical(dtype, "BOOL")) "U8" else dtype)
}

# Reads tensor `name` (of `dtype` and `shape`) of `part` (an open source,
# R/sources.R) into a new torch tensor on `device`: torch copies from a
# view of the bytes in the part's memory map or raw vector, from pieces
# the core reads into a staging raw vector, or, for a remote file, from
# the pieces of one range request as they arrive. Callers make the CPU the
# default device first (torch_local_cpu()), once for all their tensors.
torch_read_part <- function(part, name, dtype, shape, device, call) {
  x <- torch_empty_for(dtype, shape, name, call)
  n <- x$numel()
  if (n > 0 && part_is_remote(part)) {
    view_dtype <- torch_view_dtype(dtype)
    size <- x$element_size()
    flat <- x$view(-1)
    at <- match(name, part$info$name)
    per <- max(1, floor(torch_read_chunk / size))
    counts <- c(rep(per, n %/% per), if (n %% per > 0) n %% per)
    starts <- cumsum(c(0, counts))
    remote_bytes(part, 8 + part$info$header_len + part$info$begin[[at]], n * size, counts * size, function(k, bytes) {
      flat$narrow(1, starts[[k]] + 1, counts[[k]])$copy_(torch::torch_tensor_from_buffer(bytes, shape = counts[[k]], dtype = view_dtype))
    }, call = call)
  } else if (n > 0) {
    view_dtype <- torch_view_dtype(dtype)
    view <- check_part(tensor_view_(part$ptr, name), part, call = call)
    flat <- x$view(-1)
    if (!is.null(view)) {
      src <- torch::torch_tensor_from_buffer(view, shape = n, dtype = view_dtype)
      flat$copy_(src)
      rm(src)
      check_part(tensor_view_done_(part$ptr, name), part, call = call)
    } else {
      size <- x$element_size()
      per <- max(1, floor(torch_read_chunk / size))
      stage <- raw(min(n, per) * size)
      for (start in seq(0, n - 1, by = per)) {
        k <- min(per, n - start)
        if (k * size < length(stage)) {
          stage <- raw(k * size)
        }
        check_part(tensor_bytes_(part$ptr, name, start * size, stage), part, call = call)
        flat$narrow(1, start + 1, k)$copy_(torch::torch_tensor_from_buffer(stage, shape = k, dtype = view_dtype))
      }
    }
  }
  torch_to_device(x, device)
}

# Reads tensor `name` (of `dtype` and `shape`) of `part` into `dest`, an
# existing torch tensor of that shape (a model's parameter or buffer, any
# dtype, strides and device), converting as torch's copy_() does; callers
# check that the conversion makes sense, make the CPU the default device
# (torch_local_cpu()) and turn gradients off (with_no_grad()). torch copies
# piece by piece (torch_pieces(): consecutive rows, at most
# torch_read_chunk bytes of the file or of `dest` each) into views of
# `dest`, from views of the piece's bytes in the part's memory map (whose
# pages are let go of once copied) or raw vector, or from the staging raw
# vector `cache$stage`, filled by the core and reused for every piece (and,
# through `cache`, every tensor), or, for a remote file, from the pieces of
# one range request as they arrive. So beyond `dest` a read holds one piece at
# a time, whatever the tensor's size, and torch's conversions to another
# dtype or device (which go through a temporary) work on one piece at a time
# too. `dest_size`, the bytes of an element of `dest`, saves asking torch.
torch_read_into <- function(part, name, dtype, shape, dest, call, cache = new.env(parent = emptyenv()),
                            chunk = torch_read_chunk, dest_size = NULL) {
  shape <- as.numeric(unlist(shape))
  if (prod(shape) == 0) {
    return(invisible())
  }
  rank <- length(shape)
  size <- tensor_bytes(dtype, 1)
  # Row-major strides of the file's tensor, in elements.
  stride <- if (rank == 0) numeric() else rev(cumprod(c(1, rev(shape[-1]))))
  view_dtype <- torch_view_dtype(dtype)
  # A BOOL file's bytes are viewed as uint8 (torch_view_dtype()); torch
  # turns them into true and false only for a bool `dest`.
  nonzero <- identical(dtype, "BOOL") && !identical(dest$dtype$.type(), "Bool")
  chunk_size <- max(size, dest_size %||% dest$element_size())
  pieces <- torch_pieces(shape, chunk_size, chunk)
  # Each piece as the view of `dest` it fills, its first byte in the
  # tensor and its shape; the pieces follow each other in the file.
  targets <- vector("list", length(pieces))
  for (j in seq_along(pieces)) {
    p <- pieces[[j]]
    k <- length(p$select)
    first <- sum((p$select - 1) * stride[seq_len(k)])
    if (is.null(p$start)) {
      piece <- shape[seq_len(rank) > k]
    } else {
      first <- first + (p$start - 1) * stride[[k + 1]]
      piece <- c(p$n, shape[seq_len(rank) > k + 1])
    }
    targets[[j]] <- list(y = torch_piece_view(dest, p), from = first * size, n = prod(piece) * size, shape = piece)
  }
  fill <- function(t, bytes) {
    # A view of memory the package owns, which R keeps referenced here
    # while torch copies from it.
    src <- torch::torch_tensor_from_buffer(bytes, shape = t$shape, dtype = view_dtype)
    t$y$copy_(if (nonzero) src$ne(0L) else src)
  }
  if (part_is_remote(part)) {
    # One request for the tensor, its pieces copied as they arrive.
    at <- match(name, part$info$name)
    sizes <- vapply(targets, function(t) t$n, numeric(1))
    remote_bytes(part, 8 + part$info$header_len + part$info$begin[[at]], sum(sizes), sizes, function(k, bytes) {
      fill(targets[[k]], bytes)
    }, call = call)
    return(invisible())
  }
  for (t in targets) {
    view <- check_part(tensor_view_piece_(part$ptr, name, t$from, t$n), part, call = call)
    if (is.null(view)) {
      if (length(cache$stage) < t$n) {
        cache$stage <- raw(t$n)
      }
      check_part(tensor_piece_bytes_(part$ptr, name, t$from, t$n, cache$stage), part, call = call)
      view <- cache$stage
    }
    fill(t, view)
    if (typeof(view) == "externalptr") {
      check_part(tensor_view_piece_done_(part$ptr, name, t$from, t$n), part, call = call)
    }
  }
  invisible()
}

# Chunk sizes for reading tensors in pieces (from connections, and files
# read without a map), and for writing torch tensors (each piece one torch
# copy_(), whose fixed cost, its threads' start above all, small pieces
# multiply).
torch_read_chunk <- 16 * 1024^2
torch_write_chunk <- 16 * 1024^2

# Writes torch tensor `x` through `put(stage, n)`, which receives the first
# `n` bytes of the raw vector `stage` each time, in the pieces
# torch_pieces() plans: torch copies each piece's logical values into
# `stage`, one raw vector reused for every piece (and, through `cache`, an
# environment, for every tensor of a save), so the writer never holds more
# than a piece of the tensor's bytes.
torch_write_chunks <- function(x, put, chunk = torch_write_chunk, cache = new.env(parent = emptyenv())) {
  torch_local_cpu()
  x <- x$detach()
  shape <- as.numeric(x$shape)
  size <- x$element_size()
  for (p in torch_pieces(shape, size, chunk)) {
    y <- torch_piece_view(x, p)
    n <- y$numel() * size
    if (length(cache$stage) < n) {
      cache$stage <- raw(n)
    }
    torch_copy_into(cache$stage, y)
    put(cache$stage, n)
  }
  invisible()
}

# The pieces, in row-major order, in which torch_write_chunks() copies a
# tensor of `shape` whose elements have `size` bytes: at most `chunk` bytes
# each where possible, each consecutive outer rows (a row larger than that
# is split the same way). R torch indexes dimensions with R integers, so
# pieces are taken along dimensions, never from a flattened tensor whose
# length may exceed them. Pieces are planned on the logical shape alone:
# for a strided tensor, torch gathers each one.
#
# Each piece is `list(select, start, n)`: the tensor's `select(1, i)` for
# each `i` of `select` in turn (1-based), then, unless `start` is NULL,
# `narrow(1, start, n)` of that.
torch_pieces <- function(shape, size, chunk, select = integer()) {
  nbytes <- prod(shape) * size
  rank <- length(shape)
  if (nbytes <= chunk || rank == 0) {
    return(list(list(select = select, start = NULL, n = NULL)))
  }
  rows <- shape[[1]]
  row_bytes <- nbytes / rows
  if (row_bytes > chunk) {
    rest <- shape[-1]
    return(do.call(c, lapply(seq_len(rows), function(i) {
      torch_pieces(rest, size, chunk, c(select, i))
    })))
  }
  per <- floor(chunk / row_bytes)
  start <- seq(1, rows, by = per)
  n <- pmin(per, rows - start + 1)
  Map(function(start, n) list(select = select, start = start, n = n), start, n)
}

# The view of torch tensor `x` that piece `p` of torch_pieces() stands for.
torch_piece_view <- function(x, p) {
  for (i in p$select) {
    x <- x$select(1, i)
  }
  if (!is.null(p$start)) {
    x <- x$narrow(1, p$start, p$n)
  }
  x
}

# Reads tensor `name` (of `dtype` and `shape`) from the connection's
# current position into a new torch tensor on `device`, chunk by chunk:
# each chunk (whole elements) is copied by torch from a view of it.
torch_read_stream <- function(con, name, dtype, shape, device, part, call) {
  torch_local_cpu()
  x <- torch_empty_for(dtype, shape, name, call)
  size <- x$element_size()
  flat <- x$view(-1)
  view_dtype <- torch_view_dtype(dtype)
  chunk <- max(1, floor(torch_read_chunk / size)) * size
  read_chunks(con, x$numel() * size, chunk, part, name, call, function(bytes, offset) {
    if (length(bytes) %% size != 0) {
      # A connection may return less than asked; keep whole elements.
      bytes <- c(bytes, read_exact(con, size - length(bytes) %% size, part, name, call))
    }
    k <- length(bytes) / size
    flat$narrow(1, offset / size + 1, k)$copy_(torch::torch_tensor_from_buffer(bytes, shape = k, dtype = view_dtype))
  })
  torch_to_device(x, device)
}

# Registers "torch" in safetensors_frameworks, with its LibTorch check;
# run by .onLoad().
register_torch <- function() {
  safetensors_frameworks[["torch"]] <- list(constructor = torch_tensor_from_raw, packages = "torch")
  register_framework_check("torch", torch_tensor_from_raw, function(call) check_libtorch(call = call))
}
