"""The capture result's own contract (analysis/result.py): immutable arrays of the types it
promises, whatever it is built from, and the shape helpers per stack."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.result import Capture, TokenSeq
from tests.test_aggregate import make_encoder, make_seq2seq


def test_token_seq_makes_read_only_int64_ids_and_bool_flags_from_lists():
    seq = TokenSeq(ids=[5, 6, 7], raw=("a", "b", "c"), display=("a", "b", "c"), special=[1, 0, 0],
                   word_ids=(0, 1, 2))
    assert seq.ids.dtype == np.int64 and seq.ids.tolist() == [5, 6, 7]
    assert seq.special.dtype == bool and seq.special.tolist() == [True, False, False]
    for arr in (seq.ids, seq.special):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 0


def test_token_seq_fields_of_different_lengths_are_refused_with_a_sentence():
    with pytest.raises(ValueError) as err:
        TokenSeq(ids=[1, 2], raw=("a",), display=("a",), special=[False], word_ids=(0,))
    assert str(err.value) == "TokenSeq fields must all have the same length"


def test_capture_stacks_and_spans_are_read_only_and_typed():
    """A contiguous stack given is frozen itself, not copied (no second copy of a big capture), so
    nobody writes into it afterwards; word spans become read-only int64 [n, 2] whatever they were
    given as."""
    cap = make_encoder()
    given = np.ascontiguousarray(cap.stacks["attentions"]).copy()
    built = replace(cap, stacks={"attentions": given}, source_spans=[0, 1, 1, 3, 3, 6],
                    output_spans=None)
    arr = built.stacks["attentions"]
    assert arr is given and not given.flags.writeable
    with pytest.raises(TypeError):
        built.stacks["attentions"] = given  # type: ignore[index]  # the mapping is read-only too
    spans = built.source_spans
    assert spans is not None and spans.dtype == np.int64 and spans.shape == (3, 2)
    assert spans.tolist() == [[0, 1], [1, 3], [3, 6]] and not spans.flags.writeable
    assert built.output_spans is None


def test_attention_is_float32_and_the_shape_helpers_follow_the_stack():
    """float16 stacks come back float32 (a copy); float32 ones as they are. Layer and head counts
    are read per stack: here the cross stack has one layer fewer than the others."""
    half = make_encoder().with_stacks_dtype(np.float16)
    assert half.stacks["attentions"].dtype == np.float16
    assert half.attention().dtype == np.float32
    full = make_encoder()
    assert full.attention() is full.stacks["attentions"]
    cap = make_seq2seq()
    cap = replace(cap, stacks={**cap.stacks, "cross_attentions": cap.stacks["cross_attentions"][:1]})
    assert (cap.n_layers(), cap.n_layers("cross")) == (2, 1)
    assert (cap.n_heads(), cap.n_heads("cross")) == (4, 4)
    assert cap.shape("cross") == (1, 4, 6, 7)


def test_a_capture_is_equal_only_to_itself():
    cap = make_encoder()
    assert cap == cap and cap != replace(cap) and isinstance(hash(cap), int)
    assert isinstance(cap, Capture)
