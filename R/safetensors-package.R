#' safetensors: read and write 'safetensors' tensor files
#'
#' Fast and safe reading and writing of 'safetensors' files, the tensor
#' storage format used by 'Hugging Face'. Start with [safe_load_file()],
#' [safe_save_file()] and [safe_open()].
#'
#' The package is documented under `safetensors-package` because the topic
#' `safetensors` is the safetensors 0.2.x R6 class, [safetensors].
#'
#' @docType package
#' @name safetensors-package
#' @keywords internal
NULL

## usethis namespace: start
#' @importFrom R6 R6Class
## usethis namespace: end
NULL
