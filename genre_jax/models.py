"""Flax modules: feature encoders and the number decoder. Parameters and forward passes only.

The decoder exposes four entry points used by the pure functions in ``sampling.py``:
  * ``__call__(memory, tokens_in)``: teacher-forced logits for a whole sequence (training, log-probs);
  * ``init_cache(memory, length)``: cross-attention keys/values computed once per input plus an
    empty self-attention cache, returned as a plain pytree;
  * ``step(token, pos, cache)``: one decoding step that reads and writes that cache;
  * ``chunk(tokens, pos, cache)``: Q consecutive positions after a cache (the RL re-forward of rollout
    suffixes after their shared prefixes, ``sampling.shared_prefix_logits``).
Models are registered by name in ``MODELS``.

Shape letters, used in array names across the library (``logits_BGLV``, ``memory_BMD``), one meaning each:
  B  batch (inputs in one step)            N  rows of a whole split
  F  input features (byte positions for code inputs)
  G  sequences decoded per input: RL rollouts, evaluation samples
  L  number-token positions                I  a second position axis beside L (the position being decided)
  V  vocabulary (number tokens + BOS)      A  tokens allowed at one position
  S  every sequence the tokenizer allows (the exact distribution's support)
  U  distinct values among them            R  prefixes at one level of the prefix tree (exact.py)
  D  model width (d_model)                 H  attention heads
  K  width of one attention head           M  memory slots the decoder attends to
  T  key positions (encoder tokens, KV cache)   Q  query positions
  C  regression-head outputs (histogram bins + 2 tails)   E  bin edges
  J  temperatures of the calibration grid  P  quantile levels
  X  corners of a candidate token's value interval (the expert token's search)
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genre_jax.errors import GenreError

Cache = dict[str, Any]
BYTE_VOCAB = 257  # code inputs: 0 = padding, 1..256 = byte value + 1


def sinusoidal_table(length: int, width: int) -> np.ndarray:
    pos = np.arange(length)[:, None]
    freq = np.exp(-np.log(10000.0) * np.arange(0, width, 2) / width)
    table = np.zeros((length, width), np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)[:, : width // 2]
    return table


def _attend(q_BQHK, k_BTHK, v_BTHK, mask_BQT=None):
    # Scores and softmax in float32 whatever the compute dtype (bfloat16 would round the weights).
    scores_BHQT = jnp.einsum("bqhk,bthk->bhqt", q_BQHK, k_BTHK, preferred_element_type=jnp.float32)
    scores_BHQT = scores_BHQT / np.sqrt(q_BQHK.shape[-1])
    if mask_BQT is not None:
        scores_BHQT = jnp.where(mask_BQT[:, None], scores_BHQT, jnp.finfo(scores_BHQT.dtype).min)
    weights_BHQT = jax.nn.softmax(scores_BHQT, axis=-1).astype(v_BTHK.dtype)
    return jnp.einsum("bhqt,bthk->bqhk", weights_BHQT, v_BTHK)


def compute_dtype(name: str):
    """``config.model.dtype``: float32, or bfloat16 compute with float32 parameters and optimizer state."""
    if name not in ("float32", "bfloat16"):
        raise GenreError(f"config.model.dtype: expected 'float32' or 'bfloat16', got {name!r}")
    return jnp.dtype(name)


class MLPEncoder(nn.Module):
    """Linear -> ReLU -> Dropout, ``num_layers`` times, then a projection to one memory vector."""

    hidden: int
    num_layers: int
    d_model: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BF, train: bool):
        h = x_BF.astype(self.dtype)
        for _ in range(self.num_layers):
            h = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h)))
        return nn.Dense(self.d_model, dtype=self.dtype)(h)[:, None, :]  # memory_BMD with M = 1


class EncoderBlock(nn.Module):
    """Pre-norm bidirectional self-attention over the non-padding input tokens, then feed-forward."""

    d_model: int
    num_heads: int
    d_ff: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BTD, mask_BT, train: bool):
        head_dim = self.d_model // self.num_heads
        dt = self.dtype
        qkv = nn.DenseGeneral((3, self.num_heads, head_dim), dtype=dt)(nn.LayerNorm(dtype=dt)(h_BTD))
        mask_BTT = jnp.broadcast_to(mask_BT[:, None, :], (h_BTD.shape[0], h_BTD.shape[1], h_BTD.shape[1]))
        att = _attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask_BTT)
        h_BTD = h_BTD + nn.Dropout(self.dropout, deterministic=not train)(
            nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=dt)(att))
        ff = nn.Dense(self.d_model, dtype=dt)(nn.relu(nn.Dense(self.d_ff, dtype=dt)(nn.LayerNorm(dtype=dt)(h_BTD))))
        return h_BTD + nn.Dropout(self.dropout, deterministic=not train)(ff)


class ByteEncoder(nn.Module):
    """Transformer over UTF-8 byte tokens (0 = padding) in patches of ``patch_size`` bytes,
    attention-pooled into ``memory_slots`` vectors.

    Pooling: ``memory_slots`` learned queries attend to the encoded bytes, so the number decoder
    cross-attends to a few summary vectors, whatever the program's length. Inputs may arrive as
    floats (``init_params`` passes zeros); they are byte ids.
    """

    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    dropout: float
    memory_slots: int = 4
    patch_size: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BT, train: bool):
        dt = self.dtype
        if self.d_model % self.num_heads:
            raise GenreError(f"config.model: d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        tokens_BT = x_BT.astype(jnp.int32)
        batch, length, p = tokens_BT.shape[0], tokens_BT.shape[1], self.patch_size
        if length % p:
            raise GenreError(f"config.code.max_bytes={length} is not a multiple of config.model.patch_size={p}")
        # Patches of p bytes (their embeddings concatenated, then projected) make attention p^2 cheaper;
        # a patch is padding only if all its bytes are.
        h = nn.Embed(BYTE_VOCAB, self.d_model, dtype=dt)(tokens_BT).reshape(batch, length // p, p * self.d_model)
        if p > 1:
            h = nn.Dense(self.d_model, dtype=dt)(h)
        mask_BT = (tokens_BT > 0).reshape(batch, length // p, p).any(-1)
        h = h + sinusoidal_table(length // p, self.d_model).astype(dt)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        for _ in range(self.num_layers):
            h = EncoderBlock(self.d_model, self.num_heads, self.d_ff, self.dropout, dt)(h, mask_BT, train)
        h = nn.LayerNorm(dtype=dt)(h)
        head_dim = self.d_model // self.num_heads
        kv = nn.DenseGeneral((2, self.num_heads, head_dim), dtype=dt)(h)
        queries = self.param("pool_queries", nn.initializers.normal(1.0), (self.memory_slots, self.num_heads, head_dim))
        q_BMHK = jnp.broadcast_to(queries.astype(dt), (h.shape[0], *queries.shape))
        mask_BMT = jnp.broadcast_to(mask_BT[:, None, :], (h.shape[0], self.memory_slots, h.shape[1]))
        pooled = _attend(q_BMHK, kv[:, :, 0], kv[:, :, 1], mask_BMT)
        return nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=dt)(pooled)  # memory_BMD with M = memory_slots


class DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to the memory, feed-forward."""

    d_model: int
    num_heads: int
    d_ff: int
    dropout: float
    dtype: Any = jnp.float32

    def setup(self):
        head_dim, dt = self.d_model // self.num_heads, self.dtype
        self.ln_self, self.ln_cross, self.ln_ff = nn.LayerNorm(dtype=dt), nn.LayerNorm(dtype=dt), nn.LayerNorm(dtype=dt)
        self.qkv = nn.DenseGeneral((3, self.num_heads, head_dim), dtype=dt)
        self.self_out = nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=dt)
        self.cross_q = nn.DenseGeneral((self.num_heads, head_dim), dtype=dt)
        self.cross_kv = nn.DenseGeneral((2, self.num_heads, head_dim), dtype=dt)
        self.cross_out = nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=dt)
        self.ff_in, self.ff_out = nn.Dense(self.d_ff, dtype=dt), nn.Dense(self.d_model, dtype=dt)
        self.drop = nn.Dropout(self.dropout)

    def memory_kv(self, memory_BMD):
        kv = self.cross_kv(memory_BMD)  # [B, M, 2, H, K]
        return kv[:, :, 0], kv[:, :, 1]

    def _cross(self, h_BQD, mem_k_BMHK, mem_v_BMHK):
        """Cross-attention's output. Over one memory slot (the tabular encoder) the softmax is over a
        single key, so the output is cross_out(v) whatever the query: computed once per input (and
        shared by every position and rollout) instead of per query. The query layers still get
        created at init, so both paths share one parameter tree; their gradient is zero either way."""
        if mem_k_BMHK.shape[1] == 1 and not self.is_initializing():
            return jnp.broadcast_to(self.cross_out(mem_v_BMHK[:, 0])[:, None], h_BQD.shape)
        q = self.cross_q(self.ln_cross(h_BQD))
        return self.cross_out(_attend(q, mem_k_BMHK, mem_v_BMHK))

    def _cross_and_ff(self, h_BQD, mem_k, mem_v, train):
        h_BQD = h_BQD + self.drop(self._cross(h_BQD, mem_k, mem_v), deterministic=not train)
        ff = self.ff_out(nn.relu(self.ff_in(self.ln_ff(h_BQD))))
        return h_BQD + self.drop(ff, deterministic=not train)

    def __call__(self, h_BLD, mem_k, mem_v, train: bool):
        qkv = self.qkv(self.ln_self(h_BLD))
        length = h_BLD.shape[1]
        causal_BLL = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), bool)), (h_BLD.shape[0], length, length))
        att = _attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal_BLL)
        h_BLD = h_BLD + self.drop(self.self_out(att), deterministic=not train)
        return self._cross_and_ff(h_BLD, mem_k, mem_v, train)

    def step(self, h_BD, pos, layer_cache):
        """One position: writes this step's key/value at ``pos`` and attends to positions <= pos."""
        h_B1D, layer_cache = self.chunk(h_BD[:, None], pos, layer_cache)
        return h_B1D[:, 0], layer_cache

    def chunk(self, h_BQD, pos, layer_cache):
        """Q consecutive positions from ``pos`` on, after a cache that holds the positions before it:
        writes their keys/values at pos..pos+Q-1, and position pos+q attends to positions <= pos+q."""
        qkv = self.qkv(self.ln_self(h_BQD))  # [B, Q, 3, H, K]
        k_cache = jax.lax.dynamic_update_slice_in_dim(layer_cache["k"], qkv[:, :, 1], pos, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(layer_cache["v"], qkv[:, :, 2], pos, axis=1)
        batch, num_q, num_t = h_BQD.shape[0], h_BQD.shape[1], k_cache.shape[1]
        visible_QT = jnp.arange(num_t)[None, :] <= pos + jnp.arange(num_q)[:, None]
        visible_BQT = jnp.broadcast_to(visible_QT, (batch, num_q, num_t))
        h_BQD = h_BQD + self.self_out(_attend(qkv[:, :, 0], k_cache, v_cache, visible_BQT))
        h_BQD = self._cross_and_ff(h_BQD, layer_cache["mem_k"], layer_cache["mem_v"], train=False)
        return h_BQD, {**layer_cache, "k": k_cache, "v": v_cache}


class NumberDecoder(nn.Module):
    """Causal Transformer over number tokens, cross-attending to an encoder memory."""

    vocab_size: int
    max_length: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    dropout: float
    pos_embedding: str = "learned"
    final_norm: bool = True  # False: no LayerNorm before the head, as the release's nn.TransformerDecoder
    dtype: Any = jnp.float32

    def setup(self):
        dt = self.dtype
        if self.d_model % self.num_heads:
            raise GenreError(f"config.model: d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        self.embed = nn.Embed(self.vocab_size, self.d_model, dtype=dt)
        if self.pos_embedding == "learned":
            self.pos_table = self.param("pos_table", nn.initializers.normal(0.02), (self.max_length, self.d_model))
        elif self.pos_embedding == "sinusoidal":
            self.pos_table = jnp.asarray(sinusoidal_table(self.max_length, self.d_model))
        else:
            raise GenreError(f"config.model.pos_embedding: expected 'learned' or 'sinusoidal', got {self.pos_embedding!r}")
        self.blocks = [DecoderBlock(self.d_model, self.num_heads, self.d_ff, self.dropout, dt)
                       for _ in range(self.num_layers)]
        if self.final_norm:
            self.ln_final = nn.LayerNorm(dtype=dt)
        self.head = nn.Dense(self.vocab_size, dtype=dt)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, memory_BMD, tokens_in_BL, train: bool = False):
        length = tokens_in_BL.shape[1]
        h = self.drop(self.embed(tokens_in_BL) + self.pos_table[:length].astype(self.dtype), deterministic=not train)
        for block in self.blocks:
            h = block(h, *block.memory_kv(memory_BMD), train=train)
        return self.head(self._final(h)).astype(jnp.float32)  # logits_BLV, float32 for every softmax

    def init_cache(self, memory_BMD, length: int) -> Cache:
        batch = memory_BMD.shape[0]
        head_dim = self.d_model // self.num_heads
        empty = jnp.zeros((batch, length, self.num_heads, head_dim), memory_BMD.dtype)
        layers = []
        for block in self.blocks:
            mem_k, mem_v = block.memory_kv(memory_BMD)
            layers.append({"mem_k": mem_k, "mem_v": mem_v, "k": empty, "v": empty})
        return {"layers": layers}

    def step(self, token_B, pos, cache: Cache):
        h = self.embed(token_B) + self.pos_table[pos].astype(self.dtype)
        layers = []
        for block, layer_cache in zip(self.blocks, cache["layers"]):
            h, layer_cache = block.step(h, pos, layer_cache)
            layers.append(layer_cache)
        return self.head(self._final(h)).astype(jnp.float32), {"layers": layers}  # logits_BV

    def chunk(self, tokens_BQ, pos: int, cache: Cache):
        """Q consecutive positions from a static ``pos`` on (their input tokens), after ``cache``
        (``step`` for Q positions at once): (logits_BQV, the cache with them written)."""
        num_q = tokens_BQ.shape[1]
        h = self.embed(tokens_BQ) + self.pos_table[pos:pos + num_q].astype(self.dtype)
        layers = []
        for block, layer_cache in zip(self.blocks, cache["layers"]):
            h, layer_cache = block.chunk(h, pos, layer_cache)
            layers.append(layer_cache)
        return self.head(self._final(h)).astype(jnp.float32), {"layers": layers}

    def _final(self, h):
        return self.ln_final(h) if self.final_norm else h


class _EncoderDecoder(nn.Module):
    """The number decoder's fields and the entry points shared by every encoder + decoder model.

    Subclasses add their encoder's fields and set ``self.encoder`` and ``self.decoder`` in setup.
    """

    vocab_size: int
    max_length: int
    d_model: int = 256
    num_layers: int = 3
    num_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    pos_embedding: str = "learned"
    final_norm: bool = True
    dtype: str = "float32"  # compute dtype; parameters stay float32

    def _number_decoder(self) -> NumberDecoder:
        return NumberDecoder(self.vocab_size, self.max_length, self.d_model, self.num_layers, self.num_heads,
                             self.d_ff, self.dropout, self.pos_embedding, self.final_norm, compute_dtype(self.dtype))

    def __call__(self, x, tokens_in_BL, train: bool = False):
        return self.decoder(self.encoder(x, train), tokens_in_BL, train)

    def encode(self, x, train: bool = False):
        return self.encoder(x, train)

    def decode(self, memory_BMD, tokens_in_BL, train: bool = False):
        return self.decoder(memory_BMD, tokens_in_BL, train)

    def init_cache(self, memory_BMD, length: int) -> Cache:
        return self.decoder.init_cache(memory_BMD, length)

    def step(self, token_B, pos, cache: Cache):
        return self.decoder.step(token_B, pos, cache)

    def chunk(self, tokens_BQ, pos: int, cache: Cache):
        return self.decoder.chunk(tokens_BQ, pos, cache)


class TabularRegressor(_EncoderDecoder):
    """MLP encoder over preprocessed features + number decoder (the paper's tabular model)."""

    mlp_hidden: int = 256
    mlp_layers: int = 2

    def setup(self):
        self.encoder = make_encoder("tabular_decoder", mlp_hidden=self.mlp_hidden, mlp_layers=self.mlp_layers,
                                    d_model=self.d_model, dropout=self.dropout, dtype=self.dtype)
        self.decoder = self._number_decoder()


class CodeRegressor(_EncoderDecoder):
    """Byte-level Transformer encoder over program text + number decoder (code-metric regression)."""

    enc_layers: int = 2
    memory_slots: int = 4
    patch_size: int = 1

    def setup(self):
        self.encoder = make_encoder("code_decoder", d_model=self.d_model, num_heads=self.num_heads, d_ff=self.d_ff,
                                    dropout=self.dropout, enc_layers=self.enc_layers, memory_slots=self.memory_slots,
                                    patch_size=self.patch_size, dtype=self.dtype)
        self.decoder = self._number_decoder()


def make_encoder(model_name: str, **fields) -> nn.Module:
    """The encoder of a model family, from ``config.model`` fields (shared with the regression heads)."""
    dtype = compute_dtype(fields.get("dtype", "float32"))
    if model_name == "code_decoder":
        return ByteEncoder(int(fields["d_model"]), int(fields.get("enc_layers", 2)), int(fields["num_heads"]),
                           int(fields["d_ff"]), float(fields["dropout"]), int(fields.get("memory_slots", 4)),
                           int(fields.get("patch_size", 1)), dtype)
    return MLPEncoder(int(fields["mlp_hidden"]), int(fields["mlp_layers"]), int(fields["d_model"]),
                      float(fields["dropout"]), dtype)


MODELS = {"tabular_decoder": TabularRegressor, "code_decoder": CodeRegressor}
_MODEL_FIELDS = ("d_model", "num_layers", "num_heads", "d_ff", "dropout", "mlp_hidden", "mlp_layers", "pos_embedding",
                 "final_norm", "dtype", "enc_layers", "memory_slots", "patch_size")


def make_model(config, tokenizer) -> nn.Module:
    """Builds the configured model for a tokenizer's vocabulary and sequence length."""
    if config.name not in MODELS:
        raise GenreError(f"config.model.name: unknown model {config.name!r}; expected one of {sorted(MODELS)}")
    cls = MODELS[config.name]
    kwargs = {k: config[k] for k in _MODEL_FIELDS if k in config and k in cls.__dataclass_fields__}
    return cls(vocab_size=tokenizer.vocab_size, max_length=tokenizer.length, **kwargs)


def init_params(model: nn.Module, num_features: int, length: int, rng: jax.Array):
    return _init_params(model, num_features, length, rng)


# One compiled program: run eagerly, each of the ~100 initializer ops compiles on its own (about 5 s on
# 2 CPU cores against 2 s). Model and sizes are static, so a second run of the same model reuses it.
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_params(model: nn.Module, num_features: int, length: int, rng: jax.Array):
    x = jnp.zeros((1, num_features), jnp.float32)
    tokens = jnp.zeros((1, length), jnp.int32)
    return model.init({"params": rng}, x, tokens)["params"]
