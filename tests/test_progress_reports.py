"""What every long job tells the user while it runs, in order: the stage, the share done and the
words in the status bar (issue 19: a changed or dropped progress message passed the suite)."""

from __future__ import annotations

import pytest

from analysis.capture import capture
from analysis.masks import masking_job, padding_experiment
from analysis.tasks import TaskState

TEXT = "I like this course"


def recorded():
    seen: list[tuple] = []
    return seen, TaskState(lambda stage, f, msg: seen.append((stage, None if f is None else round(f, 6), msg)))


@pytest.mark.parametrize("arch", ["bert", "gpt2", "marian"])
def test_loading_says_each_step_once(tiny_model_dir, arch):
    from analysis.loader import load_model

    folder = str(tiny_model_dir(arch))
    seen, task = recorded()
    load_model(folder, device="cpu", task=task)
    assert seen == [
        ("resolve", 0.0, f"finding {folder}…"),
        ("load", 0.1, "reading the config…"),
        ("load", 0.3, "loading the tokenizer…"),
        ("load", 0.5, "loading the weights…"),
        ("ready", 1.0, f"loaded {folder}"),
    ]


def test_a_capture_says_it_runs_the_model_and_what_it_generates(loaded):
    seen, task = recorded()
    capture(loaded("bert"), TEXT, task=task)
    assert seen == [("run", 0.1, "running the model…")]
    seen, task = recorded()
    capture(loaded("gpt2"), TEXT, generate=True, max_new_tokens=3, task=task)
    assert seen == [("run", 0.1, "running the model…"), ("generate", 0.2, "continuing the text 3 tokens…")]
    seen, task = recorded()
    capture(loaded("marian"), TEXT, generate=True, task=task)
    assert seen == [("run", 0.1, "running the model…"), ("generate", 0.2, "generating the target…")]


@pytest.mark.parametrize("arch", ["bert", "marian"])
def test_the_padding_experiment_names_its_three_runs(loaded, arch):
    seen, task = recorded()
    padding_experiment(loaded(arch), TEXT, "the students are reading a long book", task=task)
    runs = [
        ("run", 0.2, "running the sentence alone…"),
        ("run", 0.45, "running the padded batch with the attention mask…"),
        ("run", 0.7, "running the padded batch without the mask…"),
        ("run", 0.9, "comparing…"),
    ]
    first = [("run", 0.05, "translating the sentence alone…")] if arch == "marian" else []
    assert seen == first + runs


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_masking_tokens_names_its_runs(loaded, arch):
    seen, task = recorded()
    masking_job(loaded(arch), TEXT, [1], task=task)
    assert seen == [
        ("masking", None, "running with the chosen tokens masked…"),
        ("run", 0.2, "running without the token mask…"),
        ("run", 0.55, "running with the token mask…"),
        ("run", 0.9, "comparing…"),
    ]


def test_masking_tokens_of_a_translation_names_its_runs(loaded):
    seen, task = recorded()
    masking_job(loaded("marian"), TEXT, [1], task=task)
    assert seen == [
        ("masking", None, "running with the chosen tokens masked…"),
        ("run", 0.05, "translating the full sentence…"),
        ("run", 0.3, "running without the token mask…"),
        ("run", 0.45, "running with the token mask…"),
        ("run", 0.6, "translating with the token mask…"),
        ("run", 0.9, "comparing…"),
    ]


def test_token_masking_with_a_typed_target_says_it_prepares_the_target(loaded):
    """A seq2seq token masking with a typed target reports 'preparing the target…' first."""
    from analysis.masks import token_masking

    seen, task = recorded()
    token_masking(loaded("marian"), TEXT, [1], target="J'aime ce cours", task=task)
    assert [m for _, _, m in seen] == [
        "preparing the target…",
        "running without the token mask…",
        "running with the token mask…",
        "translating with the token mask…",
        "comparing…",
    ]
