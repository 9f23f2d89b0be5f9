# Run by R CMD check. The tests themselves are in tests/testthat/;
# tools/test.sh runs them (and cargo test) during development.
library(testthat)
library(safetensors)

test_check("safetensors")
