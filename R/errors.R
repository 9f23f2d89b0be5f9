#' Errors and warnings of safetensors
#'
#' Every error the package raises is a condition of class
#' `safetensors_error`, with a subclass `safetensors_error_<kind>` naming the
#' problem (and `rlang_error`, `error` and `condition`), so code can catch
#' one kind with `tryCatch(..., safetensors_error_tensor_not_found = ...)`
#' and tests can check it with `testthat::expect_error(class = )`. Errors
#' about a malformed file also have class `safetensors_error_format`.
#' Warnings have class `safetensors_warning` and a subclass
#' `safetensors_warning_<kind>`. The classes are stable; the messages may
#' improve.
#'
#' Conditions about one tensor carry its name in the field `tensor`; those
#' about a missing package carry it in `package`, and those about a dtype in
#' `dtype`. An error's call (`conditionCall()`, printed as "Error in
#' `safe_load_file()`") is the function you called, as you called it (a
#' handle's `h$get_tensor("w")` or `h[-1]`, `safetensors$new(path)`), never
#' one of the package's internal functions. A required argument left out
#' and an argument a function doesn't take are errors of class
#' `safetensors_error_invalid_argument` too.
#'
#' @section Malformed files (also `safetensors_error_format`):
#' * `safetensors_error_header_too_small`: the input has fewer than the 8
#'   bytes of the header length.
#' * `safetensors_error_header_too_large`: the header length the first 8
#'   bytes give is over 100,000,000 bytes. This is how a file that is not a
#'   safetensors file usually fails; the message then says what it looks
#'   like (a PyTorch checkpoint, a pickle, a NumPy, GGUF or HDF5 file, a
#'   compressed file, a Git LFS pointer, a web page, other text) and what to
#'   do about it.
#' * `safetensors_error_invalid_header_length`: the header length runs past
#'   the end of the file (a truncated file, or one that isn't a safetensors
#'   file, described as above), or a connection ends inside the header.
#' * `safetensors_error_invalid_header`: the header is not UTF-8, not JSON,
#'   or not what the format requires (an unknown dtype, a malformed shape or
#'   `data_offsets`, metadata values that are not strings).
#' * `safetensors_error_invalid_offset`: a tensor's bytes don't start where
#'   the previous tensor's end (a gap or an overlap).
#' * `safetensors_error_invalid_tensor_info`: a tensor's dtype and shape
#'   disagree with the length of its bytes.
#' * `safetensors_error_incomplete_buffer`: the data are shorter or longer
#'   than the tensors the header describes, including a connection that ends
#'   early or holds more bytes after the data.
#' * `safetensors_error_overflow`: a size computed from the header
#'   overflows.
#' * `safetensors_error_misaligned`: a tensor of a sub-byte dtype (F4, F6)
#'   doesn't fill whole bytes, or a slice of one doesn't start and end on a
#'   byte boundary.
#' * `safetensors_error_duplicate_name`: two tensors of a header share a
#'   name. Tensors to write with repeated names ([safe_save_file()]) are the
#'   same class, without `safetensors_error_format`.
#' * `safetensors_error_invalid_index`: the index of a sharded checkpoint is
#'   malformed, names a shard outside its directory, or puts a tensor in a
#'   shard that doesn't hold it.
#'
#' @section Files and handles:
#' * `safetensors_error_file_not_found`: the file (or a shard) does not
#'   exist; for an `hf://` path, the file is not in the repository at that
#'   revision (or the folder holds no checkpoint); fields `repo`,
#'   `revision` and `file` then.
#' * `safetensors_error_io`: any other failure of the operating system: a
#'   path that is a directory, a FIFO or a device (read from, or saved to:
#'   a save refuses them before writing), permission denied, a full disk, a
#'   failed rename; and an error of a connection being read or written
#'   (R's own condition as `parent`).
#' * `safetensors_error_memory`: the result doesn't fit in memory; raised
#'   before the result is allocated.
#' * `safetensors_error_file_changed`: the file under an open handle
#'   ([safe_open()]) was truncated or rewritten in place; or a checkpoint
#'   was replaced by other saves, again and again, while it was being
#'   opened (50 times: a reader starts over each time).
#' * `safetensors_error_closed`: a closed handle was used, or a closed
#'   connection given.
#' * `safetensors_error_interrupted`: the user interrupted a load or a save
#'   (Ctrl-C); a save leaves no partial file.
#' * `safetensors_error_http`: an `http://` or `https://` URL could not be
#'   read: the server answered with an error status (401, 403, 404, 416,
#'   ...), ignored range requests, or could not be reached; fields `status`
#'   (the HTTP status, `NA` without a response) and `url` (credentials
#'   redacted).
#'
#' @section Hugging Face Hub paths:
#' Errors about an `hf://` path (see [safetensors-hub]) have field `repo`,
#' and where they apply `revision`, `file`, `status` and `url`.
#' * `safetensors_error_repo_not_found`: no such repository on the Hub, or
#'   a private one that the token sent (if any) can't read.
#' * `safetensors_error_gated`: a gated model whose terms the account of
#'   the token has not accepted (or no token was sent).
#' * `safetensors_error_revision_not_found`: the branch, tag or commit is
#'   not in the repository.
#' * `safetensors_error_offline`: `HF_HUB_OFFLINE` is set and the Hub cache
#'   holds no copy of what was asked for.
#'
#' Other failures to reach the Hub are `safetensors_error_http`, and a
#' missing file `safetensors_error_file_not_found` (above).
#'
#' @section Arguments and values:
#' * `safetensors_error_invalid_argument`: an argument has the wrong type or
#'   value (the message quotes it), a tensor name or metadata string that
#'   can't be written as UTF-8 (shown escaped), a connection open in text
#'   mode or in the wrong direction, an argument in `...` that the framework
#'   doesn't take (the message suggests the argument probably meant, such
#'   as `tensors =` for `tensor =`), a value that is not a tensor, or a
#'   framework buffer that disagrees with its description.
#' * `safetensors_error_tensor_not_found`: a tensor asked for (`tensors =`,
#'   `h[["name"]]`, `$get_tensor()`, names in `dtype =`) is not in the file
#'   or the list.
#' * `safetensors_error_invalid_slice`: a slice index is out of range,
#'   `NA`, of the wrong type, or the number of indices is not the tensor's
#'   rank.
#' * `safetensors_error_conversion`: a value can't be written in the
#'   tensor's dtype (out of range, 2^63 as I64 and 2^64 as U64 included;
#'   beyond a float dtype's largest value; a fraction for an integer dtype;
#'   `NaN` or an infinity where the dtype has none; `NA` in an integer or
#'   logical tensor), or, where the dtype came from the tensor's `"dtype"`
#'   attribute alone, isn't held exactly by it (see [safe_save_file()]);
#'   fields `tensor` and, for the attribute, `dtype`.
#' * `safetensors_error_unsupported`: a valid file holds something R can't
#'   represent as asked, such as a dimension over `.Machine$integer.max`.
#' * `safetensors_error_unsupported_dtype`: a dtype the framework has no
#'   type for (R torch has no U16, U32, U64, F8_E8M0, FNUZ float8, F6 or F4;
#'   safetensors has no `torch_cdouble()`); field `dtype`.
#' * `safetensors_error_unknown_framework`: a `framework` that is not
#'   registered in [safetensors_frameworks].
#' * `safetensors_error_package_not_installed`: a package a function needs
#'   for what it was asked is not installed (curl for URLs, bit64 for
#'   `int64 = "integer64"`, the packages of a framework such as torch, or
#'   torch's LibTorch); field `package`. Catch this class for any missing
#'   package.
#' * `safetensors_error_framework_not_installed`: a subclass of
#'   `safetensors_error_package_not_installed` for the packages of a
#'   framework (and LibTorch), kept for code written for safetensors 0.4.0,
#'   where the two classes were unrelated.
#'
#' @section Writing in blocks:
#' [safe_writer()] and [safe_convert()] write tensors a block of rows at a
#' time; a block that fails counts as not written, and the writer stays
#' usable.
#' * `safetensors_error_already_written`: rows of a tensor were written
#'   already (a block written twice, or overlapping another); field
#'   `tensor`.
#' * `safetensors_error_incomplete_write`: a writer was closed with rows
#'   not written; field `tensors`, the names of the tensors not fully
#'   written. Nothing is written at the path, and the writer stays open.
#' * `safetensors_error_shape_mismatch` (below) when a block is not the
#'   shape of its rows (fields `tensor` and `expected`, the shape the block
#'   needs).
#' * A save to a folder that a writer of the same R session holds until it
#'   is closed is an error of class `safetensors_error_io`, rather than a
#'   wait that can't end.
#'
#' @section Loading into torch modules:
#' [safe_load_model()] checks the file against the module before it changes
#' anything; the module is unchanged after these errors (but for the one
#' case of `safetensors_error_transform` said below).
#' * `safetensors_error_name_mismatch`: with `strict = TRUE`, the module has
#'   tensors the file lacks, or the file has tensors the module has no place
#'   for; fields `missing` and `unexpected`.
#' * `safetensors_error_shape_mismatch`: tensors have other shapes in the
#'   file (or after their `transform`) than in the module; fields `tensor`
#'   (the module's names), `file_tensor` (the file's, see `rename`),
#'   `file_shape`, `transformed_shape` (`NULL` for a tensor without a
#'   transform) and `model_shape`.
#' * `safetensors_error_dtype_mismatch`: tensors whose dtype in the file
#'   (or after their `transform`) would lose values in the module's dtype
#'   (floats into integers or booleans, complex into real); fields
#'   `tensor`, `file_tensor`, `dtype`, `model_dtype`.
#' * `safetensors_error_rename`: `rename` gives two of the file's tensors
#'   the same name (fields `from`, a list of the file's names for each
#'   name of `to`), or turns a name into the empty string (`from`, `to`);
#'   or the function given as `rename` fails (the error it raised is the
#'   `parent`) or returns anything but a character vector as long as its
#'   input.
#' * `safetensors_error_transform`: a function of `transform` fails, on the
#'   "meta" device or on the values (the error it raised is the `parent`),
#'   returns anything but a torch tensor, or a tensor whose shape differs
#'   from the one it returned on the meta device (then the model is partly
#'   loaded); a tensor's name matches two patterns; or, with
#'   `strict = TRUE`, a pattern matches no tensor. Fields `tensor`,
#'   `file_tensor` and `pattern` where they apply.
#'
#' @section Warnings:
#' * `safetensors_warning_precision`: I64, U32 or U64 values beyond 2^53
#'   were rounded to the nearest double.
#' * `safetensors_warning_type`: an I32 tensor holding -2147483648 (`NA` in
#'   R integers) was returned as double.
#' * `safetensors_warning_range`: 64-bit values that bit64's `integer64`
#'   can't hold (U64 values over 2^63 - 1, and I64's -2^63, which is its
#'   `NA`) were read as `NA` with `int64 = "integer64"`.
#'
#' @name safetensors-conditions
#' @aliases safetensors_error safetensors_warning
#' @examples
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' res <- tryCatch(
#'   safe_load_file(path, tensors = "embedding"),
#'   safetensors_error_tensor_not_found = function(e) e
#' )
#' class(res)
#' res$tensor
#'
#' # A file that isn't a safetensors file
#' not_st <- tempfile()
#' writeLines("just some text", not_st)
#' try(safe_load_file(not_st))
#' unlink(not_st)
NULL

# Errors and warnings of the package, all raised through these helpers so
# their classes stay consistent:
#   c("safetensors_error_<kind>", [its parent kind's class,]
#     ["safetensors_error_format",] "safetensors_error", "rlang_error",
#     "error", "condition")

# Kinds that are a case of another kind, whose class follows theirs: a
# framework's missing package is a missing package (0.4.0 raised two
# unrelated classes; code that catches either keeps working).
kind_parents <- c(framework_not_installed = "package_not_installed")

# `message` is a cli template, interpolated in the caller's environment.
# The error cites the function the user called (error_frame()), whichever
# of the frames below it `call` names.
st_abort <- function(kind, message, ..., format = FALSE, call = parent.frame(),
                     .envir = parent.frame()) {
  parent <- if (kind %in% names(kind_parents)) kind_parents[[kind]]
  class <- c(
    paste0("safetensors_error_", c(kind, parent)),
    if (isTRUE(format)) "safetensors_error_format",
    "safetensors_error"
  )
  cli::cli_abort(message, class = class, ..., call = error_frame(call), .envir = .envir)
}

st_warn <- function(kind, message, ..., .envir = parent.frame()) {
  class <- c(paste0("safetensors_warning_", kind), "safetensors_warning")
  cli::cli_warn(message, class = class, ..., .envir = .envir)
}

# Turns the condition data a Rust entry point returns on failure into a
# classed R error; any other value passes through.
st_check <- function(res, what, call = parent.frame()) {
  if (!inherits(res, "safetensors_rust_error")) {
    return(res)
  }
  if (identical(res$kind, "interrupted")) {
    interrupted_abort(call)
  }
  st_abort(
    res$kind,
    c(
      cli_escape(what),
      x = cli_escape(sentence(res$message)),
      i = if (!is.null(res$hint)) cli_escape(res$hint)
    ),
    tensor = res$tensor,
    format = res$format,
    call = call
  )
}

# The error for Ctrl-C. It must give the prompt back at once: no cli
# formatting and no loading of cli or rlang (their first use in a session
# takes a large part of a second). The fields are those rlang::error_cnd()
# gives.
interrupted_abort <- function(call) {
  stop(structure(
    list(message = "Interrupted by the user.", trace = NULL, parent = NULL, call = frame_call(error_frame(call))),
    class = c("safetensors_error_interrupted", "safetensors_error", "rlang_error", "error", "condition")
  ))
}

# Errors cite the function the user called: `safe_save_file()`, `h[-1]`,
# `safetensors$new("x")`, never the internal helper that noticed the
# problem (`tensor_spec()`, `FUN(X[[i]], ...)`), whichever frame the helper
# was given as its `call`. The entry is the outermost frame, from the
# bottom of the stack up to the frame of `env`, that belongs to the package
# (entry_index()). A frame marked `.st_entry <- "caller"` (the R6 class's
# `initialize`, which R6's `$new()` calls) reports its caller instead. When
# no frame up to `env` belongs to the package (a function of the tests, or
# of another package, passing its own frame), or `env` is not a frame, it
# is returned as it is; so is a call.
error_frame <- function(env) {
  j <- entry_index(env)
  if (is.na(j)) {
    return(env)
  }
  if (identical(entry_mark(sys.frame(j)), "caller")) {
    return(sys.frame(sys.parents()[[j]]))
  }
  sys.frame(j)
}

# The number of the frame that error_frame() reports for `env`, before the
# "caller" mark is followed; NA if there is none. A frame belongs to the
# package if its function is one of the namespace (functions, S3 methods),
# or if it or its function's enclosure is marked `.st_entry` (methods of
# handles and of the R6 class, which are closures made at run time). Called
# on the error path only.
entry_index <- function(env) {
  if (!is.environment(env)) {
    return(NA_integer_)
  }
  frames <- sys.frames()
  at <- Position(function(f) identical(f, env), frames, right = TRUE)
  if (is.na(at)) {
    return(NA_integer_)
  }
  ns <- topenv(environment(entry_index))
  for (j in seq_len(at)) {
    if (identical(environment(sys.function(j)), ns) || !is.null(entry_mark(frames[[j]]))) {
      return(j)
    }
  }
  NA_integer_
}

# The `.st_entry` mark of a frame, set in the frame or in its function's
# enclosure; NULL if it has none.
entry_mark <- function(frame) {
  mark <- get0(".st_entry", envir = frame, inherits = FALSE)
  if (is.null(mark)) get0(".st_entry", envir = parent.env(frame), inherits = FALSE) else mark
}

# The call of the frame whose environment is `env` (a call passes through).
frame_call <- function(env) {
  if (!is.environment(env)) {
    return(env)
  }
  frames <- sys.frames()
  # The first: read_checkpoint() evaluates a function's body again in its
  # frame, through eval(), whose frame shares the environment.
  for (i in seq_along(frames)) {
    if (identical(frames[[i]], env)) {
      return(sys.call(i))
    }
  }
  NULL
}

# Text that cli must print as is.
cli_escape <- function(x) {
  gsub("}", "}}", gsub("{", "{{", x, fixed = TRUE), fixed = TRUE)
}

sentence <- function(x) {
  x <- paste0(toupper(substr(x, 1, 1)), substr(x, 2, nchar(x)))
  ifelse(grepl("[.?!]$", x), x, paste0(x, "."))
}
