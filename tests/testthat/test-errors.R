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
