"""Behaviours pinned down by mutation testing (group J, sixth session: the seed-23 sample's
survivors): the size at which --export-npz asks for --force, a folder named like a bundled model,
every padding note word for word, NaN in a saved session, a store written for another process into
another folder, the streaming error that names the module."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest


# --------------------------------------------------------------------------------------------
# cli: --export-npz asks for --force only over the limit
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("over", "refused"), [(0, False), (1, True)])
def test_export_npz_asks_for_force_only_over_the_limit(tmp_path, monkeypatch, over, refused):
    """A file of exactly FORCE_BYTES is written; one byte more needs --force (and says so)."""
    from analysis import npz
    from analysis.cli import build_parser, run_headless
    from analysis.errors import InputError
    from analysis.session import save_session
    from tests.test_aggregate import make_encoder

    path = save_session(tmp_path / "enc.headmap", make_encoder(), model_ref="toy-bert", inputs={"text": "x"},
                        options={})
    monkeypatch.setattr(npz, "npz_bytes", lambda shown: npz.FORCE_BYTES + over)
    out = tmp_path / "maps.npz"
    args = build_parser().parse_args(["--session", str(path), "--export-npz", str(out)])
    if refused:
        with pytest.raises(InputError, match=r"^--export-npz would write .* add --force to write it anyway"):
            run_headless(args)
        assert not out.exists()
        run_headless(build_parser().parse_args(["--session", str(path), "--export-npz", str(out), "--force"]))
    else:
        run_headless(args)
    assert out.exists()


# --------------------------------------------------------------------------------------------
# consent: a bundled name is never a folder
# --------------------------------------------------------------------------------------------
def test_a_folder_named_like_a_bundled_model_is_not_hashed_for_its_consent(tmp_path, monkeypatch):
    """``bundled:NAME`` names a model shipped in a package; a folder of that name in the working
    directory is not what it means, and its code is not hashed into the consent."""
    from analysis.consent import CodeConsent, local_consent

    folder = tmp_path / "bundled:opus"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "modeling_x.py").write_text("x = 1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert local_consent("bundled:opus") == CodeConsent("bundled:opus", None)
    assert local_consent(str(folder)).code_sha256 is not None  # the same folder by its path is


# --------------------------------------------------------------------------------------------
# masks: the padding notes, word for word
# --------------------------------------------------------------------------------------------
_EOS = "this tokenizer has no pad token, so the batch is padded with its EOS token {!r}, as generate does"
_FOLLOW = "left padding: position ids follow the mask ((cumsum − 1), as generate does) in the masked run"
_OWN = "this model derives its positions from the pad ids, so left padding keeps them by itself"
_SHIFT = ("left padding: this model takes no position ids, so unless its positions are relative (T5) the "
          "sentence's positions shift and even the masked run differs from the run alone")
_RIGHT_DECODER = ("right padding in a decoder: the causal mask alone hides the trailing pads from every real token, "
                  "so the run without the padding mask matches too; predict from the last real token")


@pytest.mark.parametrize(("arch", "left", "right"), [
    ("bert", (_FOLLOW,), ()),
    ("roberta", (_OWN,), ()),
    ("gpt2", (_EOS.format("<|endoftext|>"), _FOLLOW), (_EOS.format("<|endoftext|>"), _RIGHT_DECODER)),
    ("llama", (_EOS.format("</s>"), _FOLLOW), (_EOS.format("</s>"), _RIGHT_DECODER)),
    ("t5", (_SHIFT,), ()),
    ("marian", (_SHIFT,), ()),
])
def test_the_padding_reports_notes_word_for_word(loaded, arch, left, right):
    """What the mask lab and --mask-report say about how the batch was padded and positioned."""
    from analysis.masks import padding_experiment

    lm = loaded(arch)
    assert padding_experiment(lm, "I like this course", None, padding_side="left").notes == left
    assert padding_experiment(lm, "I like this course", None, padding_side="right").notes == right


# --------------------------------------------------------------------------------------------
# session: NaN is saved
# --------------------------------------------------------------------------------------------
def test_a_sessions_values_may_hold_nan_and_infinity():
    """Statistics of a map can be NaN (a hidden row) and ranges infinite: they are saved as they are
    (Python's JSON reads them back)."""
    from analysis.session import _json_value

    got = _json_value({"a": float("nan"), "b": [float("inf"), -float("inf")], "c": "x"}, "options")
    assert math.isnan(got["a"]) and got["b"] == [math.inf, -math.inf] and got["c"] == "x"


# --------------------------------------------------------------------------------------------
# store: written for another process, into another folder
# --------------------------------------------------------------------------------------------
def test_stacks_written_for_another_process_go_into_the_folder_given(tmp_path):
    """A model process writes the window's stores: named after the window's pid (its owner, who
    removes them) in the stores folder given."""
    from analysis.store import write_stacks

    st = write_stacks({"attentions": np.full((1, 1, 4, 4), 0.25, np.float32)}, owner=4242, root=tmp_path)
    assert st.path.parent == tmp_path and st.path.name.startswith("4242-w")
    assert st.owner == 4242


# --------------------------------------------------------------------------------------------
# stream: the module that gives no weights is named
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", ["none", "three-axes"])
def test_streaming_an_attention_module_that_returns_no_weights_names_it(monkeypatch, weights):
    """A module whose eager attention returns no ``[batch, head, query, key]`` weights cannot be
    streamed: the error names its class."""
    import torch

    from analysis import stream

    def eager_attention_forward(module, query, key, value, mask, *a, **k):
        out = torch.zeros(query.shape[0], query.shape[2], query.shape[1], query.shape[3])
        w = None if weights == "none" else torch.zeros(query.shape[1], query.shape[2], key.shape[2])
        return out, w

    mod = types.ModuleType("headmap_test_attention")
    mod.eager_attention_forward = eager_attention_forward
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    PeculiarAttention = type("PeculiarAttention", (), {"__module__": mod.__name__})
    module = PeculiarAttention()

    class Writer:
        def begin(self, name, shape):
            pass

        def chunk_rows(self, q, k):
            return 1 << 20

        def write(self, *a):
            raise AssertionError("nothing to write")

    ctx = stream._Context(targets={id(module): ("attentions", 0)}, writer=Writer(), layers={"attentions": 1})
    monkeypatch.setattr(stream._local, "ctx", ctx, raising=False)
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(stream.StreamUnsupported) as err:
        stream.stream_attention(module, q, q, q, None)
    assert str(err.value) == "PeculiarAttention returned no [batch, head, query, key] weights"


# --------------------------------------------------------------------------------------------
# session: metadata text holding a lone surrogate
# --------------------------------------------------------------------------------------------
def test_session_metadata_holding_a_lone_surrogate_is_measured_and_read(tmp_path):
    """The metadata member is a numpy string: any code point, a lone surrogate too (which UTF-8
    cannot carry). Its nesting is measured without failing on it, and the session opens."""
    import json

    from analysis.session import load_session
    from tests.hostile_sessions import meta_of, save, with_meta_text
    from tests.test_aggregate import make_decoder

    text = json.dumps(meta_of(save(tmp_path, make_decoder())), ensure_ascii=False)
    assert '"options": {}' in text
    text = text.replace('"options": {}', '"options": {"x\ud800": 1}', 1)
    assert list(load_session(with_meta_text(tmp_path, text)).options) == ["x\ud800"]


# --------------------------------------------------------------------------------------------
# steps view: the candidates' probabilities as written
# --------------------------------------------------------------------------------------------
def test_the_steps_views_candidates_write_their_probabilities_and_mark_the_chosen_one():
    """Two decimals from 0.005 up (which rounds to 0.01), "<0.01" below; the chosen token marked."""
    from dataclasses import replace

    from matplotlib.figure import Figure

    from analysis.figures import ViewSpec
    from analysis.fonts import ensure_cjk_font
    from analysis.themes import get_theme
    from analysis.views import DRAWERS, view_data
    from tests.test_figure_geometry_golden import short_seq2seq

    ensure_cjk_font()  # the Korean candidate
    cap = short_seq2seq()
    items = (("안녕", 0.62), ("!", 0.3), ("a", 0.005), ("b", 0.0049), ("c", 0.0))
    cap = replace(cap, prediction=replace(cap.prediction, per_position=((0, items),)))
    drawer = DRAWERS["steps"](Figure(figsize=(9, 7.5)), get_theme("light"))
    drawer.draw(view_data(cap, ViewSpec(view="steps", step=0)))
    assert [t.get_text() for t in drawer.top_values] == ["0.62  ← chosen", "0.30", "0.01", "<0.01", "<0.01"]
