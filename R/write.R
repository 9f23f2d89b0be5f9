# Writing: the named description of the tensors that R/save.R's functions
# pass to the Rust write engine (src/rust/src/write.rs), and the loop that
# drives it, to a file (atomically), a raw vector or a connection, fetching
# framework tensors' bytes when their turn comes and moving a progress bar.


# Describes `tensors` for the Rust writer (src/rust/src/write.rs), as a
# named list: `tensors` (each tensor's R object), `names`, `dtypes` (the
# dtypes to write, by the format's names, whatever spelling was given),
# `shapes` (row-major, outermost first), `kinds` ("values": an R vector the
# kernels convert and permute to row-major; "integer64": the same for
# bit64's integer64, whose doubles hold int64 bits; "bytes": a raw vector
# of the bytes as stored, as framework = "raw" returns them; "later": a
# framework tensor whose bytes are fetched when its turn comes), `exact`
# (whether the dtype came from the tensor's "dtype" attribute alone, so
# that it must hold every value exactly), `metadata` (a named character
# vector, or NULL) and `from` (the dtype of the bytes of "bytes" and
# "later" tensors, which the engine converts when it is not the dtype to
# write; "" for the others).
tensor_spec <- function(tensors, dtype, metadata, call = parent.frame()) {
  if (!is.list(tensors) || (is.object(tensors) && !inherits(tensors, "safetensors_tensors"))) {
    st_abort(
      "invalid_argument",
      "{.arg tensors} must be a named list of tensors, not {.obj_type_friendly {tensors}}.",
      call = call
    )
  }
  nms <- check_tensor_list_names(tensors, call)
  n <- length(tensors)
  values <- vector("list", n)
  shapes <- vector("list", n)
  kinds <- character(n)
  # Each tensor's own dtype: the "dtype" attribute, or the default for its
  # R type, or its framework's or raw vector's dtype.
  own <- character(n)
  attr_dtype <- logical(n)
  r_types <- names(default_dtypes())
  # Torch tensors described at once (torch_metas()); the others, and one
  # it can't describe (which gets the method's error, in its turn), when
  # their turn comes below.
  framework <- which(vapply(tensors, is_plain_torch, logical(1)))
  metas <- if (length(framework) > 0) tryCatch(torch_metas(tensors[framework]), error = function(e) NULL)
  slot <- integer(n)
  slot[framework] <- seq_along(framework)
  for (i in seq_len(n)) {
    x <- tensors[[i]]
    d <- attr(x, "dtype", exact = TRUE)
    attr_dtype[[i]] <- is_string(d)
    if (is_integer64(x)) {
      values[i] <- list(x)
      shapes[[i]] <- r_shape(x)
      kinds[[i]] <- "integer64"
      own[[i]] <- if (is_string(d)) d else default_dtypes()[["integer64"]]
    } else if (is.object(x)) {
      # Framework tensors: described now, their bytes fetched one at a time
      # while writing (write_spec()), so that only one tensor's buffer
      # exists at a time.
      k <- slot[[i]]
      if (k > 0 && !is.null(metas) && !is.na(metas$dtypes[[k]])) {
        shapes[[i]] <- metas$shapes[[k]]
        own[[i]] <- metas$dtypes[[k]]
      } else {
        meta <- safe_tensor_meta(x)
        shapes[[i]] <- as.numeric(unlist(meta$shape))
        own[[i]] <- meta$dtype
      }
      values[i] <- list(x)
      attr_dtype[[i]] <- FALSE
      kinds[[i]] <- "later"
    } else if (is.raw(x) && is.null(dim(x)) && !is.null(attr(x, "shape")) && is_string(d)) {
      values[i] <- list(x)
      shapes[[i]] <- as.numeric(attr(x, "shape"))
      own[[i]] <- d
      attr_dtype[[i]] <- FALSE
      kinds[[i]] <- "bytes"
    } else if (typeof(x) %in% r_types) {
      values[i] <- list(x)
      shapes[[i]] <- r_shape(x)
      kinds[[i]] <- "values"
      own[[i]] <- if (is_string(d)) d else default_dtypes()[[typeof(x)]]
    } else {
      st_abort(
        "invalid_argument",
        c(
          "Tensor {.val {nms[[i]]}} must be an R vector or array, not {.obj_type_friendly {x}}.",
          i = if (is.character(x)) "Convert decimal strings first, for example with {.code bit64::as.integer64()}."
        ),
        call = call
      )
    }
  }
  # "dtype" attributes and framework tensors' dtypes in any spelling.
  own <- as_dtype(own, nms, call = call)
  chosen <- chosen_dtypes(dtype, own, nms, call)
  dtypes <- own
  dtypes[!is.na(chosen)] <- chosen[!is.na(chosen)]
  bytes_in <- kinds %in% c("bytes", "later")
  from <- rep("", n)
  from[bytes_in] <- own[bytes_in]
  list(
    tensors = values, names = nms, dtypes = dtypes, shapes = shapes, kinds = kinds,
    # Where the "dtype" attribute alone chose the dtype, values are written
    # only if it holds them exactly (the write engine checks).
    exact = attr_dtype & is.na(chosen) & !bytes_in,
    metadata = check_metadata(metadata, call),
    from = from
  )
}

# The names of the list `tensors`, in UTF-8: every tensor needs one, and
# one of them may be the empty name (PyTorch's forward hooks name an
# output so, and the format allows it); a list without names, or with
# several tensors without one, is an error naming them.
check_tensor_list_names <- function(tensors, call) {
  nms <- names(tensors)
  if (length(tensors) > 0 && (is.null(nms) || anyNA(nms))) {
    st_abort("invalid_argument", "{.arg tensors} must be a named list; every tensor needs a name.", call = call)
  }
  nms <- utf8_strings(nms %||% character(), "tensor name", call)
  unnamed <- which(nms == "")
  if (length(unnamed) > 1) {
    st_abort(
      "invalid_argument",
      c(
        "{.arg tensors} must be a named list; every tensor needs a name.",
        x = "Tensors {unnamed} have none.",
        i = "One tensor may have the empty name {.val {''}}, as in {.code list(w = x, y)}; two can't."
      ),
      call = call
    )
  }
  check_unique(nms, "duplicate_name", "Each tensor name must be unique.", call)
  if ("__metadata__" %in% nms) {
    st_abort("invalid_argument", "A tensor can't be named {.val __metadata__}; that key holds the metadata.", call = call)
  }
  nms
}

# Whether `dtypes` (the format's names) are floating-point dtypes.
is_float_dtype <- function(dtypes) {
  startsWith(dtypes, "F") | dtypes == "BF16"
}

# The dtype the `dtype` argument asks for each tensor (NA where it asks
# none). A single unnamed floating-point dtype applies to the
# floating-point tensors (`own`, each tensor's own dtype, says which are),
# as "save my model in BF16" means: integer, logical and complex tensors
# keep their dtype unless named, and a list that has no floating-point
# tensor is an error rather than a silent no-op. Any other single dtype
# (an integer dtype, BOOL, C64) applies to every tensor. A named vector
# applies to the tensors it names.
chosen_dtypes <- function(dtype, own, nms, call) {
  out <- rep(NA_character_, length(own))
  if (is.null(dtype)) {
    return(out)
  }
  if (!is.character(dtype) || anyNA(dtype) || length(dtype) == 0) {
    st_abort("invalid_argument", "{.arg dtype} must be a character vector of dtype names.", call = call)
  }
  dtype[] <- as_dtype(dtype, call = call)
  if (is.null(names(dtype))) {
    if (length(dtype) != 1) {
      st_abort("invalid_argument", "{.arg dtype} must be a single dtype or a vector named by tensor.", call = call)
    }
    if (!is_float_dtype(dtype)) {
      out[] <- dtype
      return(out)
    }
    floats <- is_float_dtype(own)
    if (length(own) > 0 && !any(floats)) {
      st_abort(
        "invalid_argument",
        c(
          "A single floating-point {.arg dtype} applies to the floating-point tensors, and {.arg tensors} has none.",
          i = "Name the tensors to convert, as in {.code dtype = c({encodeString(nms[[1]], quote = '\"')} = \"{dtype}\")}."
        ),
        call = call
      )
    }
    out[floats] <- dtype
    return(out)
  }
  unknown <- setdiff(names(dtype), nms)
  if (length(unknown) > 0) {
    st_abort("tensor_not_found", "{.arg dtype} names tensor{?s} not in {.arg tensors}: {.val {unknown}}.", call = call)
  }
  out[match(names(dtype), nms)] <- unname(dtype)
  out
}

# Whether `x` is a vector of bit64's 64-bit integers (doubles holding the
# bits of int64 values).
is_integer64 <- function(x) {
  inherits(x, "integer64") && typeof(x) == "double"
}

r_shape <- function(x) {
  dim(x) %||% if (length(x) == 1 && identical(attr(x, "shape"), integer(0))) integer(0) else length(x)
}

check_metadata <- function(metadata, call) {
  if (is.null(metadata)) {
    return(NULL)
  }
  ok_values <- if (is.list(metadata)) {
    all(vapply(metadata, function(v) is.character(v) && length(v) == 1 && !is.na(v), logical(1)))
  } else {
    is.character(metadata) && !anyNA(metadata)
  }
  if (!ok_values || (length(metadata) > 0 && (is.null(names(metadata)) || anyNA(names(metadata))))) {
    st_abort(
      "invalid_argument",
      "{.arg metadata} must be a named list of single strings or a named character vector.",
      call = call
    )
  }
  out <- utf8_strings(vapply(metadata, identity, character(1), USE.NAMES = FALSE), "metadata value", call)
  names(out) <- utf8_strings(names(metadata) %||% character(), "metadata key", call)
  if (anyDuplicated(names(out))) {
    st_abort("invalid_argument", "{.arg metadata} names must be unique.", call = call)
  }
  out
}

# The bytes of each tensor of a tensor_spec().
spec_sizes <- function(spec) {
  vapply(seq_along(spec$names), function(i) tensor_bytes(spec$dtypes[[i]], spec$shapes[[i]]), numeric(1))
}

# The tensors `k` of a tensor_spec(), with its metadata.
spec_subset <- function(spec, k) {
  fields <- c("tensors", "names", "dtypes", "shapes", "kinds", "exact", "from")
  spec[fields] <- lapply(spec[fields], function(v) v[k])
  spec
}

# Framework tensor `i` of `spec` as bytes, checked against its description.
framework_bytes <- function(spec, i, call, size = NULL) {
  name <- spec$names[[i]]
  bytes <- safe_tensor_buffer(spec$tensors[[i]])
  if (!is.raw(bytes)) {
    st_abort(
      "invalid_argument",
      "{.fn safe_tensor_buffer} must return a raw vector, not {.obj_type_friendly {bytes}} (tensor {.val {name}}).",
      call = call
    )
  }
  size <- size %||% tensor_bytes(spec$from[[i]], spec$shapes[[i]])
  if (length(bytes) != size) {
    st_abort(
      "invalid_argument",
      c(
        "The buffer of tensor {.val {name}} has {length(bytes)} bytes, but its dtype and shape need {size}.",
        i = "{.fn safe_tensor_buffer} and {.fn safe_tensor_meta} disagree."
      ),
      tensor = name,
      call = call
    )
  }
  bytes
}

# Writes the tensors `spec` describes `to` a "file" (`target`, a path,
# written atomically; `sync`: flushed to disk first), a "raw" vector
# (returned) or a "connection" (`target`; opened, if it is not, once the
# tensors are known to be writable, and closed again). R vectors are
# converted by the engine; framework tensors' bytes are fetched when their
# turn comes, one tensor at a time (torch tensors in pieces through one
# reusable buffer, write_pieces()). With a cli progress `bar`, the engine writes about
# progress_group_bytes() per call and the bar moves in between. `label`
# names the output in messages. A failure leaves no file behind.
write_spec <- function(spec, to, target = NULL, sync = TRUE, bar = NULL, label = target,
                       call = parent.frame()) {
  # The message is built only on error (cli formatting takes milliseconds,
  # and loads cli).
  check <- function(res) {
    if (!inherits(res, "safetensors_rust_error")) {
      return(res)
    }
    what <- if (to == "raw") "Can't serialize the tensors." else sprintf("Can't write %s.", describe_source(label))
    k <- match(res$tensor, spec$names)
    if (identical(res$kind, "conversion") && !is.na(k) && spec$exact[[k]]) {
      # The dtype came from the tensor's attribute, not from the caller.
      name <- spec$names[[k]]
      dtype <- spec$dtypes[[k]]
      st_abort(
        "conversion",
        c(
          cli_escape(what),
          x = cli_escape(sentence(res$message)),
          i = "The dtype {.val {dtype}} came from the tensor's {.val dtype} attribute, which is used only if {dtype} holds every value exactly.",
          i = "Choose a dtype with {.code dtype = c({encodeString(name, quote = '\"')} = \"F64\")} (a narrower one rounds), or drop the attribute with {.code attr(x, \"dtype\") <- NULL}."
        ),
        tensor = name,
        dtype = dtype,
        call = call
      )
    }
    st_check(res, what, call = call)
  }
  # A connection gets the bytes as they are made only when framework
  # tensors are fetched piece by piece; otherwise the file is made in memory
  # first, so that a value that can't be converted leaves the connection
  # untouched.
  stream <- to == "connection" && any(spec$kinds == "later")
  if (to == "connection" && !stream) {
    bytes <- write_spec(spec, "raw", call = call)
    con <- target
    if (con_open(con, "wb", call)) {
      on.exit(close(con), add = TRUE)
    }
    con_io(writeBin(bytes, con), "write", call)
    return(invisible())
  }
  w <- check(writer_open_(spec, if (stream) "stream" else to, if (to == "file") target else "", sync, st_threads()))
  # Removes the temporary file at once on an error or an interrupt; after a
  # commit it does nothing.
  on.exit(writer_abort_(w), add = TRUE)
  send <- function() NULL
  placed <- NULL
  if (stream) {
    con <- target
    if (con_open(con, "wb", call)) {
      on.exit(close(con), add = TRUE)
    }
    send <- function() con_io(writeBin(check(writer_take_(w)), con), "write", call)
    # A file connection gets the rest written by the engine, in place.
    placed <- place_connection(w, con, sync, check, call)
    if (!is.null(placed)) {
      send <- function() NULL
    }
  }
  # Puts on a helper thread while R fills the next piece, unless R must
  # send each piece on itself.
  detach <- !stream || !is.null(placed)
  # The engine writes a file itself (not a raw vector, nor a connection's
  # bytes that R sends on).
  in_place <- to == "file" || !is.null(placed)
  # Bytes written so far (the header's, to start with), for the bar.
  last <- if (is.null(bar)) 0 else check(writer_write_(w, 0))$written
  moved <- function(state) {
    # cli closes a bar once it is full: only data moves it.
    if (!is.null(bar) && state$written > last) {
      cli::cli_progress_update(inc = state$written - last, id = bar)
      last <<- state$written
    }
    state
  }
  budget <- if (is.null(bar)) Inf else progress_group_bytes()
  stage <- new.env(parent = emptyenv())
  later <- which(spec$kinds == "later")
  # Each framework tensor's writer entry, looked up once per class.
  entries <- vector("list", length(spec$kinds))
  found <- new.env(parent = emptyenv())
  for (i in later) {
    key <- paste(class(spec$tensors[[i]]), collapse = "\r")
    if (!exists(key, envir = found, inherits = FALSE)) {
      assign(key, list(framework_writer(spec$tensors[[i]])), envir = found)
    }
    entries[i] <- get(key, envir = found, inherits = FALSE)
  }
  # A torch tensor whose memory holds the file's bytes goes from there to
  # the file, in one pass: torch_save() of 1 GiB took a median 0.32 s of
  # one core in fresh processes, against 0.46 s of two through the staging
  # vectors (which take the rest); a run of them is written without R's
  # loop around each. Their addresses are asked of torch for all at once
  # (300 tensors of 4 KiB took 0.3 ms each, one at a time) unless another
  # framework's methods run during the write, which could move a tensor's
  # memory: then just before each is written.
  torch_entry <- vapply(entries[later], function(e) identical(e$write, torch_write_piece), logical(1))
  direct <- logical(length(spec$kinds))
  direct[later] <- in_place & torch_entry & spec$from[later] == spec$dtypes[later]
  memory <- rep(NA_character_, length(spec$kinds))
  asked <- all(torch_entry)
  if (asked && any(direct)) {
    memory[direct] <- torch_memories(spec$tensors[direct], spec$dtypes[direct], spec$shapes[direct])
  }
  repeat {
    state <- moved(check(writer_write_(w, budget)))
    send()
    i <- state$current
    while (i > 0 && direct[[i]]) {
      address <- if (asked) memory[[i]] else torch_memories(spec$tensors[i], spec$dtypes[[i]], spec$shapes[i])
      if (is.na(address)) {
        break
      }
      i <- moved(check(writer_put_memory_(w, address, tensor_bytes(spec$dtypes[[i]], spec$shapes[[i]]))))$current
    }
    if (i == 0) {
      break
    }
    if (spec$kinds[[i]] != "later") {
      next
    }
    put <- function(bytes, n = length(bytes)) {
      moved(check(writer_put_(w, bytes, n, detach)))
      send()
    }
    x <- spec$tensors[[i]]
    entry <- entries[[i]]
    if (!is.null(entry)) {
      # The framework's own dtype (`from`): the engine converts to the one
      # the file stores.
      write_pieces(x, entry, spec$from[[i]], spec$shapes[[i]], put, stage, helper = detach, call = call)
    } else {
      put(framework_bytes(spec, i, call))
    }
  }
  out <- check(writer_commit_(w))
  if (!is.null(placed)) {
    # The connection writes on after the file.
    con_io(seek(con, placed$at + out, rw = "write"), "write", call)
  } else if (stream) {
    con_io(writeBin(out, con), "write", call)
  }
  out
}

# Makes the stream writer `w` write the rest of its file straight into the
# file of connection `con` when the connection is a file
# (connection_file_write()): the header goes through the connection
# first, and only if it then shows up in the file at the connection's path
# (so that path names the connection's file) does the engine write the
# data there, in place after it (writer_place_(), flushed to disk with
# `sync`). Returns `list(at)`, where the connection's file started, or
# NULL (the header was written through the connection, and the rest goes
# the same way).
place_connection <- function(w, con, sync, check, call) {
  file <- connection_file_write(con)
  if (is.null(file)) {
    return(NULL)
  }
  header <- check(writer_take_(w))
  con_io(writeBin(header, con), "write", call)
  con_io(flush(con), "write", call)
  end <- file$at + length(header)
  if (!isTRUE(file.size(file$path) == end) || !identical(file_bytes(file$path, file$at, length(header)), header)) {
    return(NULL)
  }
  res <- writer_place_(w, core_path(file$path), end, sync)
  if (inherits(res, "safetensors_rust_error")) {
    return(NULL)
  }
  list(at = file$at)
}
