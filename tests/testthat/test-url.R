# URLs (R/url.R): recognised, parsed, resolved, escaped and redacted.

test_that("URLs are parsed, resolved and redacted", {
  expect_true(is_url("https://huggingface.co/x"))
  expect_true(is_url("HTTP://a/b"))
  expect_false(is_url("ftp://a/b"))
  expect_false(is_url("model.safetensors"))
  expect_false(is_url(c("http://a", "http://b")))
  u <- url_parse("HTTPS://User:pw@HF.co:8443/a/b?c=1#f")
  expect_identical(u[c("scheme", "userinfo", "host", "port", "path", "query")], list(
    scheme = "https", userinfo = "User:pw", host = "hf.co", port = 8443, path = "/a/b", query = "?c=1"
  ))
  expect_identical(url_parse("http://h")$path, "/")
  expect_identical(url_parse("http://h")$port, 80)
  expect_identical(url_parse("https://[::1]:9/x")$host, "[::1]")
  expect_null(url_parse("file:///etc/passwd"))
  expect_null(url_parse("http:///x"))
  expect_identical(url_origin(url_parse("https://hf.co/x")), "https://hf.co:443")

  base <- "https://h.org/a/b/index.json?download=true"
  expect_identical(url_resolve(base, "model-1.safetensors"), "https://h.org/a/b/model-1.safetensors")
  expect_identical(url_resolve(base, "sub/m.safetensors"), "https://h.org/a/b/sub/m.safetensors")
  expect_identical(url_resolve(base, "./m"), "https://h.org/a/b/m")
  expect_identical(url_resolve(base, "../m"), "https://h.org/a/m")
  expect_identical(url_resolve(base, "../../../m"), "https://h.org/m")
  expect_identical(url_resolve(base, "/api/x?y=1"), "https://h.org/api/x?y=1")
  expect_identical(url_resolve(base, "//cdn.org/f"), "https://cdn.org/f")
  expect_identical(url_resolve(base, "http://other:81/f#frag"), "http://other:81/f")
  expect_identical(url_resolve(base, "?q=2"), "https://h.org/a/b/index.json?q=2")
  expect_identical(url_resolve("http://h:8/x", "y"), "http://h:8/y")
  expect_identical(url_path_escape("sub dir/a+b.safetensors"), "sub%20dir/a%2Bb.safetensors")

  expect_identical(
    url_redact("https://u:secret@cdn.org/f?X-Amz-Signature=abc&t=2&flag"),
    "https://u:***@cdn.org/f?X-Amz-Signature=***&t=***&flag"
  )
  expect_identical(url_redact("http://h/a/b.safetensors"), "http://h/a/b.safetensors")
})

test_that("references resolve as RFC 3986's examples do (section 5.4), fragments dropped", {
  base <- "http://a/b/c/d;p?q"
  cases <- list(
    # 5.4.1, normal examples
    c("g:h", "g:h"), c("g", "http://a/b/c/g"), c("./g", "http://a/b/c/g"), c("g/", "http://a/b/c/g/"),
    c("/g", "http://a/g"), c("//g", "http://g"), c("?y", "http://a/b/c/d;p?y"),
    c("g?y", "http://a/b/c/g?y"), c("#s", "http://a/b/c/d;p?q"), c("g#s", "http://a/b/c/g"),
    c("g?y#s", "http://a/b/c/g?y"), c(";x", "http://a/b/c/;x"), c("g;x", "http://a/b/c/g;x"),
    c("g;x?y#s", "http://a/b/c/g;x?y"), c("", "http://a/b/c/d;p?q"), c(".", "http://a/b/c/"),
    c("./", "http://a/b/c/"), c("..", "http://a/b/"), c("../", "http://a/b/"), c("../g", "http://a/b/g"),
    c("../..", "http://a/"), c("../../", "http://a/"), c("../../g", "http://a/g"),
    # 5.4.2, abnormal examples
    c("../../../g", "http://a/g"), c("../../../../g", "http://a/g"), c("/./g", "http://a/g"),
    c("/../g", "http://a/g"), c("g.", "http://a/b/c/g."), c(".g", "http://a/b/c/.g"),
    c("g..", "http://a/b/c/g.."), c("..g", "http://a/b/c/..g"), c("./../g", "http://a/b/g"),
    c("./g/.", "http://a/b/c/g/"), c("g/./h", "http://a/b/c/g/h"), c("g/../h", "http://a/b/c/h"),
    c("g;x=1/./y", "http://a/b/c/g;x=1/y"), c("g;x=1/../y", "http://a/b/c/y"),
    c("g?y/./x", "http://a/b/c/g?y/./x"), c("g?y/../x", "http://a/b/c/g?y/../x"),
    c("g#s/./x", "http://a/b/c/g"), c("g#s/../x", "http://a/b/c/g"), c("http:g", "http:g")
  )
  for (k in cases) {
    expect_identical(url_resolve(base, k[[1]]), k[[2]], label = sprintf("url_resolve(base, %s)", encodeString(k[[1]], quote = '"')))
  }
})
