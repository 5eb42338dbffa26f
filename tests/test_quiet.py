"""Our own calls are quiet (issue 18, "Quiet logs"): no deprecation or generation-config warnings,
no font-lookup noise.

Each check records every Python warning and every record (DEBUG and up) of the transformers and
matplotlib loggers while it runs, after emptying the caches that make both libraries say a thing
only once per process (transformers' ``warning_once``, matplotlib's ``findfont``), so a test run
after others still sees a message the code would emit.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analysis.capture import capture, generation_length
from analysis.errors import InputError
from analysis.figures import build_figure
from analysis.loader import load_model
from analysis.views.spec import VIEWS, ViewInputs, ViewSpec, validate_spec
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq

#: what must never be said: generation settings, deprecations, font fallbacks
NOISE = ("max_new_tokens", "max_length", "torch_dtype", "deprecat", "findfont: failed", "failed to find font")
LOGGERS = ("transformers", "matplotlib")


@dataclass
class Heard:
    warnings: list[str] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)

    def noise(self) -> list[str]:
        said = self.warnings + [f"{r.name}: {r.getMessage()}" for r in self.records]
        return [m for m in said if any(n in m.lower() for n in NOISE)]

    def loud(self) -> list[str]:
        """Warnings, and records at WARNING or above."""
        return self.warnings + [f"{r.name}: {r.getMessage()}" for r in self.records if r.levelno >= logging.WARNING]


class _Collect(logging.Handler):
    def __init__(self, heard: Heard) -> None:
        super().__init__(logging.DEBUG)
        self.heard = heard

    def emit(self, record: logging.LogRecord) -> None:
        self.heard.records.append(record)


@contextmanager
def listening() -> Iterator[Heard]:
    """Everything the block makes Python warn or the two libraries log (transformers' logger does
    not propagate to the root logger, so the handler sits on each logger itself)."""
    from transformers.utils.logging import warning_once

    warning_once.cache_clear()
    font_manager.fontManager._findfont_cached.cache_clear()
    heard = Heard()
    handler = _Collect(heard)
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield heard
        heard.warnings += [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def test_the_listener_hears_what_it_must_refuse():
    """The checks below can fail: the messages they look for are heard when they are said."""
    import transformers

    with listening() as heard:
        getattr(transformers.BertConfig(), "torch_dtype", None)  # "`torch_dtype` is deprecated!"
        logging.getLogger("matplotlib.font_manager").warning("findfont: Failed to find font weight bold for X")
    assert len(heard.noise()) == 2, heard.noise()


# -- generation ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def marian_max_length(tiny_model_dir, tmp_path_factory):
    """The tiny Marian with ``max_length`` in its generation config, as real Marian checkpoints
    (and the bundled translators) have: the case where transformers complained."""
    folder = tmp_path_factory.mktemp("marian-max-length") / "m"
    shutil.copytree(tiny_model_dir("marian"), folder)
    path = folder / "generation_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["max_length"] = 40
    path.write_text(json.dumps(cfg), encoding="utf-8")
    lm = load_model(str(folder), device="cpu")
    assert lm.model.generation_config.max_length == 40
    return lm


def test_generation_length_names_one_setting(marian_max_length, loaded):
    assert generation_length(marian_max_length.model, 12, 1) == {"max_length": 13}
    assert generation_length(loaded("gpt2").model, 5, 7) == {"max_new_tokens": 5}


@pytest.mark.parametrize("beams", [1, 3])
def test_seq2seq_generation_is_quiet(marian_max_length, beams):
    with listening() as heard:
        cap = capture(marian_max_length, "I like this course", generate=True, num_beams=beams)
        capped = capture(marian_max_length, "I like this course", generate=True, max_new_tokens=3)
    assert heard.noise() == [] and heard.loud() == []
    assert cap.outputs is not None and len(cap.outputs) >= 1
    assert len(capped.outputs) <= 3  # the limit still holds, passed as max_length


def test_decoder_continuation_and_mask_lab_translation_are_quiet(loaded):
    from analysis.masks import padding_experiment, token_masking

    with listening() as heard:
        capture(loaded("gpt2"), "I like this course", generate=True, max_new_tokens=3)
        padding_experiment(loaded("marian"), "I like this course", "the students are reading a long book today")
        token_masking(loaded("marian"), "I like this course", [1])
    assert heard.noise() == [] and heard.loud() == []


def test_loading_a_config_without_dtype_reads_no_deprecated_attribute(tiny_model_dir, tmp_path):
    folder = tmp_path / "bert"
    shutil.copytree(tiny_model_dir("bert"), folder)
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg.pop("dtype", None)
    cfg.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with listening() as heard:
        lm = load_model(str(folder), device="cpu")
    assert heard.noise() == []
    assert str(next(lm.model.parameters()).dtype) == "torch.float32"


@pytest.mark.bundled
def test_bundled_translator_is_quiet():
    lm = load_model("bundled:translator-en-fr", device="cpu")
    with listening() as heard:
        cap = capture(lm, "I like this course", generate=True)
        capture(lm, "I like this course", generate=True, num_beams=3)
    assert heard.noise() == [] and heard.loud() == []
    assert cap.output_text == "j'aime ce cours"


# -- figures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def padding_report(loaded):
    from analysis.masks import padding_experiment

    return padding_experiment(loaded("marian"), "I like this course", "the students are reading a long book today")


def applicable(cap, report) -> list[tuple[ViewSpec, ViewInputs]]:
    """Every view that applies to ``cap``, with the inputs it needs."""
    inputs = ViewInputs(mask_report=report, compare_with=cap)
    out = []
    for view in VIEWS:
        spec = ViewSpec(view=view, head=None, stack="encoder" if view in ("rollout", "flow") else None)
        try:
            validate_spec(cap, spec, inputs)
        except InputError:
            continue
        out.append((spec, inputs))
    return out


@pytest.mark.parametrize("theme", ["light", "dark", "presentation"])
def test_every_view_draws_without_font_noise(padding_report, theme):
    """The alignment view writes translation words bold and the steps view the current step: with
    Korean words that asks the CJK fallback font for a bold face."""
    specs = [(cap, spec, inputs) for cap in (make_encoder(), make_decoder(), make_seq2seq())
             for spec, inputs in applicable(cap, padding_report)]
    assert {s.view for _, s, _ in specs} == set(VIEWS)
    with listening() as heard:
        for cap, spec, inputs in specs:
            from dataclasses import replace

            FigureCanvasAgg(build_figure(cap, replace(spec, theme=theme), inputs)).draw()
    assert heard.noise() == [] and heard.loud() == []


@pytest.mark.bundled
def test_bundled_korean_translation_views_are_quiet():
    lm = load_model("bundled:translator-en-ko", device="cpu")
    cap = capture(lm, "I like this course", generate=True)
    assert cap.output_text == "나는 이 강의를 좋아한다"
    with listening() as heard:
        for view in ("alignment", "steps"):
            FigureCanvasAgg(build_figure(cap, ViewSpec(view=view, step=1))).draw()
    assert heard.noise() == [] and heard.loud() == []


def test_a_decoder_whose_generation_config_sets_max_length_continues_quietly(tiny_model_dir, tmp_path):
    """A decoder checkpoint whose generation_config.json sets max_length (as many do) continues a
    text without transformers' "Both max_new_tokens and max_length" complaint, within the limit."""
    folder = tmp_path / "gpt2"
    shutil.copytree(tiny_model_dir("gpt2"), folder)
    path = folder / "generation_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    cfg["max_length"] = 40
    path.write_text(json.dumps(cfg), encoding="utf-8")
    lm = load_model(str(folder), device="cpu")
    assert lm.model.generation_config.max_length == 40
    with listening() as heard:
        cap = capture(lm, "I like this course", generate=True, max_new_tokens=3)
    assert heard.noise() == [] and heard.loud() == []
    assert 1 <= len(cap.source) - cap.prompt_length <= 3
