#' @keywords internal
"_PACKAGE"

## usethis namespace: start
#' @importFrom R6 R6Class
## usethis namespace: end
# rlang and cli load with the package rather than inside the first call to
# safe_load_file() or safe_save_file() (about 0.1 s).
#' @importFrom rlang caller_env
#' @importFrom cli cli_abort
NULL
