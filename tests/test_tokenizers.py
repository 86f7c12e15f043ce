import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from ml_collections import ConfigDict

from genre_jax.errors import GenreError
from genre_jax.tokenizers import IEEETokenizer, NormalizedTokenizer, make_tokenizer, tokenizer_from_spec

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
NORMALIZED = [NormalizedTokenizer(2, 8, -3.0, 5.0), NormalizedTokenizer(10, 4, -1.0, 1.0),
              NormalizedTokenizer(4, 6, 0.0, 2.5)]
IEEE = [IEEETokenizer(10, 1, 4), IEEETokenizer(10, 2, 6), IEEETokenizer(2, 3, 8)]
MAX_VALUES = 20  # the longest list the property tests draw


def _decode(tok, tokens_NL):
    """tok.decode at one shape ([MAX_VALUES, L], zero rows after the N drawn ones): its eager ops
    compile once per tokenizer instead of once per drawn list length."""
    padded = np.zeros((MAX_VALUES, tokens_NL.shape[1]), tokens_NL.dtype)
    padded[:len(tokens_NL)] = tokens_NL
    return np.asarray(tok.decode(jnp.asarray(padded)), np.float64)[:len(tokens_NL)]


@pytest.mark.parametrize("tok", NORMALIZED)
@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(-3, 5, allow_nan=False), min_size=1, max_size=MAX_VALUES))
def test_normalized_round_trip_within_resolution(tok, values):
    v = np.clip(np.array(values), tok.low, tok.high)
    tokens, clipped = tok.encode(v)
    assert clipped == 0
    decoded = _decode(tok, tokens)
    # top bucket is one step wider because k is capped at B^D - 1
    assert np.all(np.abs(decoded - v) <= tok.resolution * 1.0001 + 1e-6 * (tok.high - tok.low))


@pytest.mark.parametrize("tok", NORMALIZED)
@settings(max_examples=60, deadline=None)
@given(a=st.floats(-3, 5, allow_nan=False), b=st.floats(-3, 5, allow_nan=False))
def test_normalized_token_order_matches_value_order(tok, a, b):
    (ta, tb), _ = tok.encode(np.array([a, b]))
    if a < b:
        assert tuple(ta) <= tuple(tb)  # lexicographic order of digit sequences
    da, db = np.asarray(tok.decode(jnp.asarray(np.stack([ta, tb]))))
    assert (tuple(ta) < tuple(tb)) == (da < db)


def test_normalized_clips_and_counts_out_of_range():
    tok = NormalizedTokenizer(2, 8, 0.0, 1.0)
    tokens, clipped = tok.encode(np.array([-0.5, 0.25, 1.0, 7.0]))
    assert clipped == 2
    np.testing.assert_array_equal(tokens[0], 0)
    np.testing.assert_array_equal(tokens[2], 1)  # 1.0 maps to the largest code, not past it
    np.testing.assert_array_equal(tokens[3], 1)


@pytest.mark.parametrize("tok", IEEE)
@settings(max_examples=80, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=MAX_VALUES))
def test_ieee_round_trip_relative_precision(tok, values):
    v = np.array(values)
    tokens, clamped = tok.encode(v)
    decoded = _decode(tok, tokens)
    mag = np.abs(v)
    in_range = (mag == 0) | ((mag >= float(tok.base) ** -tok.max_exponent) & (mag < float(tok.base) ** tok.max_exponent))
    rel = float(tok.base) ** (1 - tok.mantissa_digits)  # half an ulp of the mantissa, doubled for float32
    assert np.all(np.abs(decoded - v)[in_range] <= rel * mag[in_range] + 1e-30)
    assert np.all(np.sign(decoded[in_range & (mag > 0)]) == np.sign(v[in_range & (mag > 0)]))
    top = float(tok.base) ** (tok.max_exponent + 1)
    must = int(np.sum(mag >= top) + np.sum((mag > 0) & (mag < float(tok.base) ** -tok.max_exponent)))
    may = int(np.sum((mag < top) & (mag >= top * (1 - float(tok.base) ** -tok.mantissa_digits))))  # rounds up past the top
    assert must <= clamped <= must + may


def test_ieee_clamps_and_counts_huge_values():
    tok = IEEETokenizer(10, 1, 4)
    tokens, clamped = tok.encode(np.array([1e12, -1e15, 5.0]))
    assert clamped == 2
    decoded = np.asarray(tok.decode(jnp.asarray(tokens)))
    np.testing.assert_allclose(decoded, [9.999e9, -9.999e9, 5.0], rtol=1e-6)


def test_ieee_hand_made_tokens():
    tok = IEEETokenizer(10, 1, 4)
    tokens, _ = tok.encode(np.array([123.456, -0.00123, 0.0, 9.99996]))
    P, M = tok.plus_id, tok.minus_id
    np.testing.assert_array_equal(tokens, [[P, P, 2, 1, 2, 3, 5], [M, M, 3, 1, 2, 3, 0],
                                           [P, P, 0, 0, 0, 0, 0], [P, P, 1, 1, 0, 0, 0]])


@pytest.mark.parametrize("tok", NORMALIZED + IEEE)
def test_every_masked_sequence_decodes(tok):
    rng = np.random.default_rng(0)
    allowed = tok.allowed
    assert allowed.shape == (tok.length, tok.vocab_size)
    assert not allowed[:, tok.bos_id].any()
    tokens = np.stack([rng.choice(np.flatnonzero(allowed[t]), size=500) for t in range(tok.length)], axis=1)
    values = np.asarray(tok.decode(jnp.asarray(tokens)))
    assert np.all(np.isfinite(values))
    re_tokens, _ = tok.encode(values)  # decodable values re-encode to a masked-valid sequence
    assert allowed[np.arange(tok.length), re_tokens].all()


def test_spec_round_trip_and_registry():
    for tok in NORMALIZED + IEEE:
        assert tokenizer_from_spec(json.loads(json.dumps(tok.spec()))) == tok
    fitted = make_tokenizer(ConfigDict(dict(name="normalized", base=4, digits=5)), np.array([-2.0, 0.5, 3.0]))
    assert (fitted.low, fitted.high, fitted.base, fitted.digits) == (-2.0, 3.0, 4, 5)
    with pytest.raises(GenreError, match="config.tokenizer.name: unknown tokenizer 'bogus'"):
        make_tokenizer(ConfigDict(dict(name="bogus")), np.zeros(3))
    with pytest.raises(GenreError, match="constant"):
        NormalizedTokenizer.fit(np.ones(4))
    with pytest.raises(GenreError, match="non-finite"):
        NORMALIZED[0].encode(np.array([np.nan]))


def test_digit_positions_and_values():
    norm = NormalizedTokenizer(4, 3, 0.0, 1.0)
    np.testing.assert_array_equal(norm.digit_positions, [True, True, True])
    np.testing.assert_array_equal(norm.digit_values, [0, 1, 2, 3, 0])  # BOS -> 0
    assert norm.digit_values.dtype == np.float32 and norm.digit_values.shape == (norm.vocab_size,)
    ieee = IEEETokenizer(10, 1, 2)
    np.testing.assert_array_equal(ieee.digit_positions, [False, False, True, True, True])
    np.testing.assert_array_equal(ieee.digit_values, list(range(10)) + [0, 0, 0])  # '+', '-', BOS -> 0
    assert ieee.digit_values.dtype == np.float32 and ieee.digit_values.shape == (ieee.vocab_size,)


@pytest.mark.parametrize("tok", NORMALIZED + IEEE)
def test_digit_positions_allow_exactly_the_digit_tokens(tok):
    # the positions flagged as digits allow exactly the tokens that carry a digit value
    is_digit_V = np.arange(tok.vocab_size) < tok.base
    np.testing.assert_array_equal(tok.allowed[tok.digit_positions], np.broadcast_to(
        is_digit_V, (int(tok.digit_positions.sum()), tok.vocab_size)))
    assert not tok.allowed[~tok.digit_positions][:, is_digit_V].any()
    # encoded digits decode to their values through digit_values
    tokens, _ = tok.encode(np.array([0.3, -0.7, 0.9]))
    np.testing.assert_array_equal(tok.digit_values[tokens][:, tok.digit_positions], tokens[:, tok.digit_positions])
