# rename_names() and check_rename(): the `rename` argument, in pure R
# (safe_load_model()'s use of it is tested in test-model.R).

rename_names <- function(names, rename) {
  safetensors:::check_rename(rename)
  safetensors:::rename_names(names, rename)
}

hf_names <- c(
  "model.embed_tokens.weight",
  "model.layers.0.self_attn.q_proj.weight",
  "model.layers.0.input_layernorm.weight",
  "model.layers.10.self_attn.rotary_emb.inv_freq",
  "model.norm.weight",
  "lm_head.weight"
)

test_that("NULL keeps the names", {
  expect_identical(rename_names(hf_names, NULL), hf_names)
  expect_identical(rename_names(character(), NULL), character())
})

test_that("replacements apply in order, to every match, each to the result of the one before", {
  out <- rename_names(hf_names, c("^model\\." = "", "self_attn\\." = "attn.", "^layers\\." = "h."))
  expect_identical(out, c(
    "embed_tokens.weight", "h.0.attn.q_proj.weight", "h.0.input_layernorm.weight",
    "h.10.attn.rotary_emb.inv_freq", "norm.weight", "lm_head.weight"
  ))
  # Every match in a name, not only the first.
  expect_identical(rename_names("a.a.a", c("a" = "b")), "b.b.b")
  # Later replacements see earlier ones' results.
  expect_identical(rename_names("x", c("x" = "y", "y" = "z")), "z")
  # Perl regular expressions, with back references.
  expect_identical(
    rename_names("layers.3.mlp", c("^layers\\.(\\d+)\\.(?=mlp)" = "blocks.\\1.ff.")),
    "blocks.3.ff.mlp"
  )
  # A replacement that matches nothing changes nothing.
  expect_identical(rename_names(hf_names, c("^nothing$" = "x")), hf_names)
  expect_identical(rename_names(character(), c("a" = "b")), character())
})

test_that("a replacement NA skips the names its pattern matches", {
  out <- rename_names(hf_names, c("^model\\." = "", "rotary_emb\\.inv_freq$" = NA, "^layers\\." = "h."))
  expect_identical(out, c(
    "embed_tokens.weight", "h.0.self_attn.q_proj.weight", "h.0.input_layernorm.weight",
    NA, "norm.weight", "lm_head.weight"
  ))
  # A skipped name stays skipped whatever comes after.
  expect_identical(rename_names(c("a", "b"), c("a" = NA, ".*" = "c")), c(NA, "c"))
  # Patterns that all skip make a logical vector, `c(pattern = NA)`.
  expect_identical(rename_names(hf_names, c("^lm_head" = NA)), c(hf_names[-6], NA))
  expect_identical(rename_names(c("a", "b"), c(a = NA, b = NA)), c(NA_character_, NA_character_))
})

test_that("a function gets every name at once and returns the new ones, NA to skip", {
  seen <- NULL
  out <- rename_names(hf_names, function(x) {
    seen <<- x
    ifelse(startsWith(x, "lm_head"), NA, sub("^model\\.", "", x))
  })
  expect_identical(seen, hf_names)
  expect_identical(out[[1]], "embed_tokens.weight")
  expect_true(is.na(out[[6]]))
  # All NA as a logical vector is all skipped; attributes are dropped.
  expect_identical(rename_names(c("a", "b"), function(x) c(NA, NA)), c(NA_character_, NA_character_))
  expect_identical(rename_names(c("a", "b"), function(x) stats::setNames(toupper(x), x)), c("A", "B"))
  expect_identical(rename_names(character(), function(x) x), character())
})

test_that("two names becoming one is an error naming both", {
  cnd <- expect_error(
    rename_names(c("a.weight", "b.weight", "c.bias"), c("^[ab]\\." = "x.")),
    class = "safetensors_error_rename"
  )
  expect_identical(cnd$to, "x.weight")
  expect_identical(cnd$from, list(c("a.weight", "b.weight")))
  expect_snapshot(error = TRUE, {
    rename_names(c("a.weight", "b.weight", "c.bias"), c("^[ab]\\." = "x."))
    rename_names(c("a", "b", "c", "d", "e"), function(x) ifelse(x %in% c("a", "b", "c"), "x", "y"))
  })
  # Skipped names don't collide.
  expect_identical(rename_names(c("a", "b"), function(x) c(NA, NA_character_)), c(NA_character_, NA_character_))
  # Long lists are cut short.
  many <- sprintf("t%02d", 1:30)
  cnd <- expect_error(rename_names(many, function(x) sub("[0-9]$", "", x)), class = "safetensors_error_rename")
  expect_length(cnd$to, 3)
})

test_that("a function that fails, returns a wrong value or an empty name is an error", {
  expect_snapshot(error = TRUE, {
    rename_names(c("a", "b"), function(x) stop("no names today"))
    rename_names(c("a", "b"), function(x) "a")
    rename_names(c("a", "b"), function(x) 1:2)
    rename_names(c("a", "b"), function(x) NULL)
    rename_names(c("a", "b"), function(x) list("a", "b"))
    rename_names(c("model.a", "b"), c("^model\\.a$" = ""))
  })
  cnd <- expect_error(rename_names(c("a", "b"), function(x) stop("no names today")), class = "safetensors_error_rename")
  expect_s3_class(cnd$parent, "simpleError")
  cnd <- expect_error(rename_names(c("a", "b"), function(x) c("a", "")), class = "safetensors_error_rename")
  expect_identical(cnd$from, "b")
})

test_that("`rename` must be a function or a named character vector of regular expressions", {
  expect_snapshot(error = TRUE, {
    rename_names("a", 1)
    rename_names("a", character())
    rename_names("a", list(a = "b"))
    rename_names("a", factor("a"))
    rename_names("a", "b")
    rename_names("a", c(a = "b", "c"))
    rename_names("a", c("a[" = "b"))
  })
  for (bad in list(TRUE, list(), c(a = 1), stats::setNames("b", NA))) {
    expect_error(rename_names("a", bad), class = "safetensors_error_invalid_argument")
  }
})
