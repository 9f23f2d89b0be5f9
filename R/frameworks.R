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
      "{.arg framework} must be a single string, not {.obj_type_friendly {framework}}.",
      call = call
    )
  }
  if (framework %in% c("r", "raw")) {
    return(framework)
  }
  info <- safetensors_frameworks[[framework]]
  if (is.null(info)) {
    known <- c("r", "raw", sort(ls(safetensors_frameworks)))
    st_abort(
      "unknown_framework",
      c(
        "Unsupported framework {.val {framework}}.",
        i = "Known frameworks: {.val {known}}."
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
  if (identical(info$constructor, torch_tensor_from_raw)) {
    check_libtorch(call = call)
  }
  framework
}
