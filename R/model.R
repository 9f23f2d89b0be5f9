# torch modules: a checkpoint read straight into a module's parameters and
# buffers (safe_load_model()), and a module's state dict written with each
# shared storage once (safe_save_model()), as Python's
# safetensors.torch.load_model() and save_model() do.
#
# Loading checks every name, shape and dtype against the module's state
# dict before it touches the module, then reads each tensor into the
# parameter's own memory: straight into it where torch shows that it holds
# the file's bytes as stored (read_into_memories(), R/frameworks.R), else
# torch copies it from views of the file's bytes piece by piece
# (torch_fill(), R/torch.R): no tensor is ever held twice. Tied weights
# (state dict entries that are the same view of the same storage) are found
# in R, from torch's own description of each tensor's storage; an address
# passes to Rust only to be read into.

#' Load a checkpoint into a torch module, or save a module's weights
#'
#' `safe_load_model()` reads a safetensors checkpoint straight into the
#' parameters and buffers of a torch module (an `nn_module`), and
#' `safe_save_model()` writes a module's state dict, each tied weight once.
#' They are R's versions of Python's `safetensors.torch.load_model()` and
#' `save_model()`, and read and write the same files.
#'
#' @section Loading:
#' Every tensor of the file is matched by name with the module's state dict
#' (`model$state_dict()`, whose names are those of PyTorch's
#' `state_dict()` for a module of the same structure). Everything is
#' checked before the module is touched; any of these leaves it unchanged:
#' * names: with `strict = TRUE` (the default), a tensor of the module
#'   missing from the file, or a tensor of the file the module has no place
#'   for, is an error of class `safetensors_error_name_mismatch` that lists
#'   them (fields `missing` and `unexpected`). With `strict = FALSE` the
#'   tensors both have are loaded, and the others returned;
#' * shapes: a tensor whose shape differs between the file and the module
#'   is an error of class `safetensors_error_shape_mismatch` naming it and
#'   both shapes (fields `tensor`, `file_shape` and `model_shape`), whatever
#'   `strict`. Tensors of one element match whatever their shapes, as in
#'   PyTorch's `load_state_dict()`: a batch norm's `num_batches_tracked` is
#'   a scalar in PyTorch and has shape `[1]` in R torch;
#' * dtypes: a tensor is converted to the dtype of the module's tensor
#'   when they differ, as `load_state_dict()` would (a BF16 checkpoint into
#'   a float32 module, F32 into float16): from one floating-point dtype to
#'   another, from one integer dtype to another, and from booleans and
#'   integers to floats. A floating-point tensor into an integer or boolean
#'   one, an integer tensor into a boolean one, or a complex tensor into a
#'   real one would lose its values and is an error of class
#'   `safetensors_error_dtype_mismatch` (fields `tensor`, `dtype` and
#'   `model_dtype`). A dtype R torch has no type for is an error of class
#'   `safetensors_error_unsupported_dtype`.
#'
#' Then each tensor is read into the module's own tensor. A CPU tensor of
#' the file's dtype (other than BOOL and C64) is read straight into its
#' memory with positioned reads; torch copies the others from the file's
#' bytes (a memory map, or with `backend = "read"` a staging buffer the
#' file is read into, ahead of the copy; see "Backends" in
#' [safe_load_file()]), converting the dtype and moving them to the tensor's
#' device on the way, in pieces of at most 32 MiB (16 MiB through the
#' staging buffer, of which there are two): besides the module, a load
#' holds one piece (or two) at a time, so a checkpoint as large as the
#' memory left for it loads. No gradient is recorded, and each
#' parameter keeps its `requires_grad`. An error while copying (a file
#' changed or truncated meanwhile, an interrupt) leaves the module partly
#' loaded.
#'
#' @section Renaming and transforming:
#' A checkpoint saved by another implementation of the same model (Python's
#' transformers, say, for an R port) often names its tensors otherwise, or
#' stores some in another layout. `rename` and `transform` adapt it on the
#' way in, with every check above made on the result before the module is
#' touched:
#' * `rename` gives each of the file's tensors the name of the module's
#'   tensor it loads into: a function of the file's names (all at once)
#'   returning as many new names, or a named character vector of
#'   replacements, `c(pattern = replacement, ...)`, applied one after the
#'   other to every name as [gsub()] with `perl = TRUE` does (every match
#'   is replaced, and each replacement sees the names the ones before it
#'   made; `\\1` refers to a group). A name that becomes `NA` (returned by
#'   the function, or matched by a pattern whose replacement is `NA`) is
#'   skipped: neither loaded nor unexpected. Two names that become one, or
#'   a name that becomes empty, is an error of class
#'   `safetensors_error_rename` naming them, as is a function that fails or
#'   returns anything but as many strings.
#' * `transform` is a named list of functions of one torch tensor returning
#'   one, each named by a regular expression (Perl-compatible) over the
#'   module's names (after `rename`). A tensor whose name matches a
#'   pattern is read, in the file's dtype on the CPU, and the function's
#'   result is loaded instead, converted to the dtype and device of the
#'   module's tensor. A name may match at most one pattern: two are an
#'   error (write one function doing both), as is, with `strict = TRUE`, a
#'   pattern that matches none of the tensors loaded (a typo that would
#'   leave a tensor untransformed).
#'
#' Each transform runs first on a tensor of the `"meta"` device, which has
#' the file tensor's shape and dtype but no data, so that the shape and
#' dtype of its result are checked with the others before anything is
#' read: a transform must compute its result's shape from its input's
#' shape, not from its values (`x$t()`, `x$permute()`, `x$reshape()`,
#' `x$to(dtype = )`, arithmetic and slicing do; `x[x > 0]` or anything
#' calling `as_array()` does not, and fails). A transform that fails or
#' returns anything but a torch tensor is an error of class
#' `safetensors_error_transform` naming the pattern and the tensor; a
#' result of another shape or dtype than the module's tensor is a
#' `safetensors_error_shape_mismatch` or `safetensors_error_dtype_mismatch`
#' as above. Errors name a renamed tensor by both names, the module's and
#' the file's.
#'
#' Memory: a tensor without a transform is still copied straight into the
#' module's tensor. Those with one are read, one at a time, into a staging
#' tensor as large as the largest of them (one per file dtype), so a load
#' holds the module, its pieces of 16 MiB, and that tensor; a transform
#' that returns a view of its input (`x$t()`) adds nothing, one that makes
#' a new tensor (`x$t()$contiguous()`, `x * 2`) adds that tensor while it
#' is copied, and R's garbage collector runs whenever such tensors add up
#' to 32 MiB. A transform that returns a view from its input's first
#' element without writing to it (`x$t()`, `x$permute()`, `x$view()`, not
#' `x$narrow(1, 2, n)` or `x$mul_(2)`), on the meta device and on the
#' staging tensor alike, runs before anything is read into that tensor:
#' the view's elements are then copied into the module straight from the
#' file (memory map or raw vector), and the staging tensor is never read
#' into, so the values its function saw on the CPU are not the file's.
#'
#' @section Tied weights:
#' Entries of the state dict that are the same view of the same memory
#' (one parameter used by two modules, such as a language model's input
#' embedding and output projection) are tied: they count as loaded when
#' any one of them is in the file, and `safe_save_model()` writes only the
#' first of their names in sorted order, as Python's `save_model()` does,
#' recording each name left out in the file's metadata, as
#' `metadata[[left_out]] = kept` (unless `metadata` already has that key).
#' When the file holds more than one name of a tied group, the first in
#' sorted order is loaded and the others are unexpected (as for Python's
#' `load_model()`). Other views of one storage (a parameter and a slice of
#' it) are loaded and saved each on its own. R torch's `model$to()` gives
#' every module new parameters, which unties tied weights: tie them again
#' after it.
#'
#' @inheritParams safe_load_file
#' @param model A torch module (an `nn_module`).
#' @param path For `safe_load_model()`: a `.safetensors` file, a sharded
#'   checkpoint's index (`model.safetensors.index.json`), a folder holding
#'   a checkpoint (see [safe_open()]), a URL of either, a Hugging Face Hub
#'   path `hf://owner/name/...` (read from the Hub cache, where it is
#'   stored first if missing: see [safetensors-hub]), a raw vector holding
#'   a file, or a handle from [safe_open()] (left open). For `safe_save_model()`: a
#'   file path, or a folder: a path that is a folder, or that has no file
#'   extension, is one (created if missing), which gets `model.safetensors`
#'   or, with `max_shard_size`, shards and their index (see "Sharded
#'   checkpoints" in [safe_save_file()]).
#' @param ... Must be empty: the arguments after it are named. (In 0.4.0,
#'   `safe_save_model()` took `metadata`, `max_shard_size` and `sync` by
#'   position; a call that still does is an error that says to name them.)
#' @param rename `NULL` (the default) to match the file's names as they
#'   are, a function of the file's names returning the module's names, or
#'   a named character vector of regular-expression replacements applied
#'   in order, such as `c("^model\\." = "", "self_attn\\." = "attn.")`;
#'   a name that becomes `NA` is skipped. See "Renaming and transforming".
#' @param transform `NULL` (the default), or a named list of functions, each
#'   of one torch tensor returning one, named by regular expressions over
#'   the module's names, such as `list("c_(attn|proj|fc)\\.weight$" =
#'   function(x) x$t())`. See "Renaming and transforming".
#' @param strict Whether names the file and the module don't share are an
#'   error, and, with `transform`, a pattern that matches no tensor.
#'   Default `TRUE`.
#' @param metadata `NULL` (the default) or a named list or character vector
#'   of single strings, stored as the file's `__metadata__`, with the
#'   names of tied weights left out (see "Tied weights"). Transformers'
#'   `from_pretrained()` wants `metadata = list(format = "pt")` in a file
#'   that has metadata.
#' @param max_shard_size `NULL` (the default) for one file, or the largest
#'   shard of a sharded checkpoint, as for [safe_save_file()].
#' @param sync Whether to flush each file to disk before renaming it over
#'   its target. Default `TRUE`.
#' @return `safe_load_model()`: invisibly, `list(missing, unexpected)`: the
#'   names of the module's tensors the file did not hold (a tied group by
#'   the first of its names, in sorted order), and the names of the file's
#'   tensors that were not loaded, both empty character vectors after a
#'   complete load (with attribute `"origin"` for an `hf://` path, see
#'   [safetensors-hub]). `safe_save_model()`: invisibly, the path written (for a
#'   sharded checkpoint, its index).
#' @seealso [safe_load_file()] with `framework = "torch"` to read tensors
#'   into new torch tensors; `vignette("torch", package = "safetensors")`.
#' @export
#' @examplesIf rlang::is_installed("torch") && torch::torch_is_installed()
#' net <- torch::nn_module(
#'   initialize = function() {
#'     self$embed <- torch::nn_embedding(10, 4)
#'     self$out <- torch::nn_linear(4, 10, bias = FALSE)
#'     self$out$weight <- self$embed$weight # tied
#'   },
#'   forward = function(x) self$out(self$embed(x))
#' )
#' trained <- net()
#' path <- tempfile(fileext = ".safetensors")
#' safe_save_model(trained, path)
#' safe_info(path)
#' safe_metadata(path)
#'
#' model <- net()
#' safe_load_model(model, path)
#' x <- torch::torch_tensor(1:3)
#' torch::torch_equal(model(x), trained(x))
#'
#' # Names the module and the file don't share
#' other <- torch::nn_linear(4, 10)
#' res <- safe_load_model(other, path, strict = FALSE)
#' res
#'
#' # A checkpoint with other names, its weight stored transposed (as
#' # GPT-2's Conv1D layers store theirs)
#' lin <- torch::nn_linear(4, 3)
#' theirs <- tempfile(fileext = ".safetensors")
#' safe_save_file(list(model.proj.weight = lin$weight$t(), model.proj.bias = lin$bias), theirs)
#' model <- torch::nn_linear(4, 3)
#' safe_load_model(
#'   model, theirs,
#'   rename = c("^model\\.proj\\." = ""),
#'   transform = list("^weight$" = function(x) x$t())
#' )
#' torch::torch_equal(model$weight, lin$weight)
#' unlink(c(path, theirs))
safe_load_model <- function(model, path, ..., rename = NULL, transform = NULL, strict = TRUE,
                            backend = c("auto", "mmap", "read")) {
  check_required(model)
  check_required(path)
  check_dots_empty(..., .example = "strict = FALSE")
  check_torch_module(model)
  check_rename(rename)
  check_transform(transform)
  check_bool(strict)
  backend <- arg_choice(backend, backends)
  h <- path
  if (!inherits(path, "safetensors_file")) {
    h <- open_model_source(path, backend)
    on.exit(close(h), add = TRUE)
  }
  # The parameters themselves rather than detached views of them, which
  # cost torch's state_dict() two calls per tensor (29 ms for 128 here);
  # the load copies into them with gradients off (load_tensors()).
  state <- module_state(model)
  tab <- renamed_table(handle_table(h), rename)
  plan <- load_plan(tab, state, strict, format_label(h), transform)
  load_tensors(h, tab, state, plan, transform)
  invisible(structure(list(missing = plan$missing, unexpected = plan$unexpected), origin = attr(h, "origin")))
}

#' @rdname safe_load_model
#' @export
safe_save_model <- function(model, path, ..., metadata = NULL, max_shard_size = NULL, sync = TRUE) {
  check_required(model)
  check_required(path)
  check_dots_empty(..., .example = "metadata = list(format = \"pt\")")
  check_torch_module(model)
  check_string(path)
  check_not_hf(path)
  check_bool(sync)
  metadata <- check_metadata(metadata, environment())
  limit <- if (!is.null(max_shard_size)) parse_size(max_shard_size)
  state <- model$state_dict()
  left_out <- character()
  for (group in tied_groups(state)) {
    group <- sort(group, method = "radix")
    left_out <- c(left_out, structure(rep(group[[1]], length(group) - 1), names = group[-1]))
  }
  # Python's save_model(): each name left out, with the name kept, unless
  # the caller's metadata has that key.
  if (length(left_out) > 0) {
    metadata <- c(metadata, left_out[!names(left_out) %in% names(metadata)])
  }
  spec <- tensor_spec(state[!names(state) %in% names(left_out)], NULL, metadata)
  folder <- dir.exists(path) || !grepl("\\.[[:alnum:]]+$", basename(path))
  if (folder) {
    if (!dir.exists(path)) {
      if (!dir.create(path, recursive = TRUE, showWarnings = FALSE)) {
        st_abort("io", "Can't create the folder {.file {path}}.")
      }
      made <- TRUE
      on.exit(if (made) unlink(path, recursive = TRUE), add = TRUE)
    }
    out <- save_checkpoint(spec, path, limit %||% Inf, sync)
    made <- FALSE
    return(invisible(out))
  }
  invisible(save_checkpoint(spec, path, limit %||% Inf, sync))
}

# torch and LibTorch installed, and `model` a module.
check_torch_module <- function(model, call = parent.frame()) {
  if (!requireNamespace("torch", quietly = TRUE)) {
    st_abort(
      "framework_not_installed",
      c(
        "Loading and saving modules needs the package {.pkg torch}, which is not installed.",
        i = "Install it with {.code install.packages(\"torch\")}."
      ),
      package = "torch",
      call = call
    )
  }
  check_libtorch(call = call)
  if (!inherits(model, "nn_module")) {
    st_abort(
      "invalid_argument",
      "{.arg model} must be a torch module (an {.cls nn_module}), not {.obj_type_friendly {model}}.",
      call = call
    )
  }
}

# A handle over what safe_load_model() reads; a URL is read in file order
# (load_tensors()), so a server that ignores ranges can stream it.
open_model_source <- function(path, backend, call = parent.frame()) {
  if (is_hf_path(path)) {
    return(hf_read(path, whole = TRUE, function(path, origin) open_model_source(path, backend, call = call), call = call))
  }
  if (retry_reads(path)) {
    return(read_checkpoint(path, environment(), call = call))
  }
  open_handle(resolve_folder(path, call = call), "r", list(), backend, whole = TRUE, call = call)
}

# ---- tied weights ---------------------------------------------------------

# The groups of names of state dict `state` (a named list of torch tensors,
# of `shapes`) that are tied: the same view (offset, shape and strides) of
# the same storage, on the same device. Storages are told apart by torch's
# text of their address, compared here in R; tensors without memory (no
# elements, meta tensors) are tied to nothing. Each `$` of a torch tensor
# is a method dispatch, so tensors are asked little: their storage, and
# their device and view only when they share an address.
tied_groups <- function(state, shapes = lapply(state, torch_shape)) {
  nms <- names(state)
  keys <- rep(NA_character_, length(state))
  has <- vapply(shapes, function(s) prod(s) > 0, logical(1), USE.NAMES = FALSE)
  keys[has] <- storage_addresses(state[has])
  shared <- !is.na(keys) & (duplicated(keys) | duplicated(keys, fromLast = TRUE))
  devices <- vapply(state[shared], function(x) as.character(x$device), character(1), USE.NAMES = FALSE)
  keys[shared] <- paste(devices, keys[shared])
  out <- list()
  for (key in unique(keys[shared & duplicated(keys)])) {
    at <- which(keys == key)
    while (length(at) > 1) {
      first <- state[[at[[1]]]]
      same <- c(TRUE, vapply(at[-1], function(j) torch_is_set_to(first, state[[j]]), logical(1)))
      if (sum(same) > 1) {
        out[[length(out) + 1]] <- nms[at[same]]
      }
      at <- at[!same]
    }
  }
  out
}

# ---- loading ----------------------------------------------------------------

# The handle_table() `tab` of a checkpoint with its tensors renamed by
# `rename` (checked by check_rename(), R/rename.R): `name` holds the
# module's names, `from` the file's, and the tensors renamed to NA are
# left out.
renamed_table <- function(tab, rename, call = parent.frame()) {
  to <- rename_names(tab$name, rename, call = call)
  keep <- !is.na(to)
  out <- lapply(tab, function(col) col[keep])
  out$from <- tab$name[keep]
  out$name <- to[keep]
  out
}

# A classed error unless `transform` is NULL or a list of functions named by
# valid regular expressions. Called once, at the boundary.
check_transform <- function(transform, call = parent.frame()) {
  if (is.null(transform)) {
    return(invisible())
  }
  example <- "For example {.code list(\"c_(attn|proj|fc)\\\\.weight$\" = function(x) x$t())}."
  if (!is.list(transform) || is.object(transform)) {
    st_abort(
      "invalid_argument",
      c("{.arg transform} must be a named list of functions, not {value_friendly(transform)}.", i = example),
      call = call
    )
  }
  patterns <- names(transform)
  if (length(transform) > 0 && (is.null(patterns) || anyNA(patterns) || any(!nzchar(patterns)))) {
    st_abort(
      "invalid_argument",
      c("Every element of {.arg transform} must be named: its name is a regular expression over the model's names.", i = example),
      call = call
    )
  }
  bad <- which(!vapply(transform, is.function, logical(1)))
  if (length(bad) > 0) {
    st_abort(
      "invalid_argument",
      c(
        "Every element of {.arg transform} must be a function of one torch tensor.",
        x = "{.val {patterns[[bad[[1]]]]}} is {value_friendly(transform[[bad[[1]]]])}."
      ),
      call = call
    )
  }
  check_patterns(patterns, "transform", call)
  invisible()
}

# What safe_load_model() loads: `load`, the names of the module's tensors
# to read (each from the file's tensor `from`), `missing` (the module's
# names) and `unexpected` (the file's); `shapes` and torch `types` of the
# module's tensors; `transform`, transform_plan(). Every check made, as
# classed errors, before anything is read. `tab` is renamed_table(),
# `label` the file in messages.
load_plan <- function(tab, state, strict, label, transform = NULL, call = parent.frame()) {
  in_file <- tab$name
  tab$from <- tab$from %||% in_file
  in_model <- names(state)
  covered <- character()
  extra <- character()
  ties <- list()
  model_shapes <- lapply(state, function(x) as.numeric(torch_shape(x)))
  for (group in tied_groups(state, model_shapes)) {
    group <- sort(group, method = "radix")
    have <- group[group %in% in_file]
    kept <- if (length(have) > 0) have[[1]] else group[[1]]
    covered <- c(covered, setdiff(group, kept))
    extra <- c(extra, have[-1])
    if (length(have) > 1) {
      ties[[length(ties) + 1]] <- list(kept = kept, others = have[-1])
    }
  }
  missing <- in_model[!in_model %in% c(in_file, covered)]
  odd <- which(!in_file %in% in_model | in_file %in% extra)
  unexpected <- tab$from[odd]
  if (strict && (length(missing) > 0 || length(unexpected) > 0)) {
    tie_notes <- vapply(ties, function(t) {
      sprintf(
        "%s %s tied to %s in the model (the same memory): the file needs only one of them, as {.fn safe_save_model} writes it.",
        format_names(t$others), if (length(t$others) == 1) "is" else "are", format_names(t$kept)
      )
    }, character(1))
    st_abort(
      "name_mismatch",
      c(
        "Can't load {label} into the model: the names of its tensors and the model's differ.",
        x = if (length(missing) > 0) {
          sprintf("The file lacks %s of the model's tensors: %s.", length(missing), format_names(missing))
        },
        x = if (length(unexpected) > 0) {
          sprintf(
            "The model has no place for %s of the file's tensors: %s.",
            length(unexpected), format_names(in_file[odd], from = unexpected)
          )
        },
        structure(tie_notes, names = rep("i", length(tie_notes))),
        i = "With {.code strict = FALSE}, the tensors both have are loaded and the others returned."
      ),
      missing = missing,
      unexpected = unexpected,
      call = call
    )
  }
  load <- in_file[in_file %in% in_model & !in_file %in% extra]
  at <- match(load, in_file)
  from <- tab$from[at]
  check_torch_dtypes(tab$dtype[at], from, call = call)
  shapes <- unname(model_shapes[match(load, in_model)])
  tf <- transform_plan(load, from, tab$dtype[at], tab$shape[at], transform, strict, label, call)
  check_load_shapes(load, tab$shape[at], shapes, label, call, from = from, tf = tf)
  types <- torch_types(state[match(load, in_model)])
  dtypes <- ifelse(tf$fn > 0, tf$dtype, tab$dtype[at])
  check_load_dtypes(load, dtypes, types, state, label, call, from = from, transformed = tf$fn > 0)
  list(load = load, missing = missing, unexpected = unexpected, shapes = shapes, types = types, transform = tf)
}

# Which transform applies to each tensor `names` (the module's, from the
# file's `from`, of file `dtypes` and `shapes`), and what it makes of it:
# `fn`, the index in `transform` of the one pattern that matches each name
# (0 for none); `shape` and `dtype` (the file's name of it, or torch's when
# the file has none), the shape and dtype of the transform's result,
# learnt by running it on a tensor of the "meta" device, which has a shape
# and a dtype but no data; `view`, whether that result was a view of its
# argument (meta_view()). A name two patterns match, a pattern matching
# none with `strict`, and a transform that fails or doesn't return a
# tensor are errors of class `safetensors_error_transform`.
transform_plan <- function(names, from, dtypes, shapes, transform, strict, label, call) {
  n <- length(names)
  out <- list(
    fn = integer(n), shape = vector("list", n), dtype = rep(NA_character_, n), view = logical(n),
    patterns = names(transform)
  )
  if (length(transform) == 0) {
    return(out)
  }
  patterns <- names(transform)
  hits <- matrix(
    vapply(patterns, function(p) grepl(p, names, perl = TRUE), logical(n)),
    nrow = n, ncol = length(patterns)
  )
  twice <- which(rowSums(hits) > 1)
  if (length(twice) > 0) {
    lines <- vapply(twice, function(k) {
      sprintf(
        "%s matches %s.",
        format_names(names[[k]], from = from[[k]]),
        cli_escape(and_list(encodeString(patterns[hits[k, ]], quote = "\"")))
      )
    }, character(1))
    st_abort(
      "transform",
      c(
        "Can't load {label} into the model: a tensor's name must match at most one pattern of {.arg transform}.",
        cap_lines(lines, "x"),
        i = "Write one function that does both, under one pattern."
      ),
      tensor = names[twice],
      file_tensor = from[twice],
      call = call
    )
  }
  unused <- patterns[colSums(hits) == 0]
  if (strict && length(unused) > 0) {
    st_abort(
      "transform",
      c(
        "Can't load {label} into the model: {length(unused)} pattern{?s} of {.arg transform} match{?es/} none of its tensors: {.val {unused}}.",
        i = "Patterns match the model's names (after {.arg rename}), such as {.val {names[[1]]}}.",
        i = "With {.code strict = FALSE}, patterns that match nothing are allowed."
      ),
      pattern = unused,
      call = call
    )
  }
  out$fn <- as.integer(hits %*% seq_along(patterns))
  for (k in which(out$fn > 0)) {
    shape <- as.numeric(unlist(shapes[[k]]))
    dt <- torch_dtype_of(dtypes[[k]], from[[k]], call = call)
    meta <- if (length(shape) == 0) {
      torch::torch_empty(1L, dtype = dt, device = "meta")$reshape(list())
    } else {
      torch::torch_empty(shape, dtype = dt, device = "meta")
    }
    y <- run_transform(transform, out$fn[[k]], meta, names[[k]], from[[k]], label, call)
    out$view[[k]] <- meta_view(meta, y, dtypes[[k]])
    out$shape[[k]] <- as.numeric(torch_shape(y))
    type <- torch_type(y)
    known <- torch_dtype_names()
    out$dtype[[k]] <- if (type %in% names(known)) known[[type]] else type
  }
  out
}

# Whether `y`, what a transform made of `x` (a tensor of the meta device,
# of file dtype `dtype`), is a view of `x` with `x`'s values: it shares
# `x`'s version counter (torch's, which views share: writing `x` moves
# it), the transform did not write `x` (which would have moved it
# already), it has `x`'s dtype, and the file's dtype is neither BOOL (read
# as uint8) nor complex (whose views may conjugate or negate). Such a
# result, on a real tensor, is a choice of its elements, which
# load_transformed() can copy straight from the file.
meta_view <- function(x, y, dtype) {
  if (dtype == "BOOL" || startsWith(dtype, "C") || x$`_version`() != 0 ||
    !identical(torch_type(y), torch_type(x))) {
    return(FALSE)
  }
  before <- y$`_version`()
  x$fill_(0)
  y$`_version`() != before
}

# The result of transform `fn` (an index in the list `transform`) on torch
# tensor `x`, the file's `from` renamed `name`; a classed error if it fails
# or returns anything but a torch tensor.
run_transform <- function(transform, fn, x, name, from, label, call) {
  pattern <- names(transform)[[fn]]
  what <- format_names(name, from = from)
  y <- tryCatch(transform[[fn]](x), error = function(e) {
    # torch's errors carry LibTorch's C++ backtrace, which says nothing to
    # the user of a transform.
    e$message <- sub("\nException raised from .*", "", conditionMessage(e))
    e$call <- NULL
    st_abort(
      "transform",
      c(
        paste0("Can't load {label} into the model: the transform {.val {pattern}} failed on ", what, "."),
        i = if (identical(x$device$type, "meta")) {
          "Transforms run first on tensors of the {.val meta} device, which have a shape and a dtype but no data: they must use no values."
        }
      ),
      tensor = name,
      file_tensor = from,
      pattern = pattern,
      parent = e,
      call = call
    )
  })
  if (!inherits(y, "torch_tensor")) {
    st_abort(
      "transform",
      c(
        "Can't load {label} into the model: the transform {.val {pattern}} must return a torch tensor.",
        x = paste0("For ", what, " it returned {value_friendly(y)}.")
      ),
      tensor = name,
      file_tensor = from,
      pattern = pattern,
      call = call
    )
  }
  y
}

# A classed error naming the tensors `names` (from the file's `from`)
# whose `shapes` in the file (or, where `tf` has a transform for them, the
# shape of its result) differ from their shapes in the model, `model`.
check_load_shapes <- function(names, shapes, model, label, call, from = names, tf = NULL) {
  file <- lapply(shapes, function(s) as.numeric(unlist(s)))
  fn <- tf$fn %||% integer(length(names))
  loaded <- file
  loaded[fn > 0] <- tf$shape[fn > 0]
  # One element in both is a match whatever the shapes, as for PyTorch's
  # load_state_dict() (a scalar saved by Python, a one-element tensor in R
  # torch: BatchNorm's num_batches_tracked).
  same <- mapply(function(a, b) identical(a, b) || (prod(a) == 1 && prod(b) == 1), loaded, model)
  bad <- which(!same)
  if (length(bad) == 0) {
    return(invisible())
  }
  lines <- vapply(bad, function(k) {
    after <- if (fn[[k]] > 0) {
      sprintf(", %s after the transform %s", format_shape(loaded[[k]]), encodeString(tf$patterns[[fn[[k]]]], quote = "\""))
    } else {
      ""
    }
    sprintf(
      "%s: %s in the file%s, %s in the model.",
      format_names(names[[k]], from = from[[k]]), format_shape(file[[k]]), cli_escape(after), format_shape(model[[k]])
    )
  }, character(1))
  # Conv1D weights (GPT-2) are stored transposed.
  flipped <- vapply(bad, function(k) fn[[k]] == 0 && length(file[[k]]) == 2 && identical(rev(file[[k]]), model[[k]]), logical(1))
  st_abort(
    "shape_mismatch",
    c(
      "Can't load {label} into the model: {length(bad)} tensor{?s} {?has/have} another shape in the file than in the model.",
      cap_lines(lines, "x"),
      i = if (any(flipped)) {
        "{sum(flipped)} of them {?is/are} the model's shape transposed: {.arg transform} can transpose {?it/them}, as in {.code transform = list(\"c_(attn|proj|fc)\\\\.weight$\" = function(x) x$t())}."
      }
    ),
    tensor = names[bad],
    file_tensor = from[bad],
    file_shape = file[bad],
    transformed_shape = lapply(bad, function(k) if (fn[[k]] > 0) loaded[[k]]),
    model_shape = model[bad],
    call = call
  )
}

# A classed error naming the tensors `names` whose file `dtypes` can't be
# converted to their dtype in the model (`types`, torch's names, of the
# tensors of `state`) without losing their values: floats and complex
# numbers into integers or booleans, complex into real.
check_load_dtypes <- function(names, dtypes, types, state, label, call, from = names,
                              transformed = logical(length(names))) {
  # The model's dtypes as the file's would name them, where they can.
  known <- torch_dtype_names()
  shown <- ifelse(types %in% names(known), known[types], types)
  # Kinds, in the order conversions may go: bool < integer < float < complex.
  kind <- function(d) ifelse(d == "BOOL", 1, ifelse(grepl("^[IU]", d), 2, ifelse(grepl("^C", d), 4, 3)))
  file_kind <- kind(dtypes)
  model_kind <- kind(shown)
  # torch dtypes the file has no name for: complex, or floating-point or not.
  other <- which(!types %in% names(known))
  model_kind[other] <- vapply(other, function(k) {
    if (grepl("^Complex", types[[k]])) 4 else if (isTRUE(state[[names[[k]]]]$dtype$is_floating_point)) 3 else 2
  }, numeric(1))
  bad <- which(file_kind > model_kind)
  if (length(bad) == 0) {
    return(invisible())
  }
  kind_name <- c("booleans", "integers", "floating-point numbers", "complex numbers")
  lines <- vapply(bad, function(k) {
    sprintf(
      "%s: %s %s (%s), %s in the model (%s).",
      format_names(names[[k]], from = from[[k]]), dtypes[[k]], if (transformed[[k]]) "after its transform" else "in the file", kind_name[[file_kind[[k]]]], shown[[k]], kind_name[[model_kind[[k]]]]
    )
  }, character(1))
  st_abort(
    "dtype_mismatch",
    c(
      "Can't load {label} into the model: {length(bad)} tensor{?s} would lose {?its/their} values in the model's dtype.",
      cap_lines(lines, "x"),
      i = "Tensors convert among floats, among integers, and from booleans and integers to floats."
    ),
    tensor = names[bad],
    file_tensor = from[bad],
    dtype = dtypes[bad],
    model_dtype = unname(shown[bad]),
    call = call
  )
}

# Names quoted for a message, at most `n` of them, as cli text; each name
# that differs from its name in the file (`from`, see `rename`) with it.
format_names <- function(x, n = 10, from = x) {
  shown <- encodeString(utils::head(x, n), quote = "\"")
  renamed <- utils::head(x != from, n)
  shown[renamed] <- paste0(
    shown[renamed], " (renamed from ", encodeString(utils::head(from, n)[renamed], quote = "\""), ")"
  )
  shown <- cli_escape(shown)
  more <- if (length(x) > n) sprintf(", and %d more", length(x) - n) else ""
  paste0(paste(shown, collapse = ", "), more)
}

# Message bullets of type `type`, at most `n`, the rest counted.
cap_lines <- function(lines, type, n = 10) {
  out <- utils::head(lines, n)
  if (length(lines) > n) {
    out <- c(out, sprintf("... and %d more.", length(lines) - n))
  }
  structure(out, names = rep(type, length(out)))
}

# Reads the tensors `plan$load` of handle `h` (its renamed_table() `tab`)
# into the tensors of the same name in `state` (of `plan$shapes` and torch
# dtypes `plan$types`), file by file in the order of their bytes, with
# gradients off, file by file: the tensors without a transform piece by
# piece (read_part_pieces()), each piece copied by torch_fill() from a view
# of the map or a staging vector into a view of the module's tensor,
# converting its dtype and moving it to its device; then each tensor with a
# transform read into a staging tensor, which the transform's result is
# copied from (load_transformed()).
load_tensors <- function(h, tab, state, plan, transform = NULL, call = parent.frame()) {
  at <- match(plan$load, tab$name)
  parts <- hget(h, "parts")
  # The part of each tensor, by its name in the file.
  part_of <- hget(h, "part_of")[match(tab$from[at], hget(h, "names"))]
  known <- torch_dtype_names()
  sizes <- tab$bytes[at]
  bar <- if (progress_wanted(sizes)) progress_bar("Loading", hget(h, "label"), sum(sizes))
  torch_local_cpu()
  torch_local_no_grad()
  stages <- transform_stages(tab, at, plan$transform$fn > 0, call)
  stages_since <- collections_since()
  # Bytes of the tensors transforms made (rather than views of the stage)
  # and dropped since the last garbage collection, which frees them.
  dropped <- 0
  label <- hget(h, "label")
  tick <- function(j) {
    if (!is.null(bar)) {
      cli::cli_progress_update(inc = sizes[[j]], id = bar)
    }
  }
  for (p in sort(unique(part_of))) {
    js <- which(part_of == p)
    js <- js[order(tab$begin[at[js]])]
    plain <- js[plan$transform$fn[js] == 0]
    # Planned on the larger element, the file's or the module's, so that
    # neither side of a converting copy exceeds a piece.
    types <- plan$types[plain]
    named <- types %in% names(known)
    plan_sizes <- numeric(length(plain))
    plan_sizes[named] <- vapply(known[types[named]], tensor_bytes, numeric(1), shape = 1, USE.NAMES = FALSE)
    plan_sizes[!named] <- vapply(state[plan$load[plain[!named]]], function(x) x$element_size(), numeric(1))
    read_part_pieces(parts[[p]], tab$from[at[plain]], tab$dtype[at[plain]], tab$shape[at[plain]],
      target = function(i) {
        j <- plain[[i]]
        dest <- state[[plan$load[[j]]]]
        shape <- as.numeric(unlist(tab$shape[[at[[j]]]]))
        # One element in both, of other shapes (check_load_shapes()).
        if (!identical(shape, plan$shapes[[j]])) dest$view(shape) else dest
      },
      fill = torch_fill,
      done = function(i, x) tick(plain[[i]]),
      views = TRUE,
      call = call,
      plan_sizes = plan_sizes,
      setup = torch_setup,
      memory = function(xs, dtypes, shapes) torch_read_memories(xs, dtypes, shapes, bump = TRUE),
      fresh = FALSE
    )
    for (j in setdiff(js, plain)) {
      if (dropped == 0) {
        since <- collections_since()
      }
      dropped <- dropped + load_transformed(parts[[p]], tab, at[[j]], state[[plan$load[[j]]]], plan, j, transform, stages, label, call)
      if (dropped >= transform_garbage) {
        # What the transforms made since `since` is in R's youngest
        # generation unless R collected garbage meanwhile: then a full
        # collection (about 120 ms with torch loaded, against 4 ms).
        torch_collect(full = since$collected)
        dropped <- 0
      }
      tick(j)
    }
  }
  # Stages a tensor was read into (torch's version counter moved): a stage
  # only views were copied from (load_transformed()) has no pages.
  written <- vapply(stages, function(x) x$`_version`() > 0, logical(1))
  staged <- sum(vapply(stages[written], function(x) x$numel() * x$element_size(), numeric(1)))
  if (dropped + staged >= transform_garbage) {
    # The stages and what the transforms made, freed now rather than when R
    # next collects garbage; a full collection only if one ran since they
    # were made.
    rm(stages)
    torch_collect(full = (staged > 0 && stages_since$collected) || (dropped > 0 && since$collected))
  }
  invisible()
}

# Bytes of tensors made by transforms that a load leaves for R's garbage
# collector before it runs it.
transform_garbage <- 32 * 1024^2

# Frees the torch tensors nothing references any more, and gives their
# memory back to the system: R's collection hands them to torch, whose CPU
# block cache (torch 0.17.0.9000 on) keeps each block for a later tensor of
# the same size, which a load's transforms of other sizes never reuse; the
# copying transform of bench/torch.R held 769 MiB beyond the module where
# one transformed tensor and its stage take 512.
torch_collect <- function(full = TRUE) {
  gc(full = full)
  flush <- asNamespace("torch")[["cpu_cache_flush"]]
  if (is.function(flush)) {
    flush()
  }
  invisible()
}

# An environment whose `collected` turns TRUE once R has collected garbage
# after this call: the finalizer of an object nothing references, which
# any collection frees. Objects made after this call and dropped before
# that are in R's youngest generation, which gc(full = FALSE) frees; an
# object that survived one collection is freed only by a full one.
collections_since <- function() {
  seen <- new.env(parent = emptyenv())
  seen$collected <- FALSE
  reg.finalizer(new.env(parent = emptyenv()), function(e) seen$collected <- TRUE)
  seen
}

# The staging tensors the tensors `at` of `tab` with a transform (`which`)
# are read into, one per file dtype, as long as the largest of them: a
# list named by dtype of one-dimensional torch tensors on the CPU.
transform_stages <- function(tab, at, which, call) {
  at <- at[which]
  numel <- vapply(at, function(k) prod(as.numeric(unlist(tab$shape[[k]]))), numeric(1))
  stages <- list()
  for (dtype in unique(tab$dtype[at])) {
    n <- max(numel[tab$dtype[at] == dtype])
    if (n > 0) {
      stages[[dtype]] <- torch_empty_for(dtype, n, tab$from[at][tab$dtype[at] == dtype][[1]], call)
    }
  }
  stages
}

# Reads tensor `k` of `tab` (the `j`th of `plan`) from `part` into a view
# of the staging tensor of its dtype (transform_stages()), runs its
# transform and copies the result into `dest`; returns the bytes of the
# result when it is a new tensor rather than a view of the stage (freed by
# the caller's garbage collection). A result of another shape than the
# transform gave on the meta device is an error of class
# `safetensors_error_transform`.
#
# A transform that made a view on the meta device (meta_view(), such as
# `x$t()`) runs on the stage before it is read: if its result is then a
# view from the stage's first element, torch copies those elements into
# `dest` straight from the file's bytes (a map or raw vector), and the
# stage is never written, which saves reading the tensor twice
# (bench/torch.R's surgery_view, 4 GiB: 4.54 -> 3.55 s, 313 -> 266 MiB).
# The function never sees the file's memory, which it could keep: the
# result's strides and shape are applied to a view of the file's bytes
# that only torch's copy_() sees.
load_transformed <- function(part, tab, k, dest, plan, j, transform, stages, label, call) {
  from <- tab$from[[k]]
  dtype <- tab$dtype[[k]]
  shape <- as.numeric(unlist(tab$shape[[k]]))
  n <- prod(shape)
  x <- if (n == 0) {
    torch_empty_for(dtype, shape, from, call)
  } else {
    stages[[dtype]]$narrow(1, 1, n)$view(if (length(shape) == 0) list() else shape)
  }
  early <- n > 0 && length(shape) > 0 && plan$transform$view[[j]] && part_in_memory(part)
  y <- NULL
  if (early) {
    version <- x$`_version`()
    y <- checked_transform(transform, plan, j, x, tab$name[[k]], from, label, call)
    # Unless the function told the meta device apart, a view of the stage
    # that it did not write.
    same <- identical(storage_address(y), storage_address(x)) && x$`_version`() == version
    size <- as.numeric(torch_shape(y))
    stride <- as.numeric(y$stride())
    # Within the tensor's own elements, not the rest of the stage.
    inside <- length(size) > 0 && (any(size == 0) || sum((size - 1) * stride) < n)
    if (same && inside && isTRUE(tryCatch(torch_is_set_to(y, x$as_strided(size, stride, 0)), error = function(e) FALSE))) {
      copy_file_view(part, from, dtype, shape, dest, size, stride, plan$shapes[[j]], call)
      return(0)
    }
    if (!same) {
      # Run again on the data.
      y <- NULL
    }
  }
  read_part_pieces(part, from, dtype, list(shape),
    target = function(i) x, fill = torch_fill, done = function(i, x) NULL, views = TRUE, call = call,
    setup = torch_setup
  )
  # A view of the stage made before it was read sees the data read.
  y <- y %||% checked_transform(transform, plan, j, x, tab$name[[k]], from, label, call)
  torch_copy(dest, reshaped(y, plan$shapes[[j]]))
  if (n == 0 || identical(storage_address(y), storage_address(x))) 0 else y$numel() * y$element_size()
}

# The result of the `j`th tensor's transform of `plan` on `x`, the module's
# `name` (the file's `from`); a classed error if its shape is not the one
# the transform gave on the meta device.
checked_transform <- function(transform, plan, j, x, name, from, label, call) {
  y <- run_transform(transform, plan$transform$fn[[j]], x, name, from, label, call)
  got <- as.numeric(torch_shape(y))
  want <- plan$transform$shape[[j]]
  if (!identical(got, want)) {
    pattern <- names(transform)[[plan$transform$fn[[j]]]]
    st_abort(
      "transform",
      c(
        paste0(
          "Can't load {label} into the model: the transform {.val {pattern}} returned a tensor of shape ",
          format_shape(got), " for ", format_names(name, from = from), "."
        ),
        x = paste0("On the meta device it returned one of shape ", format_shape(want), ": it must not depend on the values."),
        i = "The model is partly loaded: the tensors before it were loaded."
      ),
      tensor = name,
      file_tensor = from,
      pattern = pattern,
      call = call
    )
  }
  y
}

# Torch tensor `x` with shape `to`, the shape of the module's tensor it is
# copied into: they differ only when both have one element
# (check_load_shapes()).
reshaped <- function(x, to) {
  if (identical(as.numeric(torch_shape(x)), to)) x else x$reshape(if (length(to) == 0) list() else to)
}

# Copies into `dest` (of shape `to`) the view of shape `size` and strides
# `stride` from the first element of file tensor `from` of `part` (of
# `dtype` and `shape`), in one piece: torch gathers the elements from a
# view of the file's bytes (its map or raw vector), as it would from a
# transform's view of the tensor read.
copy_file_view <- function(part, from, dtype, shape, dest, size, stride, to, call) {
  numel <- prod(shape)
  read_part_pieces(part, from, dtype, list(shape),
    target = function(i) dest,
    fill = function(dest, bytes, piece) {
      src <- torch::torch_tensor_from_buffer(bytes, shape = numel, dtype = torch_view_dtype(dtype))
      torch_copy(dest, reshaped(src$as_strided(size, stride, 0), to))
    },
    done = function(i, x) NULL, views = TRUE, call = call, chunk = Inf, setup = torch_setup
  )
}
