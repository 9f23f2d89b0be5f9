# The package's documentation as a whole: its examples and articles.

test_that("examples and articles attach no package but safetensors, so the site builds offline", {
  # pkgdown links the packages that examples and articles attach with
  # library() or require(); for one that isn't installed (torch, on most
  # machines) downlit looks it up in CRAN's package list, which fails
  # without a network. Calls as torch::f() need no look-up.
  root <- test_path("..", "..")
  files <- c(
    list.files(file.path(root, "man"), "\\.Rd$", full.names = TRUE),
    list.files(file.path(root, "vignettes"), "\\.Rmd$", full.names = TRUE)
  )
  skip_if(length(files) == 0, "the package sources are not here")
  always <- c("safetensors", rownames(utils::installed.packages(priority = c("base", "recommended"))))
  for (f in files) {
    text <- readLines(f, warn = FALSE)
    calls <- regmatches(text, gregexpr("\\b(library|require)\\(\\s*[\"']?[A-Za-z][A-Za-z0-9.]*", text))
    pkgs <- unique(sub("^.*\\(\\s*[\"']?", "", unlist(calls)))
    expect_identical(setdiff(pkgs, always), character(), label = basename(f))
  }
})
