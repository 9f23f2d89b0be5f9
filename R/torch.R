# The "torch" framework: reading tensors into R torch tensors, and writing
# torch tensors, through the fast paths of the framework registry
# (R/frameworks.R, ?safetensors_frameworks): register_torch() registers
# torch's hooks, and no loader names torch.
#
# Two ways bytes cross between the package and torch's memory:
# * torch copies, with its own `copy_()`, between its tensors and views
#   (`torch_tensor_from_buffer()`) of memory the package owns, so devices,
#   strides and dtype conversions are torch's business;
# * a CPU tensor whose memory holds exactly the file's bytes (its layout
#   checked by torch itself, torch_memories()) is written to a file straight
#   from that memory by the kernel's write() (writer_put_memory_()), which
#   reports an address it can't read as an error, or, read, filled straight
#   from the file by the core's positioned reads (torch_read_memories(),
#   read_into_memory_()). Its address goes to Rust as torch's text of it,
#   and Rust writes torch's memory only in that read.
#
# Copies, reading. Each tensor is allocated by torch (torch_new(),
# `torch_empty()` on the CPU, asked for explicitly). One of the file's
# dtype (but BOOL) is read straight into it (above); the others are
# filled piece by piece (torch_fill(), plan_pieces()) from views of the
# bytes in the memory map or raw vector itself (one copy; pieces of at most 32 MiB, the first
# 16 MiB of the next mapped in by a helper thread meanwhile), or from two
# staging raw vectors the core reads the file into in turn, ahead of the
# copy on a helper thread (`backend = "read"`; pieces of at most 16 MiB;
# src/rust/src/frameworks.rs). From a connection that is not a file, from
# pieces R's readBin() reads. A `device` other than "cpu" adds torch's own
# copy to that device (torch_finish()). The registered constructor,
# torch_tensor_from_raw(), which receives a raw vector (slices, and callers
# of the 0.2.x contract), copies it once, with torch's own clone() of a
# temporary view.
#
# Copies, into a module (R/model.R). An existing tensor (a parameter or
# buffer) is read into the same way: straight into it where it is a CPU
# tensor of the file's dtype laid out as stored, else torch_fill() fills it
# (of any dtype, layout and device) piece by piece, converting as copy_()
# does, so nothing but one piece is held beside the module.
#
# Copies, writing. A CPU tensor whose memory holds the file's bytes is
# written from it (above). The writers (R/write.R) take any other torch
# tensor in pieces of at most 4 MiB (torch_write_piece(), `write_bytes`):
# torch copies each piece's logical values (any strides, storage offset or
# device) into one of two staging raw vectors reused for the whole save,
# which the write engine writes out on a helper thread while torch fills
# the other. Strided tensors (transposed, permuted) too: torch gathers each
# piece, which saves a transposed 1 GiB tensor faster than one contiguous()
# copy of it did (5.3 s against 6.2 s, bench/README.md) and holds one piece
# instead of a second tensor. safe_tensor_buffer() copies a whole tensor
# once into a new raw vector.

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
# `dtypes`) R torch has no type for; nothing if there is none.
check_torch_dtypes <- function(dtypes, names = NULL, call = parent.frame()) {
  check_framework_dtypes(dtypes, names, names(torch_dtype_fns()), "torch", call = call)
}

# The safetensors dtype of torch dtype `x`, or of the dtype named `x` (as
# torch_type() gives it).
torch_dtype_to_safe <- function(x, call = parent.frame()) {
  type <- if (is.character(x)) x else x$.type()
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
  shape <- torch_shape(x)
  if (anyNA(shape) || any(shape < 0)) {
    # R torch reports extents as R integers; one over 2^31 - 1 wraps around.
    st_abort(
      "invalid_argument",
      "Can't write a torch tensor with an extent over 2^31 - 1: R torch reports its shape as {.val {shape}}."
    )
  }
  list(shape = as.list(shape), dtype = torch_dtype_to_safe(torch_type(x)))
}

# Whether `x` is a torch tensor whose safe_tensor_meta() is the method for
# "torch_tensor" (a class of its own before it may have a method of its
# own).
is_plain_torch <- function(x) {
  typeof(x) == "externalptr" && identical(class(x)[[1]], "torch_tensor")
}

# safe_tensor_meta() of each tensor of the list `xs` at once, as
# `list(shapes, dtypes)`, with torch's functions looked up once (a model's
# hundreds of parameters took 40 us each through the method); NULL unless
# each is_plain_torch(). A tensor the method would refuse gets an NA dtype
# here, and the caller calls the method for its error.
torch_metas <- function(xs) {
  if (!all(vapply(xs, is_plain_torch, logical(1)))) {
    return(NULL)
  }
  dim <- torch_cpp_all("cpp_tensor_dim", xs)
  shapes <- if (is.null(dim)) lapply(xs, function(x) x$shape) else lapply(xs, dim)
  dtypes <- unname(torch_dtype_names()[torch_types(xs)])
  bad <- vapply(shapes, function(s) anyNA(s) || any(s < 0), logical(1))
  dtypes[bad] <- NA_character_
  list(shapes = lapply(shapes, as.numeric), dtypes = dtypes)
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
  buf <- raw(prod(as.numeric(torch_shape(x))) * x$element_size())
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

# ---- torch calls without its method dispatch ---------------------------------

# R torch finds a tensor's method through its R7 classes at every `$`: 30-90
# µs a call, against 2-7 µs for the C++ function behind it. For a module of
# 128 parameters, safe_load_model() asked each for its shape, storage and
# copy_(): 9, 11 and 9 ms through `$`, 0.3, 1.2 and 0.9 ms directly (Python
# loads the whole module in 11 ms). These call torch's functions by name
# where torch has them (looked up once a session; they are internal, so
# they may go) and its methods otherwise, as they do for anything but a
# torch object (an external pointer; the tests make plain lists that
# answer the same methods).
torch_cpp <- function(name, x) {
  if (typeof(x) != "externalptr") {
    return(NULL)
  }
  torch_fn(name)
}

# torch's function `name`, or NULL where this torch has none.
torch_fn <- function(name) {
  f <- torch_cpp_fns[[name]]
  if (is.null(f)) {
    f <- get0(name, envir = asNamespace("torch"), mode = "function", inherits = FALSE)
    f <- torch_cpp_fns[[name]] <- if (is.function(f)) f else FALSE
  }
  if (is.function(f)) f
}
torch_cpp_fns <- new.env(parent = emptyenv())

# `x$shape`: R integers, as torch gives them.
torch_shape <- function(x) {
  f <- torch_cpp("cpp_tensor_dim", x)
  if (is.null(f)) x$shape else f(x)
}

# `x$dtype$.type()`, such as "Float".
torch_type <- function(x) {
  torch_types(list(x))
}

# torch_type() of each tensor of the list `xs`, with torch's functions
# looked up once.
torch_types <- function(xs) {
  to_string <- torch_cpp_all("cpp_dtype_to_string", xs)
  dtype_of <- torch_cpp_all("cpp_torch_tensor_dtype", xs)
  if (is.null(to_string) || is.null(dtype_of)) {
    return(vapply(xs, function(x) x$dtype$.type(), character(1), USE.NAMES = FALSE))
  }
  # The class torch's C++ side asks of a dtype (what `$dtype` wraps).
  vapply(xs, function(x) to_string(`class<-`(dtype_of(x), "torch_dtype")), character(1), USE.NAMES = FALSE)
}

# torch_cpp() for every element of the list `xs`: the function when each
# is a torch object.
torch_cpp_all <- function(name, xs) {
  if (length(xs) > 0 && all(vapply(xs, typeof, character(1), USE.NAMES = FALSE) == "externalptr")) {
    torch_cpp(name, xs[[1]])
  }
}

# `x$device$type`, such as "cpu".
torch_device_type <- function(x) {
  device <- torch_cpp("cpp_tensor_device", x)
  type <- torch_cpp("cpp_device_type_to_string", x)
  if (is.null(device) || is.null(type)) x$device$type else type(device(x))
}

# `x$is_set_to(y)`: `x` is `y`, the same view of the same storage.
torch_is_set_to <- function(x, y) {
  f <- if (typeof(y) == "externalptr") torch_cpp("cpp_torch_method_is_set_to_self_Tensor_tensor_Tensor", x)
  isTRUE(if (is.null(f)) x$is_set_to(y) else f(x, y))
}

# `x$is_neg()`: a lazy view whose values are its memory's negated.
torch_is_neg <- function(x) {
  f <- torch_cpp("cpp_torch_method_is_neg_self_Tensor", x)
  isTRUE(if (is.null(f)) x$is_neg() else f(x))
}

# `x$copy_(src)`: copies `src` into `x`, converting and broadcasting.
torch_copy <- function(x, src) {
  f <- if (typeof(src) == "externalptr") torch_cpp("cpp_torch_method_copy__self_Tensor_src_Tensor", x)
  if (is.null(f)) x$copy_(src) else f(x, src, FALSE)
  invisible(x)
}

# `model$state_dict(keepvars = TRUE)`: the module's parameters and
# persistent buffers (not detached copies) by their dotted names, in
# torch's order. Every `$` of a module is an S3 and R6 dispatch; torch's
# own state_dict() made about 600 of them for 128 linear layers (9 ms here,
# a third of safe_load_model() of such a module), so the lists it walks are
# read here directly, where every module's state_dict() and
# .save_to_state_dict() are torch's (the test compares both ways on
# modules of every kind). A module that overrides either, or a torch whose
# modules are built otherwise, gets torch's method.
module_state <- function(model) {
  base <- asNamespace("torch")[["nn_Module"]]
  own <- if (inherits(base, "R6ClassGenerator")) base$public_methods[c("state_dict", ".save_to_state_dict")]
  walked <- if (length(own) == 2 && all(vapply(own, is.function, logical(1)))) {
    walk_module_state(model, "", lapply(own, body))
  }
  if (is.null(walked)) model$state_dict(keepvars = TRUE) else walked
}

# The state of module `module` (an nn_module or its nn_Module) and of its
# children, their names prefixed by `prefix`, as module_state() describes
# it; NULL where a module's methods differ from torch's (`own`, the bodies
# of nn_Module's state_dict() and .save_to_state_dict()).
walk_module_state <- function(module, prefix, own) {
  m <- if (inherits(module, "nn_module")) attr(module, "module") else module
  if (!is.environment(m) || !inherits(m, "nn_Module")) {
    return(NULL)
  }
  # R6 gives each object its class's functions with a new environment,
  # the same body: identical() compares their addresses first.
  for (method in names(own)) {
    f <- .subset2(m, method)
    if (!is.function(f) || !identical(body(f), own[[method]])) {
      return(NULL)
    }
  }
  private <- .subset2(m, ".__enclos_env__")[["private"]]
  if (!is.environment(private)) {
    return(NULL)
  }
  params <- private[["parameters_"]]
  out <- params[!vapply(params, is.null, logical(1))]
  # A buffer named as a parameter takes its place, as in torch's method.
  buffers <- private[["buffers_"]]
  for (name in setdiff(names(buffers), private[["non_persistent_buffers_"]])) {
    if (!is.null(buffers[[name]])) {
      out[[name]] <- buffers[[name]]
    }
  }
  if (length(out) > 0) {
    names(out) <- paste0(prefix, names(out))
  }
  children <- private[["modules_"]]
  for (name in names(children)) {
    child <- children[[name]]
    if (!is.null(child)) {
      sub <- walk_module_state(child, paste0(prefix, name, "."), own)
      if (is.null(sub)) {
        return(NULL)
      }
      out <- c(out, sub)
    }
  }
  out
}

# The address of the storage of torch tensor `x`, as torch writes it
# (`x$storage()$data_ptr()`), or NA for none (a meta tensor's, or an empty
# storage's).
storage_address <- function(x) {
  storage_addresses(list(x))
}

# storage_address() of each tensor of the list `xs`: one handler for all,
# as R's tryCatch() costs as much as torch's two calls; each tensor with
# its own only if one of them fails.
storage_addresses <- function(xs) {
  storage <- torch_cpp_all("cpp_Tensor_storage", xs)
  data_ptr <- torch_cpp_all("cpp_Storage_data_ptr", xs)
  address <- if (is.null(storage) || is.null(data_ptr)) {
    function(x) x$storage()$data_ptr()
  } else {
    function(x) data_ptr(storage(x))
  }
  out <- tryCatch(vapply(xs, address, character(1), USE.NAMES = FALSE), error = function(e) NULL)
  if (is.null(out)) {
    out <- vapply(xs, function(x) {
      ptr <- tryCatch(address(x), error = function(e) NA_character_)
      if (is_string(ptr)) ptr else NA_character_
    }, character(1), USE.NAMES = FALSE)
  }
  out[out %in% c("0", "0x0", "(nil)")] <- NA_character_
  out
}

# The address of the bytes of each torch tensor of the list `xs` (of file
# `dtypes` and `shapes`, a list), as torch writes it, when its memory holds
# exactly the bytes the file stores: on the CPU, row-major from the start
# of its storage, and without a negative bit (a lazy view whose values are
# its memory's negated); else NA. torch checks that the storage holds that
# view (as_strided() refuses one past its end) and is_set_to() that the
# tensor is it. Complex tensors are left out: their conjugate bit is
# another lazy view. The writer then writes the file from that memory
# (writer_put_memory_()), without copying it first. torch's functions are
# looked up once and one handler serves all (a model's hundreds of
# tensors took 63 us each one at a time), each tensor with a handler of
# its own only if one of them fails.
torch_memories <- function(xs, dtypes, shapes) {
  out <- rep(NA_character_, length(xs))
  shapes <- lapply(shapes, function(s) as.numeric(unlist(s)))
  want <- which(vapply(shapes, function(s) length(s) > 0 && all(s > 0), logical(1)) & !startsWith(dtypes, "C"))
  if (length(want) == 0) {
    return(out)
  }
  ys <- xs[want]
  device <- torch_cpp_all("cpp_tensor_device", ys)
  device_type <- torch_cpp_all("cpp_device_type_to_string", ys)
  is_neg <- torch_cpp_all("cpp_torch_method_is_neg_self_Tensor", ys)
  is_set_to <- torch_cpp_all("cpp_torch_method_is_set_to_self_Tensor_tensor_Tensor", ys)
  as_strided <- torch_cpp_all("cpp_torch_method_as_strided_self_Tensor_size_IntArrayRef_stride_IntArrayRef", ys)
  laid_out <- if (is.null(device) || is.null(device_type) || is.null(is_neg) || is.null(is_set_to) || is.null(as_strided)) {
    function(x, shape) {
      identical(torch_device_type(x), "cpu") && !torch_is_neg(x) &&
        torch_is_set_to(x, x$as_strided(shape, row_major_strides(shape), 0))
    }
  } else {
    function(x, shape) {
      identical(device_type(device(x)), "cpu") && !isTRUE(is_neg(x)) &&
        isTRUE(is_set_to(x, as_strided(x, shape, row_major_strides(shape), 0)))
    }
  }
  each <- function(j) laid_out(ys[[j]], shapes[[want[[j]]]])
  ok <- tryCatch(vapply(seq_along(ys), each, logical(1)), error = function(e) NULL)
  if (is.null(ok)) {
    ok <- vapply(seq_along(ys), function(j) isTRUE(tryCatch(each(j), error = function(e) FALSE)), logical(1))
  }
  if (any(ok)) {
    out[want[ok]] <- storage_addresses(ys[ok])
  }
  out
}

# The address of the memory of each torch tensor of the list `xs` that a
# read may write the bytes of file tensors of `dtypes` and `shapes` (a
# list) to as they are stored (read_into_memories()), else NA: where the
# tensor's dtype is the file's and its memory holds exactly those bytes
# (torch_memories()). Not BOOL, whose true may be any non-zero byte in a
# file (torch's copy makes it 1). `bump`: torch's version counter of each
# such tensor moves on, as torch's copy_() into it would move it, so that
# autograd refuses a backward pass through values a load replaced.
torch_read_memories <- function(xs, dtypes, shapes, bump = FALSE) {
  out <- rep(NA_character_, length(xs))
  known <- torch_dtype_names()
  as_file <- unname(known[torch_types(xs)])
  same <- which(dtypes != "BOOL" & !is.na(as_file) & as_file == dtypes)
  if (length(same) == 0) {
    return(out)
  }
  out[same] <- torch_memories(xs[same], dtypes[same], shapes[same])
  if (bump) {
    for (x in xs[!is.na(out)]) {
      torch_copy(x, x)
    }
  }
  out
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
# Without such a default (torch's internal getter says NULL) there is
# nothing to change: torch's local_device() would register its restore
# with withr, whose closures R compiles on their second use in a session,
# which cost 40-100 ms of the first torch_save() or load in a fresh process.
torch_local_cpu <- function(.env = parent.frame()) {
  ns <- asNamespace("torch")
  current <- ns[["cpp_get_current_default_device"]]
  if (is.function(current) && is.null(current())) {
    return(invisible())
  }
  if (exists("local_device", envir = ns, inherits = FALSE)) {
    ns$local_device(torch::torch_device("cpu"), .env = .env)
  }
  invisible()
}

# Turns torch's gradient recording off until `.env` exits, as
# torch::local_no_grad() does but restoring it with base::on.exit() (see
# torch_local_cpu() on withr); with torch::local_no_grad() if torch has no
# getter of the mode.
torch_local_no_grad <- function(.env = parent.frame()) {
  enabled <- asNamespace("torch")[["cpp_autograd_is_enabled"]]
  if (!is.function(enabled)) {
    torch::local_no_grad(.env = .env)
  } else if (isTRUE(enabled())) {
    torch::autograd_set_grad_mode(FALSE)
    do.call(base::on.exit, list(quote(torch::autograd_set_grad_mode(TRUE)), add = TRUE), envir = .env)
  }
  invisible()
}

# An uninitialised tensor of safetensors dtype `dtype` and `shape`, on the
# CPU whatever torch's default device (with_device(), local_device()).
# Its memory is not marked for transparent huge pages: on a VM whose
# balloon takes back free memory in 2 MiB blocks (free page reporting),
# each huge page is one the host must back anew, and a 1 GiB load in a
# fresh process took 1.1-1.8 s with the mark against 0.27 s without
# (bench/README.md).
torch_empty_for <- function(dtype, shape, name, call) {
  # Looked up once per dtype (as torch_view_dtype()): a model's hundreds of
  # tensors took 25 us each asking anew.
  dt <- torch_dtypes[[dtype]] %||% (torch_dtypes[[dtype]] <- torch_dtype_of(dtype, name, call = call))
  if (length(shape) == 0) {
    return(torch::torch_empty(1L, dtype = dt, device = "cpu")$reshape(list()))
  }
  torch::torch_empty(as.numeric(shape), dtype = dt, device = "cpu")
}

# The torch dtype a tensor's bytes are viewed as: its own, but BOOL as
# uint8, so that copying into a bool tensor turns any non-zero byte into
# true (a file may hold any non-zero byte for true; a bool view of such a
# byte would be an invalid C++ bool).
torch_view_dtype <- function(dtype) {
  if (identical(dtype, "BOOL")) {
    dtype <- "U8"
  }
  # Looked up once per dtype: fill and write run once per piece.
  torch_dtypes[[dtype]] %||% (torch_dtypes[[dtype]] <- torch_dtype_of(dtype))
}

# torch dtype objects by safetensors dtype, as torch_view_dtype() looks
# them up.
torch_dtypes <- new.env(parent = emptyenv())

# The hooks of the torch framework (see ?safetensors_frameworks).

# For the duration of a read or write (until `.env` exits): the CPU as the
# default device (torch_local_cpu()), and, while a thread of this package
# reads or writes the file (`helper`), one thread fewer for torch's
# copies, so that torch and that thread don't take turns on the same cores:
# on two cores, saving 1 GiB took 0.54-0.97 s instead of 1.6-2.4 s, reading
# without a map 0.62-0.76 s instead of 0.88-1.94 s.
torch_setup <- function(.env, helper = FALSE) {
  torch_local_cpu(.env)
  n <- torch::torch_get_num_threads()
  if (helper && n > 1) {
    torch::torch_set_num_threads(n - 1)
    do.call(base::on.exit, list(bquote(torch::torch_set_num_threads(.(n))), add = TRUE), envir = .env)
  }
  invisible()
}


# A new tensor for a file tensor of `dtype` and `shape`, on the CPU (the
# device goes to torch_finish()).
torch_new <- function(dtype, shape, ...) {
  torch_empty_for(dtype, shape, NULL, call = parent.frame())
}

# Copies a piece of a file tensor (its bytes at the start of `bytes`, a
# view or a raw vector; `piece` as plan_pieces() describes it) into the
# matching piece of torch tensor `x`, which may be a new tensor or a
# module's parameter of any dtype, layout and device: torch's copy_()
# converts and moves. A BOOL file's bytes are viewed as uint8
# (torch_view_dtype()); torch turns them into true and false only for a
# bool `x`, so into another dtype they are compared with zero first.
torch_fill <- function(x, bytes, piece) {
  dtype <- piece$dtype
  src <- torch_buffer_view(bytes, piece$shape, torch_view_dtype(dtype))
  if (identical(dtype, "BOOL") && !identical(torch_type(x), "Bool")) {
    src <- src$ne(0L)
  }
  # A view of memory the package owns, which R keeps referenced here
  # while torch copies from it.
  torch_copy(torch_piece_view(x, piece), src)
  invisible()
}

# The tensor read, on the device asked for.
torch_finish <- function(x, device = "cpu") {
  torch_to_device(x, device)
}

# Copies piece `piece` (of the tensor's logical shape) of torch tensor `x`
# into the first bytes of the raw vector `buffer`, in place.
torch_write_piece <- function(x, piece, buffer) {
  # A view of the raw vector, which R keeps referenced here while torch
  # copies into it; torch_copy_into() without its questions to torch,
  # which cost a method dispatch each for every piece.
  view <- torch_buffer_view(buffer, piece$shape, torch_view_dtype(piece$dtype))
  torch_copy(view, torch_piece_view(x, piece)$detach())
  NULL
}

# A tensor of torch dtype `dtype` and `shape` whose memory is the first
# bytes of `buffer`, a raw vector or an external pointer to memory the
# caller keeps alive while the tensor is used: torch_tensor_from_buffer()
# without its `::` and closure (5.5 µs instead of 14.5 here, for every
# piece).
torch_buffer_view <- function(buffer, shape, dtype) {
  f <- torch_fn("cpp_tensor_from_buffer")
  if (is.null(f)) {
    return(torch::torch_tensor_from_buffer(buffer, shape = shape, dtype = dtype))
  }
  f(buffer, as.integer(shape), list(dtype = dtype))
}

# The view of torch tensor `x` that piece `p` of tensor_pieces() stands
# for. torch_narrow() rather than `x$narrow()`: the method's dispatch made
# it 0.17 ms a call against 0.07 ms, a third of the cost of writing a
# 4 MiB piece besides torch's copy.
torch_piece_view <- function(x, p) {
  for (i in p$select) {
    x <- x$select(1, i)
  }
  if (!is.null(p$start)) {
    x <- torch::torch_narrow(x, 1, p$start, p$n)
  }
  x
}

# Registers "torch" in safetensors_frameworks, with its LibTorch check and
# its fast paths; run by .onLoad().
register_torch <- function() {
  safetensors_frameworks[["torch"]] <- list(
    constructor = torch_tensor_from_raw,
    packages = "torch",
    check = function(call) check_libtorch(call = call),
    dtypes = names(torch_dtype_fns()),
    setup = torch_setup,
    new = torch_new,
    fill = torch_fill,
    finish = torch_finish,
    views = TRUE,
    # Internal (not a documented hook): the new tensors whose memory a read
    # may fill itself (torch_read_memories()).
    memory = torch_read_memories,
    class = "torch_tensor",
    write = torch_write_piece
  )
}
