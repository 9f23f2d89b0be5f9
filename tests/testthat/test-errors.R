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
