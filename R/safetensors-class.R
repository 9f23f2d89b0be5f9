#' Lazy access to a safetensors file (the safetensors 0.2.x class)
#'
#' `safetensors` is the R6 class of safetensors 0.2.x, kept so that code
#' written for it runs unchanged: `safetensors$new(path, framework =
#' "torch")`, then `$keys()`, `$get_tensor(name)` and the fields `metadata`,
#' `max_offset`, `framework`, `args` and `con`. It is now backed by
#' [safe_open()], so the header is validated once and each `$get_tensor()`
#' reads only that tensor's bytes. New code can use [safe_open()] directly.
#'
#' @section Methods:
#' * `$new(path, ..., framework = "r", int64 = "double", uint8 = "integer")`:
#'   opens `path`, a file path (a shard index works too), a raw vector, or
#'   an open binary connection, which is read into memory from its current
#'   position and left open. `...` is
#'   stored in `$args` and passed to the framework's constructor. `framework`
#'   is `"r"` (R arrays), `"raw"`, or a registered framework such as
#'   `"torch"`; it had no default in 0.2.x. `int64` and `uint8` (new, for
#'   `framework = "r"`) choose what I64, U64 and U8 tensors become, as for
#'   [safe_load_file()].
#' * `$keys()`: tensor names in header order, without `"__metadata__"`.
#' * `$get_tensor(name)`: reads one tensor; for a framework, calls its
#'   constructor as `constructor(raw, meta, ...)` with the tensor's bytes,
#'   its header entry and `$args`. An unknown name is an error of class
#'   `safetensors_error_tensor_not_found`.
#'
#' @section Fields:
#' * `metadata`: the parsed header as a named list in header order: for each
#'   tensor `list(dtype, shape, data_offsets)`, and `__metadata__` as a named
#'   list of strings (the same as `attr(x, "metadata")` of
#'   [safe_load_file()]).
#' * `max_offset`: the absolute file offset just past the last byte of the
#'   tensors read so far (0 before any).
#' * `framework`, `args`: as given.
#' * `con`: the connection given as `path`, else `NULL` (0.2.x kept a file
#'   connection open here; the file is now held by the handle, which is
#'   released when the object is garbage-collected).
#'
#' @format An [R6::R6Class] generator.
#' @export
#' @examples
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' f <- safetensors$new(path, framework = "r")
#' f$keys()
#' f$get_tensor("weight")
#' f$metadata$bias
#' f$max_offset
safetensors <- R6::R6Class("safetensors",
  public = list(
    con = NULL,
    metadata = NULL,
    framework = NULL,
    args = NULL,
    max_offset = 0L,

    initialize = function(path, ..., framework = "r", int64 = c("double", "integer64", "character"),
                          uint8 = c("integer", "raw")) {
      # Errors cite the user's `safetensors$new()` (see error_frame()).
      .st_entry <- "caller"
      check_required(path)
      self$framework <- check_framework(framework)
      self$args <- list(...)
      if (inherits(path, "connection")) {
        self$con <- path
      }
      private$handle <- safe_open(path, framework = framework, ..., int64 = int64, uint8 = uint8)
      self$metadata <- combined_header(private$handle)
      invisible(self)
    },

    keys = function() {
      nms <- names(self$metadata)
      nms[nms != "__metadata__"]
    },

    get_tensor = function(name) {
      .st_entry <- TRUE
      if (!is_string(name)) {
        st_abort("invalid_argument", "{.arg name} must be a single string, not {value_friendly(name)}.")
      }
      h <- private$handle
      name <- tensor_name(h, name)
      res <- read_handle(h, name, self$framework, self$args)
      self$max_offset <- max(self$max_offset, res$max_offset)
      res$tensors[[1]]
    }
  ),
  private = list(
    handle = NULL
  )
)
