#' Frameworks that tensors can be loaded into
#'
#' `safetensors_frameworks` is an environment with one entry per framework
#' besides the built-in `"r"` and `"raw"`. Each entry is a
#' `list(constructor, packages)`: `packages` names the R packages the
#' framework needs, and `constructor(raw, meta, ...)` turns a tensor's bytes
#' (a raw vector, row-major as in the file) and its header entry
#' (`list(dtype, shape, data_offsets)`, with `shape` a list for a scalar, as
#' safetensors 0.2.x gave it) into the framework's tensor; `...` receives
#' the extra arguments given to [safe_load_file()], [safe_deserialize()],
#' [safe_open()] or `safetensors$new()`, such as `device`. Packages such as
#' pjrt register their own framework here, as with safetensors 0.2.x (from
#' their `.onLoad`, through `utils::getFromNamespace("safetensors_frameworks",
#' "safetensors")`), and provide [safe_tensor_buffer()] and
#' [safe_tensor_meta()] methods for writing their tensors.
#'
#' Asking for a framework that is not registered is an error of class
#' `safetensors_error_unknown_framework` listing the known ones; one whose
#' packages are not installed, of class
#' `safetensors_error_framework_not_installed` naming them (in field
#' `package`). So is `"torch"` when the torch package is installed but
#' LibTorch (`torch::install_torch()`) is not.
#'
#' @section torch:
#' `"torch"` is registered by default, with `packages = "torch"` and
#' constructor `function(raw, meta, device = "cpu")`. Tensors come back with
#' torch's dtype for the file's (F64, F32, F16, BF16, I64, I32, I16, I8, U8,
#' BOOL, C64 as `torch_cfloat()`, F8_E4M3 as `torch_float8_e4m3fn()`,
#' F8_E5M2 as `torch_float8_e5m2()`) on `device`. A tensor of a dtype R
#' torch has no type for (U16, U32, U64, F8_E8M0, the FNUZ float8 types, F6,
#' F4) is an error of class `safetensors_error_unsupported_dtype`; read such
#' files with `framework = "r"` or `"raw"`. BOOL bytes other than 0 and 1
#' become true.
#'
#' Tensors are read into memory torch allocates, in one copy: from a file,
#' a raw vector or a handle, the bytes go straight into the torch tensor; from
#' a connection, through a small buffer, tensor by tensor, so the file is
#' never held in memory as a whole. A `device` other than `"cpu"` then moves
#' each tensor there. If the registered constructor is replaced, it is called
#' instead with each tensor's bytes.
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
  # A built-in framework may need more than its packages (torch needs
  # LibTorch); its check runs while its own constructor is registered.
  extra <- framework_checks[[framework]]
  if (!is.null(extra) && identical(info$constructor, extra$constructor)) {
    extra$check(call = call)
  }
  framework
}

# Checks that built-in frameworks register with their constructor
# (register_framework_check()), keyed by framework name.
framework_checks <- new.env(parent = emptyenv())

register_framework_check <- function(framework, constructor, check) {
  framework_checks[[framework]] <- list(constructor = constructor, check = check)
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
# none on: it shows them, and suggests the argument of the calling function
# (the one whose frame is `call`) that each was probably meant to be, such
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
  if (is_string(value) && "backend" %in% formal && value %in% c("read", "mmap")) {
    return(paste0("Did you mean {.code backend = ", cli_escape(format_arg_value(value)), "}?"))
  }
  if (is.character(value) && "tensors" %in% formal) {
    return(paste0("To read only some tensors, name them: {.code tensors = ", cli_escape(format_arg_value(value)), "}."))
  }
  NULL
}

# A value as code in a message: short atomic values deparsed, others
# described, as `<a double matrix>`.
format_arg_value <- function(x) {
  if (is.atomic(x) && !is.object(x) && length(x) <= 5 && is.null(dim(x))) {
    text <- deparse1(x)
    if (nchar(text) <= 40) {
      return(text)
    }
  }
  paste0("<", cli::format_inline("{.obj_type_friendly {x}}"), ">")
}

# The formal arguments of the function whose frame is `env`, or NULL.
frame_formals <- function(env) {
  if (!is.environment(env)) {
    return(NULL)
  }
  frames <- sys.frames()
  # The first: read_checkpoint() evaluates a function's body again in its
  # frame, through eval(), whose frame shares the environment.
  for (i in seq_along(frames)) {
    if (identical(frames[[i]], env)) {
      return(formals(sys.function(i)))
    }
  }
  NULL
}

# ---- writing framework tensors ----------------------------------------------

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
#' pieces of 16 MiB rather than whole (except transposed or permuted ones,
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
  UseMethod("safe_tensor_buffer")
}

#' @rdname safe_tensor_buffer
#' @export
safe_tensor_meta <- function(x) {
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

no_tensor_method <- function(x, generic, call = parent.frame(2)) {
  st_abort(
    "invalid_argument",
    c(
      "Can't write an object of class {.cls {class(x)}} as a tensor.",
      i = "Tensors are R vectors or arrays, or objects with a {.fn {generic}} method."
    ),
    call = call
  )
}
