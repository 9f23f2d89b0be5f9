#' safetensors: read and write safetensors tensor files
#'
#' Fast and safe reading and writing of safetensors files, the tensor
#' storage format of Hugging Face models (and of R torch's `torch_save()`).
#' A Rust core parses and validates each header as strictly as the
#' reference implementation and converts the bytes straight into R vectors,
#' so malformed or hostile files give classed errors instead of crashing R.
#' Tensors become plain R arrays, raw bytes, or torch tensors.
#'
#' @section Functions by task:
#' * Read: [safe_load_file()] (a file, URL, Hugging Face Hub path, raw
#'   vector, connection or sharded checkpoint), [safe_deserialize()] (a raw
#'   vector).
#' * Write: [safe_save_file()] (atomically, optionally in shards),
#'   [safe_serialize()].
#' * Inspect without reading the data: [safe_info()], [safe_metadata()],
#'   [safe_summary()].
#' * Read lazily, a tensor or a slice at a time: [safe_open()],
#'   [safe_slice()], and the safetensors 0.2.x class [safetensors].
#' * Frameworks: [safetensors_frameworks], [safe_tensor_buffer()],
#'   [safe_tensor_meta()].
#'
#' The vignettes show them at work: `vignette("safetensors")` to get
#' started, `vignette("python")` for moving weights between Python and R,
#' and `vignette("big-models")` for lazy reading, slices, sharded
#' checkpoints and models on the Hugging Face Hub ([safetensors-hub]).
#'
#' @section Options:
#' Every option of the package, with its default. An option of the wrong
#' kind is an error of class `safetensors_error_invalid_argument` when it
#' is used (`safetensors.progress` is on only when `TRUE`).
#' * `safetensors.progress`: whether loads and saves of more than
#'   `safetensors.progress_group_bytes` of tensors show a progress bar once
#'   they have run for two seconds (cli's option `cli.progress_show_after`).
#'   Default `TRUE`. The bar is shown only in interactive sessions, never in
#'   knitr documents or testthat tests (see [rlang::is_interactive()]), and
#'   only where it can be redrawn in place and removed when done: in a
#'   terminal or RStudio's console ([cli::is_dynamic_tty()]; elsewhere,
#'   such as output to a file, each update would stay behind as a line of
#'   its own). Set the option to `FALSE` to never show it. With a bar, a
#'   load reads the data in groups of bytes (whole tensors together, or rows
#'   of a large one) and a save writes a group at a time, so that the bar
#'   moves over the bytes, within a large tensor too; the results are the
#'   same, and Ctrl-C interrupts either (a save interrupted leaves no
#'   partial file).
#' * `safetensors.progress_group_bytes`: the size in bytes of those groups,
#'   and so how often the bar moves: a number of at least 1. Default
#'   `64 * 2^20` (64 MiB). Loads and saves of less than one group show no
#'   bar.
#' * `safetensors.threads`: how many threads large reads and writes use: a
#'   positive whole number. Default: the number of available cores, at most
#'   2. Each R object is still allocated by R's main thread, and the
#'   results do not depend on the number of threads; `1` turns threads off.
#' * `safetensors.http_headers`: headers sent with requests for remote
#'   files, such as credentials: a named character vector, such as
#'   `c(Authorization = "Bearer <token>")`. Default `NULL` (none). Sent only
#'   to the host of the URL given (see "Remote files").
#' * `safetensors.http_timeout`: seconds to wait for a connection, and for a
#'   transfer that has stalled (no byte received) before it fails: a number
#'   from 1 to 86400. Default 30.
#' * `safetensors.http_retries`: how many times a request that failed on a
#'   server error (5xx, 429) or a dropped or refused connection is tried
#'   again, after 0.25, 0.5, 1, ... seconds (a transfer dropped midway
#'   resumes where it stopped): a number from 0 to 10. Default 3.
#' * `safetensors.http_connections`: how many ranges of a file a download
#'   into the Hub cache fetches at once: a number from 1 to 64 (files
#'   of less than 32 MiB take one). Default 4, or 1 for a server on this
#'   machine (loopback), where one range is fastest.
#' * `safetensors.hf_cache`: whether whole reads of `hf://` paths store the
#'   files they download in the Hugging Face Hub cache. Default `TRUE`; see
#'   [safetensors-hub].
#'
#' @section Remote files:
#' The reading functions accept `http://` and `https://` URLs (and
#' Hugging Face Hub paths, `hf://owner/name/...`, see [safetensors-hub]) and fetch
#' only the bytes they need with HTTP range requests (see "Remote files" in
#' [safe_open()]), through the \pkg{curl} package, so proxies, CA
#' certificates and libcurl's settings apply as R users set them.
#' * Credentials: option `safetensors.http_headers` is sent with every
#'   request to the host (scheme, name and port) of the URL given,
#'   whatever it is, and with redirects on that host, never to another host
#'   a redirect leads to. The Hugging Face token (the `HF_TOKEN`
#'   environment variable, or the token file of `hf auth login`) is sent as
#'   `Authorization: Bearer <token>` only to `huggingface.co` and `hf.co`
#'   over https and to the Hub `HF_ENDPOINT` names (not to the CDNs that
#'   Hub URLs redirect to with signed URLs, nor to any other host), unless
#'   the option sets `Authorization`.
#'   Tokens, passwords in URLs and query values are never shown in
#'   messages.
#' * Timeouts, retries and parallel downloads: options
#'   `safetensors.http_timeout`, `safetensors.http_retries` and
#'   `safetensors.http_connections` (see "Options").
#' * Redirects are followed (at most 10). Ctrl-C stops a transfer at once.
#'
#' @section Errors:
#' Errors are conditions of class `safetensors_error`, with a subclass per
#' kind of problem (`safetensors_error_<kind>`, such as
#' `safetensors_error_invalid_header` or
#' `safetensors_error_tensor_not_found`); malformed files also have class
#' `safetensors_error_format`. HTTP failures are `safetensors_error_http`
#' (fields `status` and `url`), and a package a function needs but that is
#' missing (curl, for URLs) is `safetensors_error_package_not_installed`
#' (field `package`). Warnings have class `safetensors_warning`.
#' [safetensors-conditions] lists every class and what raises it.
#'
#' The package is documented under `safetensors-package` because the topic
#' `safetensors` is the safetensors 0.2.x R6 class, [safetensors].
#'
#' @docType package
#' @name safetensors-package
#' @aliases safetensors-package
#' @examples
#' path <- system.file("extdata", "example.safetensors", package = "safetensors")
#' safe_summary(path)
#' x <- safe_load_file(path)
#' x$weight
#'
#' # Turn the progress bar off for this session
#' old <- options(safetensors.progress = FALSE)
#' options(old)
NULL

## usethis namespace: start
#' @importFrom R6 R6Class
## usethis namespace: end
# cli and rlang (about 0.1 s to load, and a third more work in each full
# garbage collection afterwards, which R runs before growing its heap for a
# large tensor) are only used through `::` on the paths that need them:
# errors, warnings and progress bars. Loads, saves and slices that succeed
# don't load them (tests/testthat/test-utils.R checks).
NULL

# The built-in "torch" framework is registered when the namespace loads,
# not when the package is built: the registry then holds the namespace's own
# functions, even where a tool rewrites them in place (covr does), and the
# dtypes torch reads, from the dtype table of the compiled code.
.onLoad <- function(libname, pkgname) {
  register_torch()
}
