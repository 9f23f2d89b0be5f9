#' Frameworks that tensors can be loaded into
#'
#' `safetensors_frameworks` is an environment with one entry per framework
#' besides the built-in `"r"` and `"raw"`. Each entry is a
#' `list(constructor, packages)`: `packages` names the R packages the
#' framework needs, and `constructor(raw, meta, ...)` turns a tensor's bytes
#' (a raw vector, row-major as in the file) and its header entry
#' (`list(dtype, shape, data_offsets)`) into the framework's tensor; `...`
#' receives the extra arguments given to [safe_load_file()], such as
#' `device`. Packages such as pjrt register their own framework here, as with
#' safetensors 0.2.x, and provide [safe_tensor_buffer()] and
#' [safe_tensor_meta()] methods for writing their tensors.
#'
#' @format An environment. `"torch"` is registered by default.
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
safetensors_frameworks <- new.env()

check_framework <- function(framework, call = rlang::caller_env()) {
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
  framework
}
