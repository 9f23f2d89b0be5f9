# R torch ports of Hugging Face's GPT-2 and Llama, small and written for the
# tests of safe_load_model(rename =, transform =) against the checkpoints
# transformers saved in fixtures/hf/ (see make-hf-models.py there): each is
# built from the fixture's config.json, in float64, and follows
# transformers' eager forward pass step by step, float32 steps included,
# so that its logits equal Python's to 1e-6.
#
# Their names are an R port's, not transformers': GPT-2's are the same
# (its Conv1D weights are stored transposed, so `transform` is needed),
# Llama's are those of minhub's port (`rename` is needed).

hf_fixture <- function(model, file = NULL) {
  path <- test_path("fixtures", "hf", model)
  if (is.null(file)) path else file.path(path, file)
}

hf_config <- function(model) {
  jsonlite::fromJSON(hf_fixture(model, "config.json"))
}

# The modules, defined when first asked for: the helpers are sourced
# where torch is not installed too.
hf_ports <- function() {
  if (is.null(hf_port_cache$ports)) {
    hf_port_cache$ports <- make_hf_ports()
  }
  hf_port_cache$ports
}
hf_port_cache <- new.env()

make_hf_ports <- function() {
  # A causal mask: TRUE above the diagonal, the positions a token can't see.
  causal_mask <- function(n) {
    torch::torch_ones(n, n, dtype = torch::torch_bool())$triu(diagonal = 1)
  }

  gpt2_attention <- torch::nn_module(
    initialize = function(n_embd, n_head) {
      self$n_head <- n_head
      self$c_attn <- torch::nn_linear(n_embd, 3 * n_embd)
      self$c_proj <- torch::nn_linear(n_embd, n_embd)
    },
    forward = function(x) {
      b <- x$size(1)
      t <- x$size(2)
      e <- x$size(3)
      d <- e / self$n_head
      heads <- function(y) y$view(c(b, t, self$n_head, d))$transpose(2, 3)
      qkv <- self$c_attn(x)$split(e, dim = 3)
      q <- heads(qkv[[1]])
      k <- heads(qkv[[2]])
      v <- heads(qkv[[3]])
      w <- torch::torch_matmul(q, k$transpose(-2, -1)) * d^-0.5
      w <- torch::nnf_softmax(w$masked_fill(causal_mask(t), -Inf), dim = -1)
      y <- torch::torch_matmul(w, v)$transpose(2, 3)$contiguous()$view(c(b, t, e))
      self$c_proj(y)
    }
  )

  gpt2_block <- torch::nn_module(
    initialize = function(n_embd, n_head, eps) {
      self$ln_1 <- torch::nn_layer_norm(n_embd, eps = eps)
      self$attn <- gpt2_attention(n_embd, n_head)
      self$ln_2 <- torch::nn_layer_norm(n_embd, eps = eps)
      self$mlp <- torch::nn_module_dict(list(
        c_fc = torch::nn_linear(n_embd, 4 * n_embd),
        c_proj = torch::nn_linear(4 * n_embd, n_embd)
      ))
    },
    forward = function(x) {
      x <- x + self$attn(self$ln_1(x))
      h <- torch::nnf_gelu(self$mlp$c_fc(self$ln_2(x)), approximate = "tanh")
      x + self$mlp$c_proj(h)
    }
  )

  gpt2_model <- torch::nn_module(
    initialize = function(config) {
      eps <- config$layer_norm_epsilon
      self$transformer <- torch::nn_module_dict(list(
        wte = torch::nn_embedding(config$vocab_size, config$n_embd),
        wpe = torch::nn_embedding(config$n_positions, config$n_embd),
        h = do.call(torch::nn_sequential, lapply(seq_len(config$n_layer), function(i) {
          gpt2_block(config$n_embd, config$n_head, eps)
        })),
        ln_f = torch::nn_layer_norm(config$n_embd, eps = eps)
      ))
      self$lm_head <- torch::nn_linear(config$n_embd, config$vocab_size, bias = FALSE)
    },
    # `ids`: token ids from 0, as Python's.
    forward = function(ids) {
      t <- ids$size(2)
      pos <- torch::torch_arange(1, t, dtype = torch::torch_long())
      x <- self$transformer$wte(ids + 1L) + self$transformer$wpe(pos)$unsqueeze(1)
      x <- self$transformer$ln_f(self$transformer$h(x))
      self$lm_head(x)
    }
  )

  # transformers' RMSNorm: in float32 whatever the input's dtype.
  llama_rms_norm <- torch::nn_module(
    initialize = function(n, eps) {
      self$eps <- eps
      self$weight <- torch::nn_parameter(torch::torch_ones(n))
    },
    forward = function(x) {
      h <- x$to(dtype = torch::torch_float32())
      h <- h * torch::torch_rsqrt(h$pow(2)$mean(-1, keepdim = TRUE) + self$eps)
      self$weight * h$to(dtype = x$dtype)
    }
  )

  llama_rotate_half <- function(x) {
    n <- x$size(-1) / 2
    torch::torch_cat(list(-x[.., (n + 1):(2 * n)], x[.., 1:n]), dim = -1)
  }

  llama_attention <- torch::nn_module(
    initialize = function(config) {
      self$n_head <- config$num_attention_heads
      self$n_kv <- config$num_key_value_heads
      self$d <- config$head_dim %||% (config$hidden_size / self$n_head)
      self$theta <- config$rope_parameters$rope_theta %||% config$rope_theta
      e <- config$hidden_size
      self$q_proj <- torch::nn_linear(e, self$n_head * self$d, bias = FALSE)
      self$k_proj <- torch::nn_linear(e, self$n_kv * self$d, bias = FALSE)
      self$v_proj <- torch::nn_linear(e, self$n_kv * self$d, bias = FALSE)
      self$o_proj <- torch::nn_linear(self$n_head * self$d, e, bias = FALSE)
    },
    forward = function(x) {
      b <- x$size(1)
      t <- x$size(2)
      d <- self$d
      q <- self$q_proj(x)$view(c(b, t, self$n_head, d))$transpose(2, 3)
      k <- self$k_proj(x)$view(c(b, t, self$n_kv, d))$transpose(2, 3)
      v <- self$v_proj(x)$view(c(b, t, self$n_kv, d))$transpose(2, 3)
      # Rotary embeddings, in float32 as transformers computes them.
      f32 <- torch::torch_float32()
      inv_freq <- 1 / (self$theta^(torch::torch_tensor(seq(0, d - 1, by = 2), dtype = f32) / d))
      pos <- torch::torch_tensor(seq_len(t) - 1, dtype = f32)
      freqs <- pos$unsqueeze(2) * inv_freq
      emb <- torch::torch_cat(list(freqs, freqs), dim = -1)
      cos <- emb$cos()$to(dtype = x$dtype)
      sin <- emb$sin()$to(dtype = x$dtype)
      q <- q * cos + llama_rotate_half(q) * sin
      k <- k * cos + llama_rotate_half(k) * sin
      # Each key and value head serves n_head / n_kv query heads.
      rep <- self$n_head / self$n_kv
      k <- k$unsqueeze(3)$expand(c(b, self$n_kv, rep, t, d))$reshape(c(b, self$n_head, t, d))
      v <- v$unsqueeze(3)$expand(c(b, self$n_kv, rep, t, d))$reshape(c(b, self$n_head, t, d))
      w <- torch::torch_matmul(q, k$transpose(3, 4)) * d^-0.5
      w <- w$masked_fill(causal_mask(t), -Inf)
      w <- torch::nnf_softmax(w, dim = -1, dtype = f32)$to(dtype = q$dtype)
      y <- torch::torch_matmul(w, v)$transpose(2, 3)$contiguous()$view(c(b, t, self$n_head * d))
      self$o_proj(y)
    }
  )

  llama_block <- torch::nn_module(
    initialize = function(config) {
      e <- config$hidden_size
      m <- config$intermediate_size
      self$ln_1 <- llama_rms_norm(e, config$rms_norm_eps)
      self$attn <- llama_attention(config)
      self$ln_2 <- llama_rms_norm(e, config$rms_norm_eps)
      self$mlp <- torch::nn_module_dict(list(
        gate_proj = torch::nn_linear(e, m, bias = FALSE),
        up_proj = torch::nn_linear(e, m, bias = FALSE),
        down_proj = torch::nn_linear(m, e, bias = FALSE)
      ))
    },
    forward = function(x) {
      x <- x + self$attn(self$ln_1(x))
      h <- self$ln_2(x)
      x + self$mlp$down_proj(torch::nnf_silu(self$mlp$gate_proj(h)) * self$mlp$up_proj(h))
    }
  )

  llama_model <- torch::nn_module(
    initialize = function(config) {
      self$transformer <- torch::nn_module_dict(list(
        wte = torch::nn_embedding(config$vocab_size, config$hidden_size),
        h = do.call(torch::nn_sequential, lapply(seq_len(config$num_hidden_layers), function(i) llama_block(config))),
        ln_f = llama_rms_norm(config$hidden_size, config$rms_norm_eps)
      ))
      self$lm_head <- torch::nn_linear(config$hidden_size, config$vocab_size, bias = FALSE)
    },
    forward = function(ids) {
      x <- self$transformer$wte(ids + 1L)
      self$lm_head(self$transformer$ln_f(self$transformer$h(x)))
    }
  )

  list(gpt2 = gpt2_model, llama = llama_model)
}

# A GPT-2 of `config` in float64, its output projection tied to its input
# embedding (as transformers ties them: the checkpoint has only the latter).
gpt2 <- function(config = hf_config("gpt2")) {
  m <- hf_ports()$gpt2(config)
  m$to(dtype = torch::torch_float64())
  m$lm_head$weight <- m$transformer$wte$weight
  m$eval()
  m
}

llama <- function(config = hf_config("llama")) {
  m <- hf_ports()$llama(config)
  m$to(dtype = torch::torch_float64())
  m$eval()
  m
}

# The renaming from transformers' Llama names to the port's.
llama_rename <- c(
  "^model\\.embed_tokens\\." = "transformer.wte.",
  "^model\\.layers\\." = "transformer.h.",
  "\\.self_attn\\." = ".attn.",
  "\\.input_layernorm\\." = ".ln_1.",
  "\\.post_attention_layernorm\\." = ".ln_2.",
  "^model\\.norm\\." = "transformer.ln_f."
)

# GPT-2's Conv1D weights are stored (in, out); nn_linear's are (out, in).
gpt2_transform <- list("c_(attn|proj|fc)\\.weight$" = function(x) x$t())

# The logits of `model` for the fixture's input, and Python's.
hf_logits <- function(model, name) {
  expected <- safetensors::safe_load_file(hf_fixture(name, "expected.safetensors"), framework = "torch")
  torch::with_no_grad({
    got <- model(expected$input_ids)
  })
  list(got = got, expected = expected$logits)
}
