"""Number <-> token sequences: the contract between a real target and the digits the decoder emits.

Every tokenizer is a frozen dataclass (hashable, so it can be closed over by jitted code) with
  * ``encode(values)``: NumPy, values -> (tokens_NL int32, number of values clipped/clamped);
  * ``decode(tokens_...L)``: jnp, batched and jit-able, tokens -> float32 values;
  * ``allowed``: the constant boolean table ``allowed[L, V]`` used to mask logits at every step;
  * ``spec()`` / ``tokenizer_from_spec``: a JSON dict that travels with the checkpoint.

The vocabulary always ends with a BOS token that is fed to the decoder but never emitted.
Tokenizers registered by name in ``TOKENIZERS``; ``make_tokenizer`` builds one from a config.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from genre_jax.errors import GenreError

# The logit of a disallowed token: large and finite, because -inf turns 0 * -inf into NaN inside
# softmax gradients.
NEG_INF = -1e9


@dataclasses.dataclass(frozen=True)
class NormalizedTokenizer:
    """Maps [low, high] onto D base-B digits: k = min(round(f * B^D), B^D - 1), f = (v - low) / (high - low).

    Values outside [low, high] are clipped to the range and counted. Every digit sequence is valid,
    and the lexicographic order of sequences equals the order of the decoded values.
    """

    base: int = 2
    digits: int = 8
    low: float = 0.0
    high: float = 1.0
    name: str = dataclasses.field(default="normalized", init=False)

    def __post_init__(self):
        if self.base < 2 or self.digits < 1:
            raise GenreError(f"tokenizer: normalized needs base >= 2 and digits >= 1, got base={self.base}, digits={self.digits}")
        if self.base ** self.digits >= 2 ** 53:
            raise GenreError(f"tokenizer: base**digits = {self.base}**{self.digits} exceeds float64 integer precision")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise GenreError(f"tokenizer: normalized needs finite low < high, got low={self.low}, high={self.high}")

    @classmethod
    def fit(cls, values_train: np.ndarray, base: int = 2, digits: int = 8) -> "NormalizedTokenizer":
        """Takes the range from the train targets (z units), as the data protocol prescribes."""
        v = np.asarray(values_train, np.float64)
        low, high = float(v.min()), float(v.max())
        if not high > low:
            raise GenreError(f"tokenizer: train targets are constant ({low}); a range is needed to tokenize")
        return cls(base=base, digits=digits, low=low, high=high)

    @property
    def length(self) -> int:
        return self.digits

    @property
    def vocab_size(self) -> int:
        return self.base + 1

    @property
    def bos_id(self) -> int:
        return self.base

    @property
    def resolution(self) -> float:
        """Largest gap between neighbouring decodable values, in value units."""
        return (self.high - self.low) / self.base ** self.digits

    @property
    def allowed(self) -> np.ndarray:
        allowed_LV = np.zeros((self.length, self.vocab_size), bool)
        allowed_LV[:, : self.base] = True
        return allowed_LV

    @property
    def token_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest allowed token id at each position."""
        return _token_range(self.allowed)

    @property
    def lexicographic(self) -> bool:
        """Value order is the lexicographic order of token sequences (so comparisons need no decode)."""
        return True

    @property
    def digit_positions(self) -> np.ndarray:
        """[L] bool: positions whose allowed tokens are digits (all of them here)."""
        return np.ones(self.length, bool)

    @property
    def digit_values(self) -> np.ndarray:
        """[V] float32: the digit value of each token id; 0 for BOS, which is never a target."""
        return _digit_values(self.base, self.vocab_size)

    @property
    def corner_completions(self) -> np.ndarray:
        """[K, L] token sequences whose suffixes bound every completion's value: value order is token
        order here, so all-lowest and all-highest digits."""
        return np.stack(self.token_range).astype(np.int32)

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        v = np.asarray(values, np.float64).ravel()
        if not np.all(np.isfinite(v)):
            raise GenreError(f"tokenizer: {int((~np.isfinite(v)).sum())} non-finite values to encode")
        frac = (v - self.low) / (self.high - self.low)
        num_clipped = int(np.sum((frac < 0) | (frac > 1)))
        scale = self.base ** self.digits
        k = np.minimum(np.rint(np.clip(frac, 0.0, 1.0) * scale), scale - 1).astype(np.int64)
        powers = self.base ** np.arange(self.digits - 1, -1, -1, dtype=np.int64)
        tokens_NL = (k[:, None] // powers[None, :]) % self.base
        return tokens_NL.astype(np.int32), num_clipped

    def decode(self, tokens: jnp.ndarray) -> jnp.ndarray:
        weights_L = jnp.asarray(float(self.base) ** -np.arange(1, self.digits + 1), jnp.float32)
        digits = jnp.clip(tokens, 0, self.base - 1).astype(jnp.float32)
        frac = jnp.sum(digits * weights_L, axis=-1)
        return (self.low + frac * (self.high - self.low)).astype(jnp.float32)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "digits": self.digits, "low": self.low, "high": self.high}


@dataclasses.dataclass(frozen=True)
class IEEETokenizer:
    """Scientific notation: [sign, exponent sign, E exponent digits, M mantissa digits] in base b.

    value = sign * (m_1 . m_2 ... m_M) * b^(+-exponent). Zero is all-zero digits. Exponents beyond
    +-(b^E - 1) are clamped to the extreme representable value and counted, never wrapped.
    Vocabulary: digits 0..b-1, then '+', '-', then BOS.
    """

    base: int = 10
    exponent_digits: int = 1
    mantissa_digits: int = 4
    name: str = dataclasses.field(default="ieee", init=False)

    def __post_init__(self):
        if self.base < 2 or self.exponent_digits < 1 or self.mantissa_digits < 1:
            raise GenreError(
                f"tokenizer: ieee needs base >= 2, exponent_digits >= 1, mantissa_digits >= 1, got "
                f"{self.base}, {self.exponent_digits}, {self.mantissa_digits}")

    @classmethod
    def fit(cls, values_train: np.ndarray, base: int = 10, exponent_digits: int = 1,
            mantissa_digits: int = 4) -> "IEEETokenizer":
        del values_train  # scale-free: nothing to fit
        return cls(base=base, exponent_digits=exponent_digits, mantissa_digits=mantissa_digits)

    @property
    def plus_id(self) -> int:
        return self.base

    @property
    def minus_id(self) -> int:
        return self.base + 1

    @property
    def bos_id(self) -> int:
        return self.base + 2

    @property
    def vocab_size(self) -> int:
        return self.base + 3

    @property
    def length(self) -> int:
        return 2 + self.exponent_digits + self.mantissa_digits

    @property
    def max_exponent(self) -> int:
        return self.base ** self.exponent_digits - 1

    @property
    def allowed(self) -> np.ndarray:
        allowed_LV = np.zeros((self.length, self.vocab_size), bool)
        allowed_LV[:2, [self.plus_id, self.minus_id]] = True
        allowed_LV[2:, : self.base] = True
        return allowed_LV

    @property
    def token_range(self) -> tuple[np.ndarray, np.ndarray]:
        return _token_range(self.allowed)

    @property
    def lexicographic(self) -> bool:
        """No: signs flip the order, and zero and clamped values carry leading-zero mantissas."""
        return False

    @property
    def digit_positions(self) -> np.ndarray:
        """[L] bool: every position after the two sign positions holds a digit."""
        return np.arange(self.length) >= 2

    @property
    def digit_values(self) -> np.ndarray:
        """[V] float32: the digit value of each token id; 0 for '+', '-' and BOS."""
        return _digit_values(self.base, self.vocab_size)

    @property
    def corner_completions(self) -> np.ndarray:
        """[K, L] token sequences whose suffixes bound every completion's value.

        Given both signs the value is monotone in the exponent and in the mantissa, each monotone
        in every digit, so its extremes over any free suffix lie where the signs take either value
        and the exponent and mantissa digits are all 0 or all b - 1: 16 corners.
        """
        b, E, M = self.base, self.exponent_digits, self.mantissa_digits
        corners = [[sign, exp_sign, *[e] * E, *[m] * M] for sign in (self.plus_id, self.minus_id)
                   for exp_sign in (self.plus_id, self.minus_id) for e in (0, b - 1) for m in (0, b - 1)]
        return np.asarray(corners, np.int32)

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        v = np.asarray(values, np.float64).ravel()
        if not np.all(np.isfinite(v)):
            raise GenreError(f"tokenizer: {int((~np.isfinite(v)).sum())} non-finite values to encode")
        b, M, emax = self.base, self.mantissa_digits, self.max_exponent
        mag = np.abs(v)
        nonzero = mag > 0
        exp = np.zeros(v.shape, np.int64)
        exp[nonzero] = np.floor(np.log(mag[nonzero]) / np.log(b)).astype(np.int64)
        # log rounding can be off by one near powers of b; fix it against the exact comparison
        exp[nonzero] += (mag[nonzero] >= float(b) ** (exp[nonzero] + 1)).astype(np.int64)
        exp[nonzero] -= (mag[nonzero] < float(b) ** exp[nonzero]).astype(np.int64)
        clamped = nonzero & ((exp > emax) | (exp < -emax))
        exp_c = np.clip(exp, -emax, emax)
        # the bound keeps clamped huge values inside int64 before the cast
        mant = np.rint(np.minimum(mag / float(b) ** exp_c * b ** (M - 1), b ** M)).astype(np.int64)
        carry = (mant >= b ** M) & (exp_c < emax)  # 9.9996 -> 10.000: move one into the exponent
        exp_c = np.where(carry, exp_c + 1, exp_c)
        mant = np.where(carry, b ** (M - 1), mant)
        clamped |= mant >= b ** M
        mant = np.minimum(mant, b ** M - 1)
        tokens_NL = np.zeros((v.size, self.length), np.int32)
        tokens_NL[:, 0] = np.where(v < 0, self.minus_id, self.plus_id)
        tokens_NL[:, 1] = np.where(exp_c < 0, self.minus_id, self.plus_id)
        e_abs = np.abs(exp_c)
        E = self.exponent_digits
        tokens_NL[:, 2: 2 + E] = (e_abs[:, None] // b ** np.arange(E - 1, -1, -1)[None, :]) % b
        tokens_NL[:, 2 + E:] = (mant[:, None] // b ** np.arange(M - 1, -1, -1)[None, :]) % b
        return tokens_NL, int(clamped.sum())

    def decode(self, tokens: jnp.ndarray) -> jnp.ndarray:
        b, E, M = self.base, self.exponent_digits, self.mantissa_digits
        sign = jnp.where(tokens[..., 0] == self.minus_id, -1.0, 1.0)
        exp_sign = jnp.where(tokens[..., 1] == self.minus_id, -1.0, 1.0)
        digits = jnp.where(tokens[..., 2:] < b, tokens[..., 2:], 0).astype(jnp.float32)
        exp_w = jnp.asarray(float(b) ** np.arange(E - 1, -1, -1), jnp.float32)
        mant_w = jnp.asarray(float(b) ** -np.arange(M), jnp.float32)
        # Wide exponent fields (e.g. base 10, E=2) exceed float32: saturate instead of returning inf/NaN.
        limit = math.floor(math.log(np.finfo(np.float32).max) / math.log(b)) - 1
        exponent = jnp.clip(exp_sign * jnp.sum(digits[..., :E] * exp_w, axis=-1), -limit, limit)
        mantissa = jnp.sum(digits[..., E:] * mant_w, axis=-1)
        return (sign * mantissa * jnp.power(jnp.float32(b), exponent)).astype(jnp.float32)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "exponent_digits": self.exponent_digits,
                "mantissa_digits": self.mantissa_digits}


def _token_range(allowed_LV: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(allowed_LV.shape[1])
    lowest = np.where(allowed_LV, ids, allowed_LV.shape[1]).min(axis=1)
    highest = np.where(allowed_LV, ids, -1).max(axis=1)
    return lowest.astype(np.int32), highest.astype(np.int32)


def _digit_values(base: int, vocab_size: int) -> np.ndarray:
    # both tokenizers put digits first, so a digit's id is its value
    values_V = np.zeros(vocab_size, np.float32)
    values_V[:base] = np.arange(base, dtype=np.float32)
    return values_V


TOKENIZERS = {"normalized": NormalizedTokenizer, "ieee": IEEETokenizer}
_FIT_FIELDS = {"normalized": ("base", "digits"), "ieee": ("base", "exponent_digits", "mantissa_digits")}


def make_tokenizer(config, values_train: np.ndarray):
    """Builds the configured tokenizer, fitting whatever range it needs on the train targets."""
    name = config.name
    if name not in TOKENIZERS:
        raise GenreError(f"config.tokenizer.name: unknown tokenizer {name!r}; expected one of {sorted(TOKENIZERS)}")
    kwargs = {k: int(config[k]) for k in _FIT_FIELDS[name] if k in config}
    return TOKENIZERS[name].fit(values_train, **kwargs)


def tokenizer_from_spec(spec: dict[str, Any]):
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in TOKENIZERS:
        raise GenreError(f"tokenizer spec: unknown tokenizer {name!r}; expected one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[name](**spec)
