#' Frameworks that tensors can be loaded into
#'
#' `safetensors_frameworks` is an environment with one entry per framework
#' besides the built-in `"r"` and `"raw"`. Each entry is a list with at
#' least `constructor` and `packages`, as in safetensors 0.2.x: `packages`
#' names the R packages the framework needs, and `constructor(raw, meta,
#' ...)` turns a tensor's bytes (a raw vector, row-major as in the file) and
#' its header entry (`list(dtype, shape, data_offsets)`, with `shape` a list
#' for a scalar, as safetensors 0.2.x gave it) into the framework's tensor;
#' `...` receives the extra arguments given to [safe_load_file()],
#' [safe_deserialize()], [safe_open()] or `safetensors$new()`, such as
#' `device`. Packages such as pjrt register their own framework here, as
#' with safetensors 0.2.x (from their `.onLoad`, through
#' `utils::getFromNamespace("safetensors_frameworks", "safetensors")`), and
#' provide [safe_tensor_buffer()] and [safe_tensor_meta()] methods for
#' writing their tensors.
#'
#' Asking for a framework that is not registered is an error of class
#' `safetensors_error_unknown_framework` listing the known ones; one whose
#' packages are not installed, of class
#' `safetensors_error_framework_not_installed` (a subclass of
#' `safetensors_error_package_not_installed`) naming them (in field
#' `package`). So is `"torch"` when the torch package is installed but
#' LibTorch (`torch::install_torch()`) is not.
#'
#' @section Fast paths:
#' An entry may also have these optional fields, which let the readers and
#' writers copy tensors straight into and out of memory the framework
#' allocates, piece by piece, instead of building a raw vector of each
#' tensor (the registry's own entries, and every loader, use them when they
#' are there; an entry without them works as above):
#' * `check = function(call)`: called after the packages are found, for
#'   what else the framework needs (torch: LibTorch); it raises a classed
#'   error, with `call` as the call to report.
#' * `dtypes`: the file dtypes the framework reads, such as `c("F32",
#'   "BF16")`. A read asking for a tensor of another dtype is an error of
#'   class `safetensors_error_unsupported_dtype` before anything is read.
#' * `new = function(dtype, shape, ...)`: a new, uninitialised tensor in host
#'   memory for a tensor of the file's `dtype` (such as `"F32"`) and `shape`
#'   (a numeric vector, outermost first; `numeric(0)` for a scalar); `...`
#'   are the extra arguments of the read.
#' * `fill = function(x, bytes, piece)`: copies the bytes of one piece of
#'   the tensor into `x` (a tensor from `new`). A piece is consecutive rows
#'   of the tensor in row-major order, described by `piece`, a list with
#'   `offset` and `size` (where its bytes start in the tensor's bytes, and
#'   how many there are), `shape` (its own shape), `dtype` (the file's), and
#'   `select`, `start` and `n`: the piece is the tensor indexed (1-based)
#'   by `select` in its first dimensions and then, unless `start` is `NULL`,
#'   rows `start` to `start + n - 1` of the next one. `bytes` holds the
#'   piece's bytes at its start (it may be longer): a raw vector or, if the
#'   entry has `views = TRUE`, possibly an external pointer whose address is
#'   the first byte (of a memory map or a raw vector: no copy at all). Either
#'   is valid only during the call: copy what is needed. Pieces come in
#'   order, each at most 32 MiB (16 MiB from a staging buffer) unless a
#'   single element is larger, and the next piece is read ahead while `fill`
#'   copies one.
#' * `finish = function(x, ...)`: the tensor to return once every piece of
#'   `x` was filled (for example moved to a device given in `...`); by
#'   default `x` itself.
#' * `setup = function(.env, helper)`: called before a read or a write
#'   through these hooks, to change what the framework needs changed
#'   meanwhile, undone when the frame `.env` exits (as withr's `local_`
#'   functions do). `helper` is `TRUE` when a thread of this package reads
#'   or writes the file meanwhile (reading without a map, writing), so
#'   that the framework can leave it a core: torch makes the CPU its
#'   default device, and then uses one thread fewer.
#' * `views`: `TRUE` if `fill` accepts external pointers (see above).
#' * `class` and `write = function(x, piece, buffer)`: writers copy tensors
#'   of class `class` piece by piece (pieces as for `fill`, of the tensor's
#'   logical shape from [safe_tensor_meta()]): `write` either copies the
#'   piece's bytes, row-major, into the first `piece$size` bytes of the raw
#'   vector `buffer` in place (as torch does) and returns `NULL`, or returns
#'   them as a raw vector of `piece$size` bytes. [safe_tensor_buffer()] is
#'   then not called.
#'
#' @section torch:
#' `"torch"` is registered by default, with `packages = "torch"`,
#' constructor `function(raw, meta, device = "cpu")` and every fast path.
#' Tensors come back with torch's dtype for the file's (F64, F32, F16,
#' BF16, I64, I32, I16, I8, U8, BOOL, C64 as `torch_cfloat()`, F8_E4M3 as
#' `torch_float8_e4m3fn()`, F8_E5M2 as `torch_float8_e5m2()`) on `device`.
#' A tensor of a dtype R torch has no type for (U16, U32, U64, F8_E8M0, the
#' FNUZ float8 types, F6, F4) is an error of class
#' `safetensors_error_unsupported_dtype`; read such files with `framework =
#' "r"` or `"raw"`. BOOL bytes other than 0 and 1 become true.
#'
#' Tensors are read into memory torch allocates, in one copy. From a file,
#' a file connection (such as the one `torch_load()` opens) or a raw
#' vector, a tensor with elements in a dtype other than BOOL and C64 is
#' read straight into its memory, with positioned reads on the package's
#' threads (`safetensors.threads`) whatever `backend`; torch copies the
#' others (BOOL, whose true may be any non-zero byte in a file, C64,
#' scalars) piece by piece from the memory map or the vector itself, or
#' (`backend = "read"`, files on network file systems) from a staging
#' buffer the file is read into, ahead of the copy. From other connections,
#' through a small buffer, tensor by tensor, so the file is never held in
#' memory as a whole. A `device` other than `"cpu"` then moves each tensor
#' there. If the registered entry is replaced by one
#' without the fast paths, its constructor is called instead with each
#' tensor's bytes.
#'
#' Writing to a file or a file connection (as `torch_save()` does), a CPU
#' tensor whose memory holds exactly the bytes the file stores (row-major
#' from the start of its storage, in the file's dtype, neither complex nor a
#' negated view; torch itself checks this) is written from that memory,
#' without a copy; other tensors, and writes to raw vectors and other
#' connections, go through staging buffers piece by piece.
#'
#' @format An environment. `"torch"` is registered by default.
#' @seealso [safe_tensor_buffer()] for writing framework tensors.
#' @export
#' @examples
#' ls(safetensors_frameworks)
#'
#' # A framework that returns each tensor's header entry
#' safetensors_frameworks[["header"]] <- list(
#'   constructor = function(raw, meta, ...) meta,
#'   packages = character()
#' )
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' str(safe_load_file(path, framework = "header")$bias)
#' rm("header", envir = safetensors_frameworks)
#'
#' # A framework with the read fast path: each tensor's byte sum, summed
#' # piece by piece, never holding a tensor's bytes
#' safetensors_frameworks[["bytesum"]] <- list(
#'   constructor = function(raw, meta, ...) sum(as.integer(raw)),
#'   packages = character(),
#'   new = function(dtype, shape, ...) {
#'     x <- new.env()
#'     x$sum <- 0
#'     x
#'   },
#'   fill = function(x, bytes, piece) {
#'     x$sum <- x$sum + sum(as.integer(bytes[seq_len(piece$size)]))
#'   },
#'   finish = function(x, ...) x$sum
#' )
#' safe_load_file(path, framework = "bytesum")$weight
#' rm("bytesum", envir = safetensors_frameworks)
#' @examplesIf rlang::is_installed("torch") && torch::torch_is_installed()
#' # torch tensors, on the device asked for
#' x <- safe_load_file(path, framework = "torch", device = "cpu")
#' x$weight
safetensors_frameworks <- new.env()

check_framework <- function(framework, call = parent.frame()) {
  if (!is_string(framework)) {
    st_abort(
      "invalid_argument",
      "{.arg framework} must be a single string, not {value_friendly(framework)}.",
      call = call
    )
  }
  if (framework %in% c("r", "raw")) {
    return(framework)
  }
  info <- safetensors_frameworks[[framework]]
  if (is.null(info)) {
    known <- c("r", "raw", registered_frameworks())
    meant <- closest_name(framework, known)
    st_abort(
      "unknown_framework",
      c(
        "Unsupported framework {.val {framework}}.",
        i = "Known frameworks: {.val {known}}.",
        i = if (!is.null(meant)) "Did you mean {.code framework = \"{meant}\"}?"
      ),
      call = call
    )
  }
  missing <- Filter(function(p) !requireNamespace(p, quietly = TRUE), info$packages)
  if (length(missing) > 0) {
    st_abort(
      "framework_not_installed",
      c(
        "Framework {.val {framework}} needs the package{?s} {.pkg {missing}}, which {?is/are} not installed.",
        i = "Install {?it/them} with {.code install.packages({deparse(missing)})}."
      ),
      package = missing,
      call = call
    )
  }
  # A framework may need more than its packages (torch needs LibTorch).
  if (is.function(info$check)) {
    info$check(call = call)
  }
  framework
}

# The frameworks registered in `safetensors_frameworks`, sorted; an entry
# set to NULL (`safetensors_frameworks[["x"]] <- NULL` keeps the name) is
# not one.
registered_frameworks <- function() {
  nms <- ls(safetensors_frameworks)
  keep <- vapply(nms, function(n) !is.null(safetensors_frameworks[[n]]), logical(1))
  sort(nms[keep])
}

check_framework_args <- function(framework, args, call = parent.frame()) {
  if (framework %in% c("r", "raw") && length(args) > 0) {
    abort_dots_not_empty(framework, args, call)
  }
}

# The error for arguments in `...` when `framework` ("r" or "raw") passes
# none on: it shows them, and suggests the argument of the function the
# user called (see error_frame()) that each was probably meant to be, such
# as `tensors =` for `tensor = "a"` or `framework = "raw"` for an unnamed
# "raw".
abort_dots_not_empty <- function(framework, args, call) {
  nms <- names(args) %||% rep("", length(args))
  nms[is.na(nms)] <- ""
  shown <- vapply(seq_along(args), function(k) {
    paste(if (nzchar(nms[[k]])) nms[[k]] else paste0("..", k), "=", format_arg_value(args[[k]]))
  }, character(1))
  formal <- setdiff(names(frame_formals(call)), "...")
  hints <- unlist(lapply(seq_along(args), function(k) dots_hint(nms[[k]], args[[k]], formal)))
  if (length(hints) == 0) {
    hints <- paste(
      "Arguments in {.arg ...} go to the tensor constructor of a framework such as",
      "{.code framework = \"torch\"} (for example {.code device}); {.code framework = \"{framework}\"} takes none."
    )
  }
  st_abort(
    "invalid_argument",
    c(
      "{.arg ...} must be empty for {.code framework = \"{framework}\"}.",
      x = "Problematic argument{?s}: {.code {shown}}.",
      i = hints[[1]]
    ),
    call = call
  )
}

# "Did you mean ...?" for one argument in `...`: `name` (or "" when
# unnamed) and `value`, given the calling function's other arguments.
dots_hint <- function(name, value, formal) {
  if (nzchar(name)) {
    meant <- closest_name(name, formal)
    if (is.null(meant)) {
      return(NULL)
    }
    return(paste0("Did you mean {.code ", meant, " = ", cli_escape(format_arg_value(value)), "}?"))
  }
  if (is_string(value) && "framework" %in% formal && value %in% c("r", "raw", registered_frameworks())) {
    return(paste0("Did you mean {.code framework = ", cli_escape(format_arg_value(value)), "}?"))
  }
  if (is_string(value) && "backend" %in% formal && value %in% backends) {
    return(paste0("Did you mean {.code backend = ", cli_escape(format_arg_value(value)), "}?"))
  }
  if (is.character(value) && "tensors" %in% formal) {
    return(paste0("To read only some tensors, name them: {.code tensors = ", cli_escape(format_arg_value(value)), "}."))
  }
  NULL
}

# ---- the fast paths: tensors in pieces -------------------------------------

# The entry of `framework` when it has the read fast path (`new` and
# `fill`, see ?safetensors_frameworks), else NULL: its constructor then
# receives each tensor's bytes.
framework_hooks <- function(framework) {
  if (framework %in% c("r", "raw")) {
    return(NULL)
  }
  entry <- safetensors_frameworks[[framework]]
  if (is.function(entry$new) && is.function(entry$fill)) entry else NULL
}

# A classed error naming the first of tensors `names` whose dtype (in
# `dtypes`) is not among the `supported` ones of `framework`; nothing if
# there is none. Readers check every tensor they are asked for before
# reading any.
check_framework_dtypes <- function(dtypes, names, supported, framework, call = parent.frame()) {
  if (is.null(supported)) {
    return(invisible())
  }
  bad <- which(!dtypes %in% supported)
  if (length(bad) == 0) {
    return(invisible())
  }
  dtype <- dtypes[[bad[[1]]]]
  name <- if (is.null(names)) NULL else names[[bad[[1]]]]
  what <- if (is.null(name)) "A tensor" else "Tensor {.val {name}}"
  st_abort(
    "unsupported_dtype",
    c(
      paste(what, "has dtype {.val {dtype}}, which framework {.val {framework}} has no type for."),
      i = "Read it with {.code framework = \"r\"} (R arrays) or {.code framework = \"raw\"} (its bytes) instead.",
      i = "Framework {.val {framework}} reads these dtypes: {.val {supported}}."
    ),
    dtype = dtype,
    tensor = name,
    call = call
  )
}

# Bytes of a piece: each tensor is read (and written) in pieces of at most
# this size (a single element may be larger), each one copy by the
# framework, whose fixed cost (torch's method dispatch, and its threads'
# start, which on a busy machine waits for a core: copying 64 MiB in 4 MiB
# pieces took four times as long as in one) small pieces multiply, while a
# piece of the map stays in memory until it is copied. From a map or a raw
# vector, pieces of `piece_bytes`; through the two staging vectors of a
# read without a map, of `stage_bytes`. Writes go through two staging
# vectors of `write_bytes`: torch_save() of 1 GiB (16 F32 tensors of
# 4096 x 4096, six saves per size alternating in one process on a shared
# machine) took a median 0.79 s with pieces of 2 MiB and 0.62-0.72 s with
# 4, 8 and 16 MiB, within noise of each other; 4 MiB holds the least.
piece_bytes <- 32 * 1024^2
stage_bytes <- 16 * 1024^2
write_bytes <- 4 * 1024^2

# The pieces, in row-major order, in which a tensor of `shape` whose
# elements have `size` bytes is copied: at most `chunk` bytes each where
# possible, each consecutive outer rows (a row larger than that is split
# the same way). R torch indexes dimensions with R integers, so pieces are
# taken along dimensions, never from a flattened tensor whose length may
# exceed them. Pieces are planned on the logical shape alone: for a
# strided tensor, the framework gathers each one.
#
# Each piece is `list(select, start, n)`: the tensor's `select(1, i)` for
# each `i` of `select` in turn (1-based), then, unless `start` is NULL,
# `narrow(1, start, n)` of that.
tensor_pieces <- function(shape, size, chunk, select = integer()) {
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
      tensor_pieces(rest, size, chunk, c(select, i))
    })))
  }
  per <- floor(chunk / row_bytes)
  start <- seq(1, rows, by = per)
  n <- pmin(per, rows - start + 1)
  Map(function(start, n) list(select = select, start = start, n = n), start, n)
}

# The pieces of a tensor of `dtype` and `shape` as the hooks get them
# (?safetensors_frameworks): tensor_pieces() with each piece's `shape`,
# `offset` and `size` (bytes in the tensor's row-major bytes) and `dtype`.
# Pieces are planned on elements of `plan_size` bytes (the larger of the
# file's and a destination's, so that neither side of a copy that converts
# exceeds `chunk`). A tensor of a sub-byte dtype is one piece: its pieces
# would start inside bytes.
plan_pieces <- function(dtype, shape, chunk = stage_bytes, plan_size = NULL) {
  plan_tensors_pieces(dtype, list(shape), chunk, plan_size)[[1]]
}

# plan_pieces() of each of the tensors of `dtypes` and `shapes` (a list),
# planned on `plan_sizes` (a number per tensor, or NULL): one call for a
# file's tensors, as most of a model's are one piece each, which is
# planned here for all at once.
plan_tensors_pieces <- function(dtypes, shapes, chunk = stage_bytes, plan_sizes = NULL) {
  shapes <- lapply(shapes, function(s) as.numeric(unlist(s)))
  tab <- dtype_table()
  bits <- tab$bits[match(dtypes, tab$name)]
  size <- bits / 8
  numel <- vapply(shapes, prod, numeric(1))
  plan <- if (is.null(plan_sizes)) size else pmax(size, as.numeric(unlist(plan_sizes)))
  bytes <- ceiling(numel * bits / 8)
  one <- lengths(shapes) == 0 | size < 1 | numel * plan <= chunk
  lapply(seq_along(shapes), function(j) {
    if (one[[j]]) {
      # The whole tensor (what the general case makes of it, without its
      # arithmetic).
      return(list(list(
        select = integer(), start = NULL, n = NULL, shape = shapes[[j]], offset = 0,
        size = bytes[[j]], dtype = dtypes[[j]]
      )))
    }
    split_pieces(dtypes[[j]], shapes[[j]], size[[j]], plan[[j]], chunk)
  })
}

# The pieces of a tensor of `dtype` and `shape` (of elements of `size`
# bytes, at least 1) larger than `chunk`, planned on elements of `plan`
# bytes.
split_pieces <- function(dtype, shape, size, plan, chunk) {
  rank <- length(shape)
  stride <- row_major_strides(shape)
  lapply(tensor_pieces(shape, plan, chunk), function(p) {
    k <- length(p$select)
    first <- sum((p$select - 1) * stride[seq_len(k)])
    if (is.null(p$start)) {
      piece <- shape[seq_len(rank) > k]
    } else {
      first <- first + (p$start - 1) * stride[[k + 1]]
      piece <- c(p$n, shape[seq_len(rank) > k + 1])
    }
    p$shape <- piece
    p$offset <- first * size
    p$size <- tensor_bytes(dtype, piece)
    p$dtype <- dtype
    p
  })
}

# Whether the bytes of `part` are in memory (a memory map or a raw vector),
# where a framework can copy from views of them.
part_in_memory <- function(part) {
  !part_is_remote(part) && part_kind(part) %in% c("mmap", "memory")
}

# Reads tensors `names` (of `dtypes` and `shapes`, in the file order of
# `part`, an open source of R/sources.R) piece by piece through `fill(x,
# bytes, piece)`: for the j-th, `target(j)` gives the tensor to fill (a new
# one, or a module's parameter), whose pieces (plan_pieces(), planned on
# elements of `plan_sizes[[j]]` bytes when given) are filled in order, and
# `done(j, x)` is called once it is full. A local part's pieces come from
# one reader (piece_reader_()): views of its map or raw vector when `views`
# (the framework copies from them; pieces of `piece_bytes`), else staging
# vectors the core reads into, with the next piece read ahead on a helper
# thread (pieces of `stage_bytes`, or `chunk`); a remote part's from one
# range request per tensor, as they arrive. `setup(.env, helper)`, the
# framework's hook, is called first. With `memory` (the framework's
# internal hook, torch_read_memories()), a local part's tensors whose
# memory can take the file's bytes as stored skip the pieces: they are read
# straight into it (read_into_memories(); `fresh`: the targets are new
# tensors rather than a module's).
read_part_pieces <- function(part, names, dtypes, shapes, target, fill, done, views, call,
                             plan_sizes = NULL, chunk = NULL, setup = NULL, memory = NULL, fresh = TRUE) {
  if (length(names) == 0) {
    return(invisible())
  }
  remote <- part_is_remote(part)
  views <- views && part_in_memory(part)
  if (is.function(setup)) {
    setup(environment(), helper = !views && !remote && st_threads() > 1)
  }
  if (is.function(memory) && !remote) {
    # Tensors whose memory holds the file's bytes as stored are read
    # straight into it, the others piece by piece; in batches of about
    # `memory_batch` bytes (a larger tensor alone), so that no more than a
    # batch of new tensors waits for `done` (which may move each to a GPU),
    # and a progress bar moves.
    sizes <- vapply(seq_along(names), function(j) tensor_bytes(dtypes[[j]], unlist(shapes[[j]])), numeric(1))
    batch <- cumsum(sizes) %/% memory_batch
    for (b in unique(batch)) {
      js <- which(batch == b)
      xs <- lapply(js, target)
      rest <- read_into_memories(part, names[js], dtypes[js], shapes[js], xs, memory, fresh,
        done = function(k, x) done(js[[k]], x), call = call
      )
      read_part_pieces(part, names[js[rest]], dtypes[js[rest]], shapes[js[rest]],
        target = function(k) xs[[rest[[k]]]], fill = fill, done = function(k, x) done(js[[rest[[k]]]], x),
        views = views, call = call, plan_sizes = plan_sizes[js[rest]], chunk = chunk
      )
    }
    return(invisible())
  }
  chunk <- chunk %||% if (views) piece_bytes else stage_bytes
  pieces <- plan_tensors_pieces(dtypes, shapes, chunk, plan_sizes)
  start <- 8 + part$info$header_len + part$info$begin[match(names, part$info$name)]
  if (remote) {
    for (j in seq_along(names)) {
      x <- target(j)
      p <- pieces[[j]]
      sizes <- vapply(p, function(q) q$size, numeric(1))
      if (sum(sizes) > 0) {
        remote_bytes(part, start[[j]], sum(sizes), sizes, function(k, bytes) fill(x, bytes, p[[k]]), call = call)
      }
      done(j, x)
    }
    return(invisible())
  }
  offsets <- unlist(lapply(seq_along(names), function(j) start[[j]] + vapply(pieces[[j]], function(q) q$offset, numeric(1))))
  sizes <- unlist(lapply(pieces, function(p) vapply(p, function(q) q$size, numeric(1))))
  # Empty pieces (of tensors without elements) are never handed out.
  keep <- sizes > 0
  rd <- check_part(piece_reader_(part$ptr, as.numeric(offsets[keep]), as.numeric(sizes[keep]), views, st_threads()), part, call = call)
  on.exit(piece_end_(rd), add = TRUE)
  for (j in seq_along(names)) {
    x <- target(j)
    for (q in pieces[[j]]) {
      if (q$size > 0) {
        fill(x, check_part(piece_next_(rd), part, call = call), q)
      }
    }
    done(j, x)
  }
  check_part(piece_end_(rd), part, call = call)
  invisible()
}

# Reads the tensors `names` of a local part (of file `dtypes` and `shapes`)
# straight into the memory of the framework's tensors `xs` where `memory(xs,
# dtypes, shapes)` gives its address (torch_read_memories()), in one call
# of the core's read engine on the package's threads (`fresh`: the memory
# is new, see read_into_memory_()), and calls `done(j, x)` for each.
# Returns the positions of the tensors left to read piece by piece: those
# without an address, and those sharing one (tied weights, which torch
# then copies into in turn).
read_into_memories <- function(part, names, dtypes, shapes, xs, memory, fresh, done, call) {
  at <- memory(xs, dtypes, shapes)
  direct <- which(!is.na(at) & !duplicated(at) & !duplicated(at, fromLast = TRUE))
  if (length(direct) > 0) {
    check_part(read_into_memory_(part$ptr, names[direct], at[direct], fresh, st_threads()), part, call = call)
  }
  for (j in direct) {
    done(j, xs[[j]])
  }
  setdiff(seq_along(names), direct)
}

# Bytes of tensors read straight into memory at once (read_part_pieces()).
memory_batch <- 256 * 1024^2

# Reads a tensor of `dtype` and `shape` from the connection's current
# position into a new tensor of the framework of `hooks`, piece by piece
# (readBin() of each piece, copied by `fill`), and returns it finished.
read_stream_into <- function(con, name, dtype, shape, hooks, args, part, call) {
  x <- do.call(hooks$new, c(list(dtype, as.numeric(unlist(shape))), args))
  for (q in plan_pieces(dtype, shape)) {
    if (q$size > 0) {
      hooks$fill(x, read_exact(con, q$size, part, name, call), q)
    }
  }
  do.call(hooks$finish %||% function(x, ...) x, c(list(x), args))
}

# ---- writing framework tensors ----------------------------------------------

# The registry entry that writes tensors like `x` piece by piece: one with
# a `write` hook whose `class` `x` inherits from, else NULL (the writers
# then call safe_tensor_buffer()).
framework_writer <- function(x) {
  for (nm in registered_frameworks()) {
    entry <- safetensors_frameworks[[nm]]
    if (is.function(entry$write) && is.character(entry$class) && inherits(x, entry$class)) {
      return(entry)
    }
  }
  NULL
}

# Writes framework tensor `x` (of `dtype` and `shape`, as its
# safe_tensor_meta() says) through `put(buffer, n)`, which receives the
# first `n` bytes of the raw vector `buffer` each time, piece by piece
# (plan_pieces()) with the `write` hook of `entry`: into one of two staging
# raw vectors, used in turn (`put` may still be writing one out while the
# hook fills the other) and reused for every piece (and, through `cache`,
# an environment, for every tensor of a save), or as the raw vector the
# hook returns, so the writer never holds more than two pieces of the
# tensor's bytes. `helper`: `put` writes on a helper thread (see `setup` in
# ?safetensors_frameworks).
write_pieces <- function(x, entry, dtype, shape, put, cache, helper = FALSE, chunk = write_bytes,
                         call = parent.frame()) {
  if (is.function(entry$setup)) {
    entry$setup(environment(), helper = helper)
  }
  if (is.null(cache$stages)) {
    cache$stages <- list(raw(), raw())
    cache$turn <- 1L
  }
  for (q in plan_pieces(dtype, shape, chunk)) {
    if (q$size == 0) {
      next
    }
    k <- cache$turn
    cache$turn <- 3L - k
    if (length(cache$stages[[k]]) < q$size) {
      cache$stages[[k]] <- raw(q$size)
    }
    got <- entry$write(x, q, cache$stages[[k]])
    if (is.null(got)) {
      put(cache$stages[[k]], q$size)
    } else if (is.raw(got) && length(got) == q$size) {
      put(got, q$size)
    } else {
      st_abort(
        "invalid_argument",
        "The {.code write} hook of the framework must return NULL or a raw vector of the piece's {q$size} bytes, not {.obj_type_friendly {got}}.",
        call = call
      )
    }
  }
  invisible()
}

#' Raw bytes and description of a framework tensor
#'
#' Generics that [safe_save_file()] and [safe_serialize()] call for tensors
#' that are not plain R vectors: `safe_tensor_meta()` describes the tensor
#' as `list(shape, dtype)` (the shape outermost first, the dtype a
#' safetensors name such as `"F32"`, or numpy's or torch's, such as
#' `"float32"`), and `safe_tensor_buffer()` returns its
#' bytes as a raw vector, row-major and little-endian, exactly as they go in
#' the file. Methods for `torch_tensor` are included; other packages (such as
#' pjrt) add methods for their own classes.
#'
#' The writers call `safe_tensor_meta()` for every tensor first (so a
#' tensor they can't write fails before anything is written), then
#' `safe_tensor_buffer()` for one tensor at a time while writing, so only
#' one tensor's bytes are held at a time. A buffer whose length disagrees
#' with the meta is an error of class `safetensors_error_invalid_argument`.
#'
#' @section torch tensors:
#' `safe_tensor_meta()` maps torch's dtype to the file's (see
#' [safetensors_frameworks] for the list); a dtype safetensors has no name
#' for (`torch_cdouble()`, quantized types) is an error of class
#' `safetensors_error_unsupported_dtype`. `safe_tensor_buffer()` copies the
#' tensor's logical values once into the raw vector: non-contiguous tensors
#' (transposed, sliced, expanded) are written as they print, tensors on a
#' GPU are copied to the host, and there is no size limit (torch's
#' `buffer_from_torch_tensor()` copies the underlying storage, ignoring
#' strides and offsets, and takes a 32-bit size: safetensors 0.2.x wrote
#' such tensors with the wrong bytes and crashed on 2 GiB). When writing files,
#' connections or [safe_serialize()] results, torch tensors are copied in
#' pieces of 4 MiB rather than whole (except transposed or permuted ones,
#' whose last dimension is strided). `requires_grad` is not stored.
#'
#' @param x A tensor.
#' @return `safe_tensor_meta()`: a list with elements `shape` and `dtype`.
#'   `safe_tensor_buffer()`: a raw vector.
#' @seealso [safetensors_frameworks] for reading tensors into a framework.
#' @export
#' @examples
#' # A minimal tensor class stored as raw bytes
#' bytes_tensor <- function(bytes, shape) {
#'   structure(list(bytes = bytes, shape = shape), class = "bytes_tensor")
#' }
#' safe_tensor_meta.bytes_tensor <- function(x) list(shape = x$shape, dtype = "U8")
#' safe_tensor_buffer.bytes_tensor <- function(x) x$bytes
#' registerS3method("safe_tensor_meta", "bytes_tensor", safe_tensor_meta.bytes_tensor)
#' registerS3method("safe_tensor_buffer", "bytes_tensor", safe_tensor_buffer.bytes_tensor)
#' raw <- safe_serialize(list(x = bytes_tensor(as.raw(1:6), c(2, 3))))
#' safe_deserialize(raw)$x
#' @examplesIf rlang::is_installed("torch") && torch::torch_is_installed()
#'
#' # torch tensors: the logical values of a transposed tensor, row-major
#' x <- torch::torch_tensor(matrix(1:6, 2, 3), dtype = torch::torch_int32())$t()
#' safe_tensor_meta(x)
#' readBin(safe_tensor_buffer(x), "integer", 6)
#' path <- tempfile(fileext = ".safetensors")
#' safe_save_file(list(x = x), path)
#' safe_load_file(path, framework = "torch")$x
#' safe_load_file(path)$x
safe_tensor_buffer <- function(x) {
  check_required(x)
  UseMethod("safe_tensor_buffer")
}

#' @rdname safe_tensor_buffer
#' @export
safe_tensor_meta <- function(x) {
  check_required(x)
  UseMethod("safe_tensor_meta")
}

#' @export
safe_tensor_buffer.default <- function(x) {
  no_tensor_method(x, "safe_tensor_buffer")
}

#' @export
safe_tensor_meta.default <- function(x) {
  no_tensor_method(x, "safe_tensor_meta")
}

no_tensor_method <- function(x, generic, call = parent.frame()) {
  st_abort(
    "invalid_argument",
    c(
      "Can't write an object of class {.cls {class(x)}} as a tensor.",
      i = "Tensors are R vectors or arrays, or objects with a {.fn {generic}} method."
    ),
    call = call
  )
}
