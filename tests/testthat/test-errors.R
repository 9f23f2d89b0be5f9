test_that("an interrupt is a classed error at once, without loading cli or rlang", {
  skip_on_cran()
  res <- callr::r(function() {
    library(safetensors)
    reader <- function(path) {
      safetensors:::st_check(structure(list(kind = "interrupted"), class = "safetensors_rust_error"), "x")
    }
    t0 <- Sys.time()
    e <- tryCatch(reader("f"), error = identity)
    seconds <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
    list(
      class = class(e), message = conditionMessage(e), call = conditionCall(e), seconds = seconds,
      loaded = c(rlang = isNamespaceLoaded("rlang"), cli = isNamespaceLoaded("cli"))
    )
  }, libpath = .libPaths())
  expect_identical(
    res$class,
    c("safetensors_error_interrupted", "safetensors_error", "rlang_error", "error", "condition")
  )
  expect_identical(res$message, "Interrupted by the user.")
  expect_identical(res$call, quote(reader("f")))
  expect_identical(res$loaded, c(rlang = FALSE, cli = FALSE))
  expect_lt(res$seconds, 0.05)
})

test_that("an interrupt prints like rlang's errors once rlang is loaded", {
  f <- function() st_check(structure(list(kind = "interrupted"), class = "safetensors_rust_error"), "x")
  e <- expect_error(f(), class = "safetensors_error_interrupted")
  expect_identical(conditionCall(e), quote(f()))
  expect_match(cli::ansi_strip(format(e)), "Error in `f()`:\n! Interrupted by the user.", fixed = TRUE)
  expect_null(frame_call(globalenv()))
  expect_identical(frame_call(quote(g(1))), quote(g(1)))
})

test_that("a hint from the Rust core is an `i` bullet, printed as is", {
  f <- function() {
    st_check(
      structure(
        list(kind = "header_too_large", message = "it is {not} 100%", tensor = NULL, format = TRUE, hint = "Try {this}."),
        class = "safetensors_rust_error"
      ),
      "Can't read 'x'."
    )
  }
  expect_snapshot(f(), error = TRUE)
  e <- expect_error(f(), class = "safetensors_error_header_too_large")
  expect_s3_class(e, "safetensors_error_format")
})

test_that("?safetensors-conditions documents every class raised, and no other", {
  root <- test_path("..", "..")
  error_rs <- file.path(root, "src", "rust", "core", "src", "error.rs")
  skip_if_not(file.exists(error_rs) && dir.exists(file.path(root, "R")), "the package sources are not here")
  # The kinds of the Rust core, and those R raises itself.
  rust <- regmatches(readLines(error_rs), regexec('Kind::[A-Za-z]+ => "([a-z_]+)"', readLines(error_rs)))
  rust <- vapply(Filter(length, rust), `[[`, "", 2)
  expect_gte(length(rust), 20)
  code <- paste(unlist(lapply(list.files(file.path(root, "R"), full.names = TRUE), readLines)), collapse = "\n")
  calls <- regmatches(code, gregexpr('st_(abort|warn)\\(\\s*"[a-z_]+"', code))[[1]]
  kinds <- sub('.*"([a-z_]+)"$', "\\1", calls)
  is_warn <- startsWith(calls, "st_warn")
  raised <- unique(c(
    paste0("safetensors_error_", c(rust, kinds[!is_warn], "format")),
    paste0("safetensors_warning_", kinds[is_warn])
  ))
  rd <- tools::Rd_db("safetensors")[["safetensors-conditions.Rd"]]
  text <- paste(capture.output(tools::Rd2txt(rd)), collapse = "\n")
  documented <- unique(regmatches(text, gregexpr("safetensors_(error|warning)_[a-z_]*[a-z]", text))[[1]])
  expect_setequal(documented, raised)
})

test_that("a framework's missing package is also a missing package", {
  # One class for any missing package; the framework's is a subclass, so
  # code written for either class of 0.4.0 catches it.
  cnd <- expect_error(
    st_abort("framework_not_installed", "Needs {.pkg p}.", package = "p"),
    class = "safetensors_error_package_not_installed"
  )
  expect_identical(
    class(cnd)[1:3],
    c("safetensors_error_framework_not_installed", "safetensors_error_package_not_installed", "safetensors_error")
  )
  expect_identical(cnd$package, "p")
  caught <- tryCatch(
    st_abort("framework_not_installed", "Needs {.pkg p}.", package = "p"),
    safetensors_error_framework_not_installed = function(e) "framework"
  )
  expect_identical(caught, "framework")
  # Other kinds get no parent class.
  cnd <- expect_error(st_abort("package_not_installed", "Needs {.pkg q}.", package = "q"), class = "safetensors_error")
  expect_identical(class(cnd)[1:2], c("safetensors_error_package_not_installed", "safetensors_error"))
})

test_that("every error cites the function the user called, with the package's class", {
  # Each exported function, S3 method, handle and slice method and the R6
  # class with bad input: a missing argument, an argument too many (named
  # or not), a value of the wrong kind, and errors found deep inside (in
  # the Rust core, in a vapply() over indices, in a framework's method).
  p <- system.file("extdata", "example.safetensors", package = "safetensors")
  tf <- withr::local_tempfile(fileext = ".safetensors")
  h <- safe_open(p)
  withr::defer(close(h))
  s <- h$slice("weight")
  hc <- safe_open(p)
  close(hc)
  f <- safetensors$new(p)
  calls <- alist(
    safe_load_file(), safe_load_file(42), safe_load_file(p, "extra"), safe_load_file(p, tensors = c("bias", "bias")),
    safe_load_file(p, tensors = "nope"),
    safe_deserialize(), safe_deserialize(42), safe_deserialize(as.raw(1:3)),
    safe_open(), safe_open(42), safe_open(p, "x"), safe_open("nope"), safe_open(p, device = "cpu"),
    safe_slice(), safe_slice(p), safe_slice(p, "nope"), safe_slice(p, "weight", 9, 1),
    safe_info(), safe_info(42), safe_info(p, "extra"), safe_info(p, tensors = "a"), safe_info("nope"),
    safe_metadata(), safe_metadata(p, 1), safe_metadata("nope"),
    safe_summary(), safe_summary(p, 0), safe_summary(p, 1, "x"),
    safe_save_file(), safe_save_file(list(x = 1)), safe_save_file(list(x = factor("a")), tf),
    safe_save_file(list(x = Sys.Date()), tf), safe_save_file(data.frame(a = 1), tf),
    safe_save_file(list(x = c(1, NA)), tf, dtype = "I32"), safe_save_file(list(x = 1), tf, "F32"),
    safe_save_file(list(x = 1), tf, metdata = list(a = "b")), safe_save_file(list(x = 1), file.path(tf, "no", "dir")),
    safe_serialize(), safe_serialize(42), safe_serialize(list(x = 1), dtype = "C128"),
    safe_serialize(list(x = c(1, NA)), dtype = "I32"),
    safe_writer(), safe_writer(tf), safe_writer(tf, 42), safe_writer(tf, data.frame(name = "a", dtype = "F99", shape = 1)),
    safe_convert(), safe_convert(p), safe_convert(p, tf, dtype = "F99"), safe_convert(p, tf, select = "^nope"),
    safe_convert(p, tf, rename = c(".*" = "same")),
    safe_load_model(), safe_load_model(42, p), safe_save_model(), safe_save_model(42, tf),
    safe_tensor_meta(), safe_tensor_meta(factor("a")), safe_tensor_buffer(), safe_tensor_buffer(factor("a")),
    h[-1], h[[99]], h$nope, h[1, 2], h[[1, 2]], h[["nope"]], h[c("bias", "nope")], h[NA],
    h$get_tensor("nope"), h$get_tensor(), h$get_tensor("bias", 2), h$keys(1), h$get_slice("nope"),
    h$slice("nope"), h$slice(), h$metadata(1),
    hc$bias, hc[["bias"]], hc[1:2], as.list(hc), summary(h, depth = 0), summary(hc),
    s[9, 1], s[1], s[NA, 1], as.array(hc$slice("bias")),
    safetensors$new("nope"), safetensors$new(), safetensors$new(p, "extra"), safetensors$new(p, framework = "nope"),
    f$get_tensor("nope"), f$get_tensor(1)
  )
  for (cl in calls) {
    e <- tryCatch(eval(cl), error = identity)
    label <- deparse1(cl)
    expect_true(inherits(e, "safetensors_error"), label = label)
    expect_identical(if (inherits(e, "condition")) conditionCall(e), cl, label = label)
  }
  # Every exported function is among them.
  called <- unique(vapply(calls, function(cl) deparse1(cl[[1]]), ""))
  exported <- getNamespaceExports("safetensors")
  fns <- exported[vapply(exported, function(n) is.function(getExportedValue("safetensors", n)), logical(1))]
  expect_setequal(intersect(fns, called), fns)
})

test_that("error_frame() reports the outermost frame of the package, else what it was given", {
  # A function outside the package calling one of it: the package's.
  user <- function(x) safe_info(x)
  e <- expect_error(user(42), class = "safetensors_error_invalid_argument")
  expect_identical(conditionCall(e), quote(safe_info(x)))
  # A function outside the package raising through the helpers with its
  # own frame keeps it.
  own <- function() st_abort("io", "Failed.")
  e <- expect_error(own(), class = "safetensors_error_io")
  expect_identical(conditionCall(e), quote(own()))
  # Not a frame: passed on as it is.
  expect_identical(error_frame(quote(f(1))), quote(f(1)))
  expect_identical(error_frame(globalenv()), globalenv())
  expect_identical(entry_index(new.env()), NA_integer_)
  expect_null(entry_mark(globalenv()))
})
