"""analysis.readable: behaviours no other test reached. Which tokens come from the text when no
token strings are given, and a bundled model that is unknown, has no tokenizer.json or a damaged
one reads nothing (it is no candidate)."""

from __future__ import annotations

import shutil

import numpy as np

from analysis import readable


def test_without_token_strings_a_bare_marker_still_counts_as_text():
    """No ``raw``: nothing is taken out for being a lone word-start marker."""
    ids, special = [5, 1, 7, 2], [True, False, True, True]
    np.testing.assert_array_equal(readable.from_text(ids, special, None, 7), [False, True, True, False])
    np.testing.assert_array_equal(readable.from_text(ids, special, None, None), [False, True, False, False])
    offsets = [(0, 0), (0, 1), (1, 3), (3, 3)]
    np.testing.assert_array_equal(readable.from_text(ids, special, offsets, 7), [False, True, True, False])
    # with the strings, the marker alone ("▁" before an <unk>) is not counted
    np.testing.assert_array_equal(readable.from_text(ids, special, offsets, 7, ["<s>", "▁", "<unk>", "</s>"]),
                                  [False, False, True, False])


def test_an_unknown_bundled_model_has_no_location_and_no_reader():
    assert readable._bundled_location("no-such-model") is None
    assert readable.bundled_reader("no-such-model") is None


def test_a_bundled_model_without_a_tokenizer_file_reads_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(readable, "_bundled_location", lambda name: tmp_path)
    assert readable.bundled_reader("minilm") is None
    assert readable.bundled_reader("smollm2") is not None  # reads any text: needs no tokenizer file


def test_a_bundled_model_with_a_damaged_tokenizer_file_reads_nothing(monkeypatch, tmp_path, tiny_model_dir):
    damaged, good = tmp_path / "damaged", tmp_path / "good"
    damaged.mkdir()
    (damaged / "tokenizer.json").write_text("{not json", encoding="utf-8")
    good.mkdir()
    shutil.copy(tiny_model_dir("bert") / "tokenizer.json", good / "tokenizer.json")
    monkeypatch.setattr(readable, "_bundled_location", lambda name: damaged)
    assert readable.bundled_reader("minilm") is None
    monkeypatch.setattr(readable, "_bundled_location", lambda name: good)
    assert callable(readable.bundled_reader("minilm"))
