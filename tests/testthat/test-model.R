# safe_load_model() and safe_save_model(). The checks before loading (names,
# tied weights, shapes, dtypes) and their messages are tested without torch,
# on stand-ins for a state dict; the rest skips without torch and LibTorch.
# The interop tests run Python's safetensors.torch (save_model(),
# load_model()) from $TORCH_PY, a Python with torch and safetensors, and
# skip without it.

# ---- without torch: stand-ins for torch tensors -----------------------------

# A stand-in for a torch tensor with the fields and methods the checks use:
# `storage` names its memory (NA for none), `view` its offset, shape and
# strides within it.
fake_tensor <- function(shape, type = "Float", storage = NA, view = "whole") {
  self <- list(
    shape = as.integer(shape),
    dtype = list(.type = function() type, is_floating_point = type %in% c("Float", "Half", "BFloat16", "Double")),
    device = "cpu",
    numel = function() prod(shape),
    storage = function() list(data_ptr = function() if (is.na(storage)) "0" else storage),
    view_id = paste(storage, view)
  )
  self$is_set_to <- function(other) identical(self$view_id, other$view_id)
  self
}

# A handle_table() of a file with tensors `shapes` (named) and `dtypes`.
fake_table <- function(shapes, dtypes = rep("F32", length(shapes))) {
  list(name = names(shapes), dtype = dtypes, shape = unname(shapes))
}

plan <- function(tab, state, strict = TRUE) {
  safetensors:::load_plan(tab, state, strict, "'model.safetensors'")[c("load", "missing", "unexpected")]
}

test_that("tied weights are the same view of the same memory", {
  tied <- safetensors:::tied_groups
  state <- list(
    embed = fake_tensor(c(10, 4), storage = "0xa"),
    head = fake_tensor(c(10, 4), storage = "0xa"),
    lonely = fake_tensor(4, storage = "0xb"),
    also = fake_tensor(c(10, 4), storage = "0xa"),
    slice = fake_tensor(4, storage = "0xa", view = "row 2"),
    other_slice = fake_tensor(4, storage = "0xa", view = "row 3"),
    same_slice = fake_tensor(4, storage = "0xa", view = "row 3"),
    empty1 = fake_tensor(0, storage = "0xc"),
    empty2 = fake_tensor(0, storage = "0xc"),
    nomem1 = fake_tensor(3),
    nomem2 = fake_tensor(3)
  )
  expect_identical(tied(state), list(c("embed", "head", "also"), c("other_slice", "same_slice")))
  expect_identical(tied(state["lonely"]), list())
  expect_identical(tied(list()), list())
})

test_that("names are matched, tied weights counted once, before anything is read", {
  state <- list(
    a.weight = fake_tensor(c(3, 2), storage = "0x1"),
    a.bias = fake_tensor(3, storage = "0x2"),
    z.weight = fake_tensor(c(3, 2), storage = "0x1")
  )
  shapes <- list(a.weight = c(3L, 2L), a.bias = 3L)
  # Python's save_model() keeps the first name of a tied group in sorted
  # order; either name loads the group.
  expect_identical(plan(fake_table(shapes), state), list(load = c("a.weight", "a.bias"), missing = character(), unexpected = character()))
  names(shapes)[[1]] <- "z.weight"
  expect_identical(plan(fake_table(shapes), state)$load, c("z.weight", "a.bias"))
  # Both names in the file: the first in sorted order loads, the other is
  # unexpected, as for Python's load_model().
  both <- list(z.weight = c(3L, 2L), a.bias = 3L, a.weight = c(3L, 2L))
  res <- plan(fake_table(both), state, strict = FALSE)
  expect_identical(res, list(load = c("a.bias", "a.weight"), missing = character(), unexpected = "z.weight"))
  cnd <- expect_error(plan(fake_table(both), state), class = "safetensors_error_name_mismatch")
  expect_identical(cnd$unexpected, "z.weight")
  expect_identical(cnd$missing, character())
  expect_match(conditionMessage(cnd), "tied to \"a.weight\"", fixed = TRUE)
  # Neither: the group is missing once, by its first name.
  res <- plan(fake_table(list(a.bias = 3L, extra = 1L)), state, strict = FALSE)
  expect_identical(res, list(load = "a.bias", missing = "a.weight", unexpected = "extra"))
  cnd <- expect_error(plan(fake_table(list(a.bias = 3L, extra = 1L)), state), class = "safetensors_error_name_mismatch")
  expect_identical(cnd$missing, "a.weight")
  expect_identical(cnd$unexpected, "extra")
  expect_s3_class(cnd, "safetensors_error")
})

test_that("shapes must agree, one-element tensors aside, whatever `strict`", {
  state <- list(w = fake_tensor(c(3, 2)), b = fake_tensor(3), n = fake_tensor(1, "Long"))
  ok <- list(w = c(3L, 2L), b = 3L, n = integer())
  expect_identical(plan(fake_table(ok, c("F32", "F32", "I64")), state)$load, c("w", "b", "n"))
  bad <- list(w = c(2L, 3L), b = 4L, n = c(1L, 1L))
  for (strict in c(TRUE, FALSE)) {
    cnd <- expect_error(plan(fake_table(bad), state, strict), class = "safetensors_error_shape_mismatch")
    expect_identical(cnd$tensor, c("w", "b"))
    expect_identical(cnd$file_shape, list(c(2, 3), 4))
    expect_identical(cnd$model_shape, list(c(3, 2), 3))
  }
})

test_that("dtypes convert as long as values keep their kind", {
  types <- c(f = "Float", h = "Half", bf = "BFloat16", i = "Int", l = "Long", u = "Byte", b = "Bool", c = "ComplexFloat")
  state <- lapply(types, function(t) fake_tensor(2, t))
  load <- function(dtypes) {
    shapes <- rep(list(2L), length(dtypes))
    names(shapes) <- names(dtypes)
    plan(fake_table(shapes, unname(dtypes)), state[names(dtypes)], strict = FALSE)$load
  }
  # Among floats, among integers, and upwards (bool < int < float < complex).
  expect_identical(load(c(f = "BF16", h = "F32", bf = "F64")), c("f", "h", "bf"))
  expect_identical(load(c(i = "I64", l = "U8", u = "I32", b = "BOOL")), c("i", "l", "u", "b"))
  expect_identical(load(c(f = "I64", h = "BOOL", i = "BOOL", c = "F32")), c("f", "h", "i", "c"))
  cnd <- expect_error(load(c(l = "F32", b = "U8", f = "C64", h = "F16")), class = "safetensors_error_dtype_mismatch")
  expect_identical(cnd$tensor, c("l", "b", "f"))
  expect_identical(cnd$dtype, c("F32", "U8", "C64"))
  expect_identical(cnd$model_dtype, c("I64", "BOOL", "F32"))
  # A dtype R torch has no type for is named first.
  cnd <- expect_error(load(c(l = "U16", f = "F32")), class = "safetensors_error_unsupported_dtype")
  expect_identical(cnd$tensor, "l")
})

test_that("load errors say what differs", {
  state <- list(
    embed.weight = fake_tensor(c(10, 4), storage = "0x1"),
    head.weight = fake_tensor(c(10, 4), storage = "0x1"),
    norm.weight = fake_tensor(4),
    steps = fake_tensor(1, "Long")
  )
  expect_snapshot(error = TRUE, {
    plan(fake_table(list(embed.weight = c(10L, 4L), head.weight = c(10L, 4L), norm.weight = 4L, steps = 1L)), state)
    plan(fake_table(list(norm.weight = 4L, extra.weight = 2L, extra.bias = 2L)), state)
    plan(fake_table(list(embed.weight = c(4L, 10L), norm.weight = c(1L, 4L), steps = 1L)), state)
    plan(fake_table(list(embed.weight = c(10L, 4L), norm.weight = 4L, steps = 1L), c("F32", "C64", "F64")), state)
  })
  # Long lists are cut short; the condition keeps them whole.
  many <- stats::setNames(rep(list(1L), 25), sprintf("t%02d", 1:25))
  cnd <- expect_error(plan(fake_table(many), list()), class = "safetensors_error_name_mismatch")
  expect_length(cnd$unexpected, 25)
  expect_snapshot(cat(conditionMessage(cnd)))
  # File names are shown as they are.
  cnd <- expect_error(safetensors:::load_plan(fake_table(many), list(), TRUE, "'a{b}.safetensors'"), class = "safetensors_error_name_mismatch")
  expect_match(conditionMessage(cnd), "Can't load 'a{b}.safetensors' into", fixed = TRUE)
})

test_that("without torch, the model functions say torch is missing", {
  skip_if(requireNamespace("torch", quietly = TRUE), "torch is installed")
  path <- fixture("multi.safetensors")
  expect_error(safe_load_model(list(), path), class = "safetensors_error_framework_not_installed")
  expect_error(safe_save_model(list(), tempfile()), class = "safetensors_error_framework_not_installed")
})

test_that("safe_save_model() takes its options by name, after `...`", {
  # Checked before the model, so without torch too. 0.4.0 took them by
  # position: such a call now says to name them.
  expect_identical(
    names(formals(safe_save_model)),
    c("model", "path", "...", "metadata", "max_shard_size", "sync")
  )
  expect_identical(names(formals(safe_save_model))[2:3], names(formals(safe_save_file))[2:3])
  path <- withr::local_tempfile(fileext = ".safetensors")
  expect_snapshot(error = TRUE, {
    safe_save_model(list(), path, list(format = "pt"))
    safe_save_model(list(), path, metdata = list(format = "pt"))
  })
  expect_error(safe_save_model(list(), path, NULL, NULL, TRUE), class = "safetensors_error_invalid_argument")
  expect_false(file.exists(path))
})

# A separate test: a test that ends before its snapshot would drop it from
# _snaps/ on machines without torch.
test_that("`model`, `...` and torch are checked first", {
  skip_if_no_torch()
  path <- fixture("multi.safetensors")
  expect_snapshot(error = TRUE, {
    safe_load_model(list(), path)
    safe_load_model(torch::nn_linear(2, 2), path, TRUE, backnd = "read")
    safe_save_model(torch::torch_zeros(2), tempfile())
  })
  expect_error(safe_load_model(torch::nn_linear(2, 2), path, strict = NA), class = "safetensors_error_invalid_argument")
  expect_error(safe_load_model(torch::nn_linear(2, 2), path, backend = "x"), class = "safetensors_error_invalid_argument")
  expect_error(safe_save_model(torch::nn_linear(2, 2), 1), class = "safetensors_error_invalid_argument")
})

# ---- with torch ---------------------------------------------------------

# A small model with every kind of state: tied weights (an embedding and the
# output projection), parameters with and without grad, buffers of several
# dtypes, a non-persistent buffer (not in the state dict) and a submodule.
test_net <- function() {
  torch <- asNamespace("torch")
  torch$nn_module(
    initialize = function() {
      self$embed <- torch$nn_embedding(10, 6)
      self$fc <- torch$nn_linear(6, 6)
      self$norm <- torch$nn_layer_norm(6)
      self$head <- torch$nn_linear(6, 10, bias = FALSE)
      self$head$weight <- self$embed$weight
      self$scale <- torch$nn_buffer(torch$torch_full(6, 2))
      self$register_buffer("mask", torch$torch_tensor(c(TRUE, FALSE, TRUE, TRUE, FALSE, TRUE)))
      self$register_buffer("scratch", torch$torch_zeros(3), persistent = FALSE)
    },
    forward = function(x) {
      h <- self$embed(x)
      h <- self$norm(torch$nnf_relu(self$fc(h))) * self$scale * self$mask
      self$head(h)
    }
  )
}

# Clones of every tensor of a module's state dict.
state_copy <- function(model) {
  lapply(model$state_dict(), function(x) x$clone())
}

expect_state <- function(model, state) {
  now <- model$state_dict()
  expect_identical(names(now), names(state))
  for (n in names(state)) {
    expect_true(torch::torch_equal(now[[n]], state[[n]]), label = n)
  }
}

test_that("a module's state is its state_dict(), walked without torch's method dispatch", {
  skip_if_no_torch()
  torch <- asNamespace("torch")
  module_state <- safetensors:::module_state
  # The same tensors (not copies) under the same names, in the same order.
  expect_state <- function(model) {
    want <- model$state_dict(keepvars = TRUE)
    got <- module_state(model)
    expect_identical(names(got), names(want))
    for (n in names(want)) {
      expect_true(identical(got[[n]], want[[n]]), label = n)
    }
    invisible(got)
  }
  block <- torch$nn_module(initialize = function() {
    self$norm <- torch$nn_batch_norm1d(4)
    self$scale <- torch$nn_parameter(torch$torch_ones(4))
    self$register_buffer("steps", torch$torch_zeros(1))
    self$register_buffer("cache", torch$torch_zeros(3), persistent = FALSE)
  })
  net <- torch$nn_module(initialize = function() {
    self$embed <- torch$nn_embedding(10, 4)
    self$body <- torch$nn_sequential(torch$nn_linear(4, 4), torch$nn_relu(), torch$nn_linear(4, 4, bias = FALSE))
    self$blocks <- torch$nn_module_list(list(block(), block()))
    self$act <- torch$nn_gelu()
  })
  model <- net()
  got <- expect_state(model)
  # Walked, not asked of torch.
  walk <- safetensors:::walk_module_state
  bodies <- lapply(torch$nn_Module$public_methods[c("state_dict", ".save_to_state_dict")], body)
  expect_identical(names(walk(model, "", bodies)), names(got))
  expect_true("blocks.1.norm.num_batches_tracked" %in% names(got))
  expect_false(any(grepl("cache", names(got))))
  expect_state(torch$nn_relu())
  expect_identical(module_state(torch$nn_relu()), list())
  # A buffer named as a parameter replaces it in place.
  shadowed <- torch$nn_linear(2, 2)
  shadowed$register_buffer("weight", torch$torch_zeros(1))
  expect_identical(names(expect_state(shadowed)), c("weight", "bias"))
  # A module that says otherwise what its state is, at any depth, is asked.
  own <- torch$nn_module(
    initialize = function() self$w <- torch$nn_parameter(torch$torch_ones(2)),
    state_dict = function(prefix = "", keepvars = FALSE) list(only = self$w)
  )
  saver <- torch$nn_module(
    initialize = function() self$w <- torch$nn_parameter(torch$torch_ones(2)),
    .save_to_state_dict = function(prefix, keepvars) list(renamed = self$w)
  )
  outer <- torch$nn_module(initialize = function(inner) {
    self$lin <- torch$nn_linear(2, 2)
    self$inner <- inner
  })
  expect_identical(names(expect_state(outer(own()))), c("lin.weight", "lin.bias", "only"))
  expect_null(walk(outer(own()), "", bodies))
  expect_identical(names(expect_state(outer(saver()))), c("lin.weight", "lin.bias", "renamed"))
})

test_that("parameters of the file's dtype are read straight into the module, the others copied by torch", {
  skip_if_no_torch()
  torch::torch_manual_seed(1)
  net <- test_net()
  trained <- net()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_model(trained, path)
  calls <- list()
  read <- safetensors:::read_into_memory_
  local_package_function("read_into_memory_", function(x, names, addresses, fresh, threads) {
    calls[[length(calls) + 1]] <<- list(names = names, fresh = fresh)
    read(x, names, addresses, fresh, threads)
  })
  model <- net()
  versions <- vapply(model$state_dict(), function(t) t$`_version`(), numeric(1))
  safe_load_model(model, path)
  expect_state(model, state_copy(trained))
  # All but the BOOL mask, into memory in use (nothing faulted in ahead).
  expect_setequal(unlist(lapply(calls, `[[`, "names")), c("embed.weight", "fc.weight", "fc.bias", "norm.weight", "norm.bias", "scale"))
  expect_false(any(vapply(calls, `[[`, logical(1), "fresh")))
  # Every tensor loaded moved on, as torch's copy_() moves it: autograd
  # refuses to go back through values a load replaced.
  after <- vapply(model$state_dict(), function(t) t$`_version`(), numeric(1))
  expect_true(all(after > versions))
  # Stored in another dtype: torch converts each, nothing is read straight.
  calls <- list()
  wide <- lapply(state_copy(trained), function(t) if (t$dtype == torch::torch_float32()) t$to(dtype = torch::torch_float64()) else t)
  wide$head.weight <- NULL
  safe_save_file(wide, path)
  model <- net()
  safe_load_model(model, path)
  expect_length(calls, 0)
  expect_state(model, state_copy(trained))
})

test_that("a saved model loads into a fresh one, tied weights and all", {
  skip_if_no_torch()
  torch::torch_manual_seed(1)
  net <- test_net()
  trained <- net()
  path <- withr::local_tempfile(fileext = ".safetensors")
  expect_identical(safe_save_model(trained, path), path)
  # The tied weight once, under its first name in sorted order, and the
  # name left out recorded as Python's save_model() records it.
  expect_setequal(safe_info(path)$name, c("embed.weight", "fc.weight", "fc.bias", "norm.weight", "norm.bias", "scale", "mask"))
  expect_identical(safe_metadata(path), c(head.weight = "embed.weight"))

  model <- net()
  x <- torch::torch_tensor(c(1L, 4L, 8L, 10L))
  expect_false(torch::torch_equal(model(x), trained(x)))
  res <- withVisible(safe_load_model(model, path))
  expect_false(res$visible)
  expect_identical(res$value, list(missing = character(), unexpected = character()))
  expect_true(torch::torch_equal(model(x), trained(x)))
  expect_state(model, state_copy(trained))
  # Still tied, and no gradient recorded.
  expect_true(model$head$weight$is_set_to(model$embed$weight))
  for (p in model$parameters) {
    expect_true(p$requires_grad)
    expect_true(p$is_leaf)
    expect_true(torch::is_undefined_tensor(p$grad))
  }
  expect_false(model$mask$requires_grad)

  # The same through every source: backends, raw vectors, handles.
  for (src in list(path, read_bytes(path))) {
    for (backend in c("mmap", "read")) {
      model <- net()
      safe_load_model(model, src, backend = backend)
      expect_true(torch::torch_equal(model(x), trained(x)))
    }
  }
  h <- safe_open(path, framework = "torch")
  model <- net()
  safe_load_model(model, h)
  expect_true(torch::torch_equal(model(x), trained(x)))
  expect_true(torch::torch_equal(h$fc.weight, trained$fc$weight$detach())) # still open
  close(h)
})

test_that("a load leaves torch's gradient mode and default device as it found them", {
  skip_if_no_torch()
  model <- torch::nn_linear(3, 2)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_model(model, path)
  grad_on <- function() torch::torch_ones(1, requires_grad = TRUE)$mul(2)$requires_grad
  expect_true(grad_on())
  safe_load_model(model, path)
  expect_true(grad_on())
  # Off when the load starts: still off after it.
  torch::with_no_grad({
    safe_load_model(model, path)
    expect_false(grad_on())
  })
  expect_true(grad_on())
  # A transform that fails on the values, with the mode turned off.
  fails <- list(weight = function(x) if (x$device$type == "meta") x else stop("no"))
  expect_error(safe_load_model(model, path, transform = fails), class = "safetensors_error_transform")
  expect_true(grad_on())
  # Under another default device the module is filled, and that default kept.
  torch::with_device(device = "meta", {
    safe_load_model(model, path, transform = list(bias = function(x) x * 1))
    expect_identical(torch::torch_empty(1)$device$type, "meta")
  })
  expect_identical(torch::torch_empty(1)$device$type, "cpu")
  expect_true(grad_on())
})

test_that("a folder gets one file, or shards and an index, and loads back", {
  skip_if_no_torch()
  net <- test_net()
  trained <- net()
  x <- torch::torch_tensor(c(2L, 3L))
  dir <- file.path(withr::local_tempdir(), "new", "checkpoint")
  expect_identical(safe_save_model(trained, dir), file.path(dir, "model.safetensors"))
  model <- net()
  safe_load_model(model, dir)
  expect_true(torch::torch_equal(model(x), trained(x)))

  index <- safe_save_model(trained, dir, max_shard_size = 200, metadata = list(format = "pt"))
  expect_identical(index, file.path(dir, "model.safetensors.index.json"))
  expect_false(file.exists(file.path(dir, "model.safetensors")))
  shards <- list.files(dir, "^model-.*[.]safetensors$")
  expect_gt(length(shards), 1)
  expect_identical(
    safe_metadata(file.path(dir, shards[[1]])),
    c(format = "pt", head.weight = "embed.weight")
  )
  for (src in list(dir, index)) {
    model <- net()
    safe_load_model(model, src)
    expect_true(torch::torch_equal(model(x), trained(x)))
  }
  # A file path with max_shard_size: shards beside it, as safe_save_file().
  base <- file.path(withr::local_tempdir(), "weights.safetensors")
  expect_match(safe_save_model(trained, base, max_shard_size = 200), "weights.safetensors.index.json$")
  model <- net()
  safe_load_model(model, dirname(base))
  expect_true(torch::torch_equal(model(x), trained(x)))
  # The caller's metadata keeps its own value for a key.
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_model(trained, path, metadata = c(head.weight = "mine", a = "b"))
  expect_identical(safe_metadata(path), c(a = "b", head.weight = "mine"))
  expect_error(safe_save_model(trained, path, metadata = list(a = 1)), class = "safetensors_error_invalid_argument")
  # A bad size is an error before any folder is made.
  nowhere <- file.path(withr::local_tempdir(), "nowhere")
  expect_error(safe_save_model(trained, nowhere, max_shard_size = "big"), class = "safetensors_error_invalid_argument")
  expect_false(dir.exists(nowhere))
})

test_that("a file path marked Latin-1 saves to the file it names", {
  skip_if_no_torch()
  net <- test_net()
  trained <- net()
  root <- withr::local_tempdir()
  latin <- iconv(file.path(root, "café.safetensors"), "UTF-8", "latin1")
  expect_identical(Encoding(latin), "latin1")
  safe_save_model(trained, latin)
  expect_identical(list.files(root), "café.safetensors")
  model <- net()
  safe_load_model(model, latin)
  x <- torch::torch_tensor(c(2L, 3L))
  expect_true(torch::torch_equal(model(x), trained(x)))
})

test_that("errors found before loading leave the model unchanged", {
  skip_if_no_torch()
  net <- test_net()
  model <- net()
  before <- state_copy(model)
  good <- lapply(net()$state_dict(), function(x) x$clone())
  good$head.weight <- NULL
  path <- withr::local_tempfile(fileext = ".safetensors")
  variants <- list(
    name_mismatch = c(good, list(extra = torch::torch_ones(2))),
    shape_mismatch = within(good, fc.bias <- torch::torch_ones(7)),
    dtype_mismatch = within(good, mask <- torch::torch_ones(6)),
    unsupported_dtype = within(good, fc.bias <- structure(1:6, dtype = "U16"))
  )
  for (kind in names(variants)) {
    safe_save_file(variants[[kind]], path)
    expect_error(safe_load_model(model, path), class = paste0("safetensors_error_", kind))
    expect_state(model, before)
  }
  # Without strict, names the module and file don't share are returned and
  # the rest loads; the others keep their values.
  partial <- good[c("fc.weight", "fc.bias", "mask")]
  partial$extra <- torch::torch_ones(2)
  safe_save_file(partial, path)
  res <- safe_load_model(model, path, strict = FALSE)
  expect_identical(res$missing, c("scale", "embed.weight", "norm.weight", "norm.bias")) # the model's order
  expect_identical(res$unexpected, "extra")
  expect_true(torch::torch_equal(model$fc$weight, good$fc.weight))
  expect_true(torch::torch_equal(model$embed$weight, before$embed.weight))
  # A file holding both names of the tied weights: an error saying so, or
  # the first in sorted order loaded.
  both <- good
  both$head.weight <- torch::torch_randn(10, 6)
  safe_save_file(both, path)
  cnd <- expect_error(safe_load_model(model, path), class = "safetensors_error_name_mismatch")
  expect_identical(cnd$unexpected, "head.weight")
  expect_match(conditionMessage(cnd), "tied")
  expect_identical(safe_load_model(model, path, strict = FALSE)$unexpected, "head.weight")
  expect_true(torch::torch_equal(model$head$weight, good$embed.weight))
})

test_that("tensors are converted to the model's dtypes", {
  skip_if_no_torch()
  torch <- asNamespace("torch")
  net <- test_net()
  trained <- net()
  state <- trained$state_dict()
  path <- withr::local_tempfile(fileext = ".safetensors")
  # A BF16 checkpoint into a float32 model.
  low <- lapply(state[names(state) != "head.weight"], function(x) {
    if (x$dtype == torch$torch_float()) x$to(dtype = torch$torch_bfloat16()) else x
  })
  safe_save_file(low, path)
  model <- net()
  safe_load_model(model, path)
  for (n in names(low)) {
    want <- low[[n]]$to(dtype = state[[n]]$dtype)
    expect_true(torch$torch_equal(model$state_dict()[[n]], want), label = n)
    expect_identical(model$state_dict()[[n]]$dtype$.type(), state[[n]]$dtype$.type())
  }
  # And a float32 checkpoint into a float16 model.
  safe_save_model(trained, path)
  model <- net()
  model$to(dtype = torch$torch_float16())
  # R torch's $to() unties them.
  model$head$weight <- model$embed$weight
  safe_load_model(model, path)
  expect_true(torch$torch_equal(model$fc$weight, trained$fc$weight$detach()$to(dtype = torch$torch_float16())))
  # BOOL into a float buffer is 0 and 1, whatever non-zero byte the file
  # holds for true.
  m <- torch$nn_module(initialize = function() self$register_buffer("b", torch$torch_zeros(3)))()
  bytes <- safe_serialize(list(b = structure(as.raw(c(0, 2, 1)), dtype = "BOOL", shape = 3)))
  safe_load_model(m, bytes)
  expect_identical(torch$as_array(m$b), c(0, 1, 1))
  # One-element tensors match whatever their shapes (Python's scalar
  # num_batches_tracked, R torch's one-element one).
  bn <- torch$nn_batch_norm1d(3)
  safe_save_file(list(
    weight = torch$torch_ones(3), bias = torch$torch_zeros(3), running_mean = torch$torch_ones(3),
    running_var = torch$torch_ones(3), num_batches_tracked = torch$torch_scalar_tensor(7L, dtype = torch$torch_long())
  ), path)
  safe_load_model(bn, path)
  expect_identical(torch$as_array(bn$num_batches_tracked), 7L)
})

test_that("tensors are read in pieces into any layout", {
  skip_if_no_torch()
  torch <- asNamespace("torch")
  base <- torch$torch_arange(1, 4 * 6 * 10)$view(c(4, 6, 10))
  x <- list(a = base, s = torch$torch_scalar_tensor(3.5), e = torch$torch_empty(c(2, 0)), b = base > 100)
  bytes <- safe_serialize(x)
  for (backend in c("mmap", "read")) {
    path <- withr::local_tempfile(fileext = ".safetensors")
    writeBin(bytes, path)
    h <- safe_open(path, backend = backend)
    part <- safetensors:::hget(h, "parts")[[1]]
    read_into <- function(name, dest, chunk) torch_read_piecewise(part, name, dest, chunk)
    for (chunk in c(1, 4, 100, 1000, 1e6)) {
      label <- paste(backend, chunk)
      expect_true(torch$torch_equal(read_into("a", torch$torch_zeros(4, 6, 10), chunk), base), label = label)
      # Into transposed and permuted tensors, and with conversion.
      t <- torch$torch_zeros(10, 6, 4, dtype = torch$torch_float64())$permute(c(3, 2, 1))
      expect_false(t$is_contiguous())
      read_into("a", t, chunk)
      expect_true(torch$torch_equal(t, base$to(dtype = torch$torch_float64())), label = label)
      expect_true(torch$torch_equal(read_into("b", torch$torch_zeros(4, 6, 10, dtype = torch$torch_bool()), chunk), base > 100), label = label)
      expect_true(torch$torch_equal(read_into("b", torch$torch_zeros(4, 6, 10, dtype = torch$torch_int32()), chunk), (base > 100)$to(dtype = torch$torch_int32())), label = label)
      expect_identical(torch$as_array(read_into("s", torch$torch_scalar_tensor(0), chunk)), 3.5)
      expect_identical(read_into("e", torch$torch_zeros(2, 0), chunk)$shape, c(2L, 0L))
    }
    close(h)
  }
  # Through the loader, a tensor over 16 MiB: several pieces.
  big <- torch$nn_linear(2048, 2560)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(weight = torch$torch_randn(2560, 2048), bias = torch$torch_randn(2560)), path)
  for (backend in c("mmap", "read")) {
    big$weight$detach()$zero_()
    safe_load_model(big, path, backend = backend)
    expect_true(torch$torch_equal(big$weight, safe_load_file(path, framework = "torch")$weight))
  }
})

test_that("saving writes logical values and every shared storage once", {
  skip_if_no_torch()
  torch <- asNamespace("torch")
  m <- torch$nn_module(
    initialize = function() {
      self$w <- torch$nn_parameter(torch$torch_randn(4, 3)$t()) # not contiguous
      self$v <- self$w
      self$register_buffer("row", torch$torch_arange(1, 12)$view(c(3, 4))[2, ]) # a view with an offset
      self$register_buffer("empty", torch$torch_zeros(0))
      self$register_buffer("empty2", torch$torch_zeros(0))
    }
  )()
  expect_false(m$w$is_contiguous())
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_model(m, path)
  got <- safe_load_file(path, framework = "torch")
  expect_setequal(names(got), c("v", "row", "empty", "empty2"))
  expect_identical(safe_metadata(path), c(w = "v"))
  expect_true(torch$torch_equal(got$v, m$w$detach()))
  expect_true(torch$torch_equal(got$row, torch$torch_arange(5, 8)))
  # A module without state saves an empty file.
  safe_save_model(torch$nn_relu(), path)
  expect_identical(safe_info(path)$name, character())
  expect_null(safe_metadata(path))
})

# ---- Python's safetensors.torch ------------------------------------------

# A Python with torch and safetensors: $TORCH_PY, or the one the other
# interop tests use.
torch_python <- function() {
  exes <- c(Sys.getenv("TORCH_PY"), Sys.getenv("SAFETENSORS_PYTHON"), Sys.which("python3"))
  find_python("torch_python", "import torch, safetensors.torch", exes)
}

run_torch_python <- function(code, args = character()) {
  run_python(code, args, exe = torch_python())
}

# Python's half of test_net(): the same module, indices from 0.
python_net <- c(
  "import sys, torch",
  "from safetensors.torch import save_model, load_model, save_file, load_file",
  "class Net(torch.nn.Module):",
  "    def __init__(self):",
  "        super().__init__()",
  "        self.embed = torch.nn.Embedding(10, 6)",
  "        self.fc = torch.nn.Linear(6, 6)",
  "        self.norm = torch.nn.LayerNorm(6)",
  "        self.head = torch.nn.Linear(6, 10, bias=False)",
  "        self.head.weight = self.embed.weight",
  "        self.register_buffer('scale', torch.full((6,), 2.0))",
  "        self.register_buffer('mask', torch.tensor([True, False, True, True, False, True]))",
  "        self.register_buffer('scratch', torch.zeros(3), persistent=False)",
  "    def forward(self, x):",
  "        h = self.embed(x)",
  "        h = self.norm(torch.relu(self.fc(h))) * self.scale * self.mask",
  "        return self.head(h)",
  "x = torch.tensor([0, 3, 7, 9])"
)

test_that("a model Python's save_model() wrote loads with the same results", {
  skip_if_no_torch()
  skip_on_cran()
  if (is.null(torch_python())) skip("Python with torch and safetensors is not available")
  dir <- withr::local_tempdir()
  run_torch_python(c(
    python_net,
    "torch.manual_seed(3)",
    "net = Net()",
    "with torch.no_grad():",
    "    net.scale.uniform_()",
    "save_model(net, sys.argv[1] + '/model.safetensors')",
    "save_file({'y': net(x).detach()}, sys.argv[1] + '/y.safetensors')"
  ), dir)
  path <- file.path(dir, "model.safetensors")
  expect_identical(safe_metadata(path), c(head.weight = "embed.weight"))
  model <- test_net()()
  expect_identical(safe_load_model(model, path), list(missing = character(), unexpected = character()))
  y <- model(torch::torch_tensor(c(1L, 4L, 8L, 10L)))
  want <- safe_load_file(file.path(dir, "y.safetensors"), framework = "torch")$y
  expect_true(torch::torch_allclose(y, want, rtol = 1e-6, atol = 1e-6))
})

test_that("Python's load_model() reads what safe_save_model() writes", {
  skip_if_no_torch()
  skip_on_cran()
  if (is.null(torch_python())) skip("Python with torch and safetensors is not available")
  torch::torch_manual_seed(4)
  trained <- test_net()()
  torch::with_no_grad(trained$scale$uniform_())
  dir <- withr::local_tempdir()
  safe_save_model(trained, file.path(dir, "model.safetensors"))
  shards <- safe_save_model(trained, file.path(dir, "sharded"), max_shard_size = 200)
  out <- run_torch_python(c(
    python_net,
    "import json, os",
    "net = Net()",
    "missing, unexpected = load_model(net, sys.argv[1] + '/model.safetensors')",
    "print(sorted(missing), sorted(unexpected))",
    "print(net.head.weight is net.embed.weight)",
    "save_file({'y': net(x).detach()}, sys.argv[1] + '/y.safetensors')",
    "index = json.load(open(sys.argv[2]))",
    "merged = {}",
    "for f in sorted(set(index['weight_map'].values())):",
    "    merged.update(load_file(os.path.join(os.path.dirname(sys.argv[2]), f)))",
    "single = load_file(sys.argv[1] + '/model.safetensors')",
    "print(sorted(merged) == sorted(single) and all(torch.equal(merged[k], single[k]) for k in single))"
  ), c(dir, shards))
  expect_identical(out, c("[] []", "True", "True"))
  y <- safe_load_file(file.path(dir, "y.safetensors"), framework = "torch")$y
  want <- trained(torch::torch_tensor(c(1L, 4L, 8L, 10L)))
  expect_true(torch::torch_allclose(y, want, rtol = 1e-6, atol = 1e-6))
})

test_that("a file truncated while a module loads gives its values or a classed error, never a crash", {
  skip_if_no_torch()
  setup <- function() {
    net <- torch::nn_module(initialize = function() {
      for (k in 1:12) self[[paste0("t", k)]] <- torch::nn_parameter(torch::torch_zeros(2^21, dtype = torch::torch_float64()))
    })
    model <<- net()
  }
  # One file and a shard set, through a map and through positioned reads.
  for (shards in c(1, 3)) {
    for (backend in c("mmap", "read")) {
      res <- race_truncation(
        function(path) {
          for (p in model$parameters) torch::with_no_grad(p$zero_())
          safetensors::safe_load_model(model, path, backend = backend)
          vapply(model$parameters, function(t) torch::as_array(t$sum()), numeric(1))
        },
        setup = setup,
        shards = shards
      )
      expect_race_safe(res)
    }
  }
})

test_that("a file truncated while a transposing transform loads from it gives a classed error, never a crash", {
  skip_if_no_torch()
  # Transposed by torch straight from the map.
  setup <- function() {
    net <- torch::nn_module(initialize = function() {
      for (k in 1:12) self[[paste0("t", k)]] <- torch::nn_parameter(torch::torch_zeros(2^11, 2^10, dtype = torch::torch_float64()))
    })
    model <<- net()
  }
  res <- race_truncation(
    function(path) {
      for (p in model$parameters) torch::with_no_grad(p$zero_())
      safetensors::safe_load_model(model, path, transform = list("^t" = function(x) x$t()))
      vapply(model$parameters, function(t) torch::as_array(t$sum()), numeric(1))
    },
    setup = setup,
    dim = c(2^10, 2^11)
  )
  expect_race_safe(res)
})

# ---- rename and transform ---------------------------------------------------

test_that("without torch, renamed tensors are matched and shown by both names", {
  state <- list(
    embed.weight = fake_tensor(c(10, 4), storage = "0x1"),
    head.weight = fake_tensor(c(10, 4), storage = "0x1"),
    norm.weight = fake_tensor(4)
  )
  file <- fake_table(list(model.embed.weight = c(10L, 4L), model.norm.weight = 4L, model.extra = 2L, rope = 3L))
  tab <- safetensors:::renamed_table(file, c("^model\\." = "", "^rope$" = NA))
  expect_identical(tab$name, c("embed.weight", "norm.weight", "extra"))
  expect_identical(tab$from, c("model.embed.weight", "model.norm.weight", "model.extra"))
  expect_identical(tab$shape, list(c(10L, 4L), 4L, 2L))
  # The skipped tensor is not unexpected; the unexpected one is the file's name.
  expect_identical(
    plan(tab, state, strict = FALSE),
    list(load = c("embed.weight", "norm.weight"), missing = character(), unexpected = "model.extra")
  )
  cnd <- expect_error(plan(tab, state), class = "safetensors_error_name_mismatch")
  expect_identical(cnd$unexpected, "model.extra")
  tab$shape[[2]] <- 5L
  cnd <- expect_error(plan(tab[c("name", "from", "dtype", "shape")], state, strict = FALSE), class = "safetensors_error_shape_mismatch")
  expect_identical(cnd$tensor, "norm.weight")
  expect_identical(cnd$file_tensor, "model.norm.weight")
  expect_snapshot(error = TRUE, {
    plan(safetensors:::renamed_table(file, c("^model\\." = "", "^rope$" = NA)), state)
    plan(tab, state, strict = FALSE)
    plan(safetensors:::renamed_table(file, c("^model\\." = "", "^rope$" = "norm.weight")), state)
  })
})

test_that("`transform` must be a named list of functions", {
  skip_if_no_torch()
  model <- torch::nn_linear(2, 3)
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_model(model, path)
  expect_snapshot(error = TRUE, {
    safe_load_model(model, path, transform = function(x) x)
    safe_load_model(model, path, transform = list(function(x) x))
    safe_load_model(model, path, transform = list(weight = "t"))
    safe_load_model(model, path, transform = list("(" = function(x) x))
    safe_load_model(model, path, rename = 1)
  })
  for (bad in list(c(weight = 1), list(a = function(x) x, function(x) x), structure(list(), class = "foo"))) {
    expect_error(safe_load_model(model, path, transform = bad), class = "safetensors_error_invalid_argument")
  }
  # An empty list transforms nothing.
  expect_identical(safe_load_model(model, path, transform = list()), list(missing = character(), unexpected = character()))
})

test_that("a GPT-2 that transformers saved loads with `transform`, logits as Python's", {
  skip_if_no_torch()
  model <- gpt2()
  res <- safe_load_model(model, hf_fixture("gpt2"), transform = gpt2_transform)
  expect_identical(res, list(missing = character(), unexpected = character()))
  # The output projection is still tied to the embedding.
  expect_true(model$lm_head$weight$is_set_to(model$transformer$wte$weight))
  out <- hf_logits(model, "gpt2")
  expect_identical(out$got$shape, c(2L, 8L, 100L))
  expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6)
  # The file's tensors, transposed, are the parameters.
  file <- safe_load_file(hf_fixture("gpt2", "model.safetensors"), framework = "torch")
  w <- file[["transformer.h.1.attn.c_proj.weight"]]
  expect_true(torch::torch_equal(model$transformer$h[[2]]$attn$c_proj$weight, w$t()$to(dtype = torch::torch_float64())))
  # A function as `rename`, the module's names as they are, and the same
  # through a handle, the read backend and transforms that copy.
  for (how in c("handle", "read", "contiguous")) {
    model <- gpt2()
    src <- if (how == "handle") safe_open(hf_fixture("gpt2"), framework = "torch") else hf_fixture("gpt2")
    tf <- if (how == "contiguous") list("c_(attn|proj|fc)\\.weight$" = function(x) x$t()$contiguous() * 1) else gpt2_transform
    safe_load_model(model, src, rename = identity, transform = tf, backend = if (how == "read") "read" else "mmap")
    if (how == "handle") close(src)
    out <- hf_logits(model, "gpt2")
    expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6, label = how)
  }
})

test_that("without its transform, GPT-2's square attn.c_proj.weight loads silently wrong", {
  skip_if_no_torch()
  model <- gpt2()
  before <- state_copy(model)
  # No transform: the four non-square Conv1D weights of each layer are
  # caught, the square one is not.
  cnd <- expect_error(safe_load_model(model, hf_fixture("gpt2")), class = "safetensors_error_shape_mismatch")
  expect_length(cnd$tensor, 6)
  expect_false(any(grepl("attn.c_proj", cnd$tensor, fixed = TRUE)))
  expect_snapshot(error = TRUE, safe_load_model(model, hf_fixture("gpt2")), transform = function(x) gsub("'[^']*'", "<path>", x))
  expect_state(model, before)
  # Transposing only the weights the shape check catches loads, wrongly.
  partial <- list("(c_attn|c_fc|mlp\\.c_proj)\\.weight$" = function(x) x$t())
  safe_load_model(model, hf_fixture("gpt2"), transform = partial)
  out <- hf_logits(model, "gpt2")
  expect_gt(as.numeric((out$got - out$expected)$abs()$max()), 0.1)
  # The full transform makes it right.
  safe_load_model(model, hf_fixture("gpt2"), transform = gpt2_transform)
  out <- hf_logits(model, "gpt2")
  expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6)
})

test_that("a Llama that transformers saved loads with `rename`, logits as Python's", {
  skip_if_no_torch()
  model <- llama()
  before <- state_copy(model)
  # Its names match in 1 of 21 until renamed.
  cnd <- expect_error(safe_load_model(model, hf_fixture("llama")), class = "safetensors_error_name_mismatch")
  expect_length(cnd$unexpected, 20)
  expect_state(model, before)
  res <- safe_load_model(model, hf_fixture("llama"), rename = llama_rename)
  expect_identical(res, list(missing = character(), unexpected = character()))
  out <- hf_logits(model, "llama")
  expect_identical(out$got$shape, c(2L, 8L, 100L))
  expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6)
  # The same with a function.
  model <- llama()
  fn <- function(x) {
    for (k in seq_along(llama_rename)) x <- gsub(names(llama_rename)[[k]], llama_rename[[k]], x, perl = TRUE)
    x
  }
  safe_load_model(model, hf_fixture("llama"), rename = fn)
  out <- hf_logits(model, "llama")
  expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6)
  # A tensor skipped is neither loaded nor unexpected.
  model <- llama()
  res <- safe_load_model(model, hf_fixture("llama"), rename = c(llama_rename, "^lm_head\\." = NA), strict = FALSE)
  expect_identical(res, list(missing = "lm_head.weight", unexpected = character()))
  expect_error(
    safe_load_model(model, hf_fixture("llama"), rename = c(llama_rename, "^lm_head\\." = NA)),
    class = "safetensors_error_name_mismatch"
  )
})

test_that("rename and transform errors leave the module untouched and say which name became which", {
  skip_if_no_torch()
  model <- llama()
  before <- state_copy(model)
  src <- hf_fixture("llama")
  scrub <- function(x) gsub("'[^']*model\\.safetensors'", "<path>", x)
  t_q <- function(f) list("attn\\.q_proj\\.weight$" = f)
  expect_snapshot(error = TRUE, transform = scrub, {
    # Two file names to one module name.
    safe_load_model(model, src, rename = c(llama_rename, "\\.[kv]_proj\\." = ".kv."))
    # Names the module lacks, shown with the file's.
    safe_load_model(model, src, rename = c(llama_rename, "^lm_head\\." = "head."))
    # A transform that fails, on the meta device or on values.
    safe_load_model(model, src, rename = llama_rename, transform = t_q(function(x) stop("no can do")))
    safe_load_model(model, src, rename = llama_rename, transform = t_q(function(x) x[x > 0]))
    # One that returns something else than a tensor.
    safe_load_model(model, src, rename = llama_rename, transform = t_q(function(x) as.numeric(x$shape)))
    # Another shape and dtype than the model's.
    safe_load_model(model, src, rename = llama_rename, transform = t_q(function(x) x[1:4, ]))
    safe_load_model(model, src, rename = llama_rename, transform = t_q(function(x) x$to(dtype = torch::torch_cfloat())))
    # A name two patterns match, a pattern that matches nothing.
    safe_load_model(model, src, rename = llama_rename, transform = list("q_proj" = identity, "attn\\." = identity))
    safe_load_model(model, src, rename = llama_rename, transform = list("self_attn\\.q_proj" = identity))
  })
  expect_state(model, before)
  cnd <- expect_error(
    safe_load_model(model, src, rename = llama_rename, transform = t_q(function(x) x[1:4, ])),
    class = "safetensors_error_shape_mismatch"
  )
  expect_identical(cnd$file_tensor, c("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"))
  expect_identical(cnd$transformed_shape, list(c(4, 32), c(4, 32)))
  cnd <- expect_error(
    safe_load_model(model, src, rename = llama_rename, transform = t_q(function(x) stop("no"))),
    class = "safetensors_error_transform"
  )
  expect_identical(cnd$pattern, "attn\\.q_proj\\.weight$")
  expect_identical(cnd$tensor, "transformer.h.0.attn.q_proj.weight")
  expect_identical(cnd$file_tensor, "model.layers.0.self_attn.q_proj.weight")
  expect_error(
    safe_load_model(model, src, rename = function(x) toupper(1)),
    class = "safetensors_error_rename"
  )
  expect_state(model, before)
  # With `strict = FALSE`, a pattern may match nothing.
  safe_load_model(model, src, rename = llama_rename, transform = list("nothing" = identity), strict = FALSE)
  out <- hf_logits(model, "llama")
  expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6)
})

test_that("collections_since() tells whether R collected garbage since", {
  seen <- safetensors:::collections_since()
  # Read at once: the expectations allocate, which may start a collection.
  before <- seen$collected
  invisible(gc(full = FALSE))
  after <- seen$collected
  expect_false(before)
  expect_true(after)
})

test_that("a load with transforms gives their tensors' memory back", {
  skip_if_no_torch()
  skip_if_not(file.exists("/proc/self/status"), "needs /proc/self/status")
  rss <- function() {
    status <- readLines("/proc/self/status")
    as.numeric(gsub("[^0-9]", "", grep("^VmRSS:", status, value = TRUE))) * 1024
  }
  # Weights of 64 MiB and 16 MiB, stored transposed; a transform that makes
  # a new tensor for each. torch keeps freed blocks for reuse by tensors of
  # the same size (its CPU block cache), which would hold the stage and
  # both results, 144 MiB, after the load.
  net <- torch::nn_module(initialize = function() {
    self$a <- torch::nn_linear(2048, 8192, bias = FALSE)
    self$b <- torch::nn_linear(2048, 2048, bias = FALSE)
  })
  model <- net()
  path <- withr::local_tempfile(fileext = ".safetensors")
  state <- model$state_dict()
  safe_save_file(lapply(state, function(x) x$t()), path)
  rm(state)
  for (p in model$parameters) torch::with_no_grad(p$zero_())
  invisible(gc())
  flush <- asNamespace("torch")[["cpu_cache_flush"]]
  if (is.function(flush)) flush()
  before <- rss()
  safe_load_model(model, path, transform = list("weight$" = function(x) x$t()$contiguous()))
  expect_lt(rss() - before, 32 * 2^20)
  expect_gt(as.numeric(model$a$weight$abs()$sum()), 0)
})

test_that("transforms see the file's dtype and their results convert to the module's", {
  skip_if_no_torch()
  path <- withr::local_tempfile(fileext = ".safetensors")
  safe_save_file(list(w = array(as.numeric(1:6), c(2, 3)), n = 5L, flag = TRUE), path)
  net <- torch::nn_module(initialize = function() {
    self$w <- torch::nn_parameter(torch::torch_zeros(3, 2, dtype = torch::torch_float16()))
    self$n <- torch::nn_buffer(torch::torch_zeros(1, dtype = torch::torch_float64()))
    self$flag <- torch::nn_buffer(torch::torch_zeros(1, dtype = torch::torch_int32()))
  })
  m <- net()
  seen <- list()
  spy <- function(f) function(x) {
    seen[[length(seen) + 1]] <<- list(dtype = x$dtype$.type(), device = x$device$type)
    f(x)
  }
  safe_load_model(m, path, transform = list(
    "^w$" = spy(function(x) x$t()),
    "^n$" = spy(function(x) x * 2L),
    "^flag$" = spy(function(x) x$to(dtype = torch::torch_int64()))
  ))
  # Each ran twice: on a meta tensor, then on the file's values.
  devices <- vapply(seen, function(s) s$device, character(1))
  expect_identical(devices, c("meta", "meta", "meta", "cpu", "cpu", "cpu"))
  expect_setequal(vapply(seen, function(s) s$dtype, character(1)), c("Double", "Int", "Bool"))
  expect_identical(as.numeric(torch::as_array(m$w$to(dtype = torch::torch_float64()))), c(1, 3, 5, 2, 4, 6))
  expect_identical(m$w$dtype$.type(), "Half")
  expect_identical(as.numeric(torch::as_array(m$n)), 10)
  expect_identical(as.integer(torch::as_array(m$flag)), 1L)
  # A transform whose result's shape depends on the values fails after the
  # meta check; the tensors before it are loaded.
  m <- net()
  cnd <- expect_error(
    safe_load_model(m, path, transform = list("^w$" = function(x) if (x$device$type == "meta") x$t() else x)),
    class = "safetensors_error_transform"
  )
  expect_snapshot(cat(gsub(path, "<path>", conditionMessage(cnd), fixed = TRUE)))
})

test_that("a transform's result is loaded with its values whatever view, copy or write it makes", {
  skip_if_no_torch()
  path <- withr::local_tempfile(fileext = ".safetensors")
  set.seed(3)
  w <- array(runif(4 * 6 * 5), c(4, 6, 5))
  safe_save_file(list(w = w), path)
  file_w <- safe_load_file(path, framework = "torch")$w
  meta <- function(x) x$device$type == "meta"
  cases <- list(
    transpose = function(x) x$transpose(1, 3),
    permute = function(x) x$permute(c(2, 3, 1)),
    reshape = function(x) x$view(c(24, 5)),
    expand = function(x) x$unsqueeze(1)$expand(c(2, 4, 6, 5)),
    # Views that start past the first element.
    narrow = function(x) x$narrow(2, 3, 2),
    select = function(x) x[2, , ],
    copy = function(x) x$transpose(1, 3) * 2,
    in_place = function(x) x$mul_(2),
    view_in_place = function(x) x$transpose(1, 3)$mul_(-1),
    # Told the meta device apart: a view there, not on the data.
    branches = function(x) if (meta(x)) x$transpose(1, 3) else x$transpose(1, 3) + 1,
    branches_in_place = function(x) if (meta(x)) x$transpose(1, 3) else x$transpose(1, 3)$add_(1)
  )
  for (nm in names(cases)) {
    f <- cases[[nm]]
    want <- f(file_w$clone())
    net <- torch::nn_module(initialize = function(shape) {
      self$w <- torch::nn_parameter(torch::torch_zeros(shape, dtype = torch::torch_float64()))
    })
    m <- net(want$shape)
    safe_load_model(m, path, transform = list("^w$" = f))
    expect_true(torch::torch_equal(m$w$detach(), want$to(dtype = torch::torch_float64())), label = nm)
    # Copied into the parameter itself, without gradients: still a leaf.
    expect_true(m$w$requires_grad)
    expect_true(m$w$is_leaf)
  }
})

test_that("transposing transforms load every dtype's bytes exactly", {
  skip_if_no_torch()
  set.seed(5)
  path <- withr::local_tempfile(fileext = ".safetensors")
  small <- array(round(runif(37 * 53) * 100), c(37, 53))
  dtypes <- c("F16", "BF16", "F32", "F64", "I64", "I32", "I16", "I8", "U8")
  x <- setNames(rep(list(small), length(dtypes)), dtypes)
  # Larger than the pieces of a load without transforms (32 MiB).
  x$big <- array(runif(520 * 8200), c(520, 8200))
  safe_save_file(x, path, dtype = setNames(c(dtypes, "F64"), names(x)))
  file <- safe_load_file(path, framework = "torch")
  net <- torch::nn_module(initialize = function() {
    for (nm in names(file)) {
      self[[nm]] <- torch::nn_buffer(torch::torch_zeros(rev(file[[nm]]$shape), dtype = file[[nm]]$dtype))
    }
  })
  m <- net()
  safe_load_model(m, path, transform = list("." = function(x) x$t()))
  for (nm in names(file)) {
    expect_true(torch::torch_equal(m[[nm]], file[[nm]]$t()), label = nm)
  }
  # Into a module of another dtype.
  wide <- torch::nn_module(initialize = function() {
    self$F16 <- torch::nn_buffer(torch::torch_zeros(53, 37, dtype = torch::torch_float64()))
  })()
  safe_load_model(wide, path, strict = FALSE, transform = list("^F16$" = function(x) x$t()))
  expect_true(torch::torch_equal(wide$F16, file$F16$t()$to(dtype = torch::torch_float64())))
})

test_that("a transform's view of the tensor is copied straight from the file, and what it keeps stays valid", {
  skip_if_no_torch()
  path <- withr::local_tempfile(fileext = ".safetensors")
  set.seed(4)
  safe_save_file(list(w = array(runif(512 * 256), c(512, 256))), path, dtype = "F32")
  file_w <- safe_load_file(path, framework = "torch")$w
  net <- torch::nn_module(initialize = function() {
    self$w <- torch::nn_parameter(torch::torch_zeros(256, 512))
  })
  m <- net()
  kept <- list()
  safe_load_model(m, path, transform = list("^w$" = function(x) {
    kept[[length(kept) + 1]] <<- x
    x$t()
  }))
  expect_true(torch::torch_equal(m$w$detach(), file_w$t()))
  expect_length(kept, 2)
  # The tensor the function saw on the CPU is the load's own memory, not
  # the file's, and was never read into: the view it made told the load
  # which elements to copy from the file.
  expect_identical(kept[[2]]$device$type, "cpu")
  expect_identical(as.numeric(kept[[2]]$shape), c(512, 256))
  expect_false(torch::torch_equal(kept[[2]], file_w))
  invisible(gc())
  kept[[2]]$fill_(1)
  expect_identical(as.numeric(kept[[2]]$sum()), 512 * 256)
  # Read through a raw vector (no map) as well.
  m2 <- net()
  safe_load_model(m2, readBin(path, "raw", file.size(path)), transform = list("^w$" = function(x) x$t()))
  expect_true(torch::torch_equal(m2$w$detach(), file_w$t()))
})

test_that("rename and transform read folders, shards, URLs and hf:// paths", {
  skip_if_no_torch()
  dir <- withr::local_tempdir()
  tensors <- safe_load_file(hf_fixture("gpt2", "model.safetensors"))
  dir.create(file.path(dir, "sharded"))
  safe_save_file(tensors, file.path(dir, "sharded"), max_shard_size = 20000)
  expect_gt(length(list.files(file.path(dir, "sharded"), "^model-")), 2)
  for (src in c(file.path(dir, "sharded"), file.path(dir, "sharded", "model.safetensors.index.json"))) {
    model <- gpt2()
    safe_load_model(model, src, rename = c("^transformer\\." = "transformer."), transform = gpt2_transform)
    out <- hf_logits(model, "gpt2")
    expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6, label = src)
  }
  skip_without_http()
  srv <- local_http_server()
  file.copy(hf_fixture("gpt2", "model.safetensors"), srv$dir)
  model <- gpt2()
  safe_load_model(model, srv$url("model.safetensors"), transform = gpt2_transform)
  out <- hf_logits(model, "gpt2")
  expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6)
  hub <- local_hub()
  hub$commit("org/llama", list(
    "config.json" = hf_fixture("llama", "config.json"),
    "model.safetensors" = hf_fixture("llama", "model.safetensors")
  ))
  model <- llama()
  safe_load_model(model, "hf://org/llama", rename = llama_rename)
  out <- hf_logits(model, "llama")
  expect_lt(as.numeric((out$got - out$expected)$abs()$max()), 1e-6)
})
