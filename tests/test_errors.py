"""The one sentence shown for any exception (analysis.errors.user_message)."""

from __future__ import annotations

import pytest

from analysis.errors import (
    OUT_OF_MEMORY,
    UNEXPECTED_HINT,
    Cancelled,
    HeadmapError,
    InputError,
    user_message,
)


@pytest.mark.parametrize(
    "exc", [HeadmapError("choose a model first"), InputError("the text is empty; type a sentence")]
)
def test_a_headmap_error_is_its_own_sentence(exc):
    assert user_message(exc) == str(exc)
    assert user_message(exc, hint="rerun with --debug for details") == str(exc)


def test_cancelled_is_a_headmap_error():
    assert user_message(Cancelled("cancelled")) == "cancelled"


def test_a_key_error_says_its_first_argument_without_quotes():
    msg = "this capture has no stack 'cross_attentions'; choose one of: attentions"
    exc = KeyError(msg)
    assert str(exc).startswith("\"")  # what str() would show: the repr, quoted
    assert user_message(exc) == msg
    assert user_message(KeyError(msg, "extra")) == msg


def test_memory_error():
    assert user_message(MemoryError()) == OUT_OF_MEMORY
    assert user_message(MemoryError("CUDA out of memory")) == OUT_OF_MEMORY
    assert "--max-tokens" in OUT_OF_MEMORY and "dtype" in OUT_OF_MEMORY


def test_anything_else_is_unexpected_with_the_first_line_and_a_hint():
    exc = RuntimeError("boom: the tensor was wrong\nTraceback line two")
    assert user_message(exc) == f"unexpected RuntimeError: boom: the tensor was wrong; {UNEXPECTED_HINT}"
    assert UNEXPECTED_HINT == "try again, or report it with the model and text used"
    cli = user_message(exc, hint="rerun with --debug for details")
    assert cli == "unexpected RuntimeError: boom: the tensor was wrong; rerun with --debug for details"


def test_unexpected_details_are_cut_to_240_characters():
    msg = user_message(ValueError("x" * 1000))
    assert msg == f"unexpected ValueError: {'x' * 240}; {UNEXPECTED_HINT}"


@pytest.mark.parametrize("exc", [ValueError(), ValueError("   "), KeyError(), ZeroDivisionError("\nsecond")])
def test_unexpected_without_a_message(exc):
    assert user_message(exc) == f"unexpected {type(exc).__name__}: ; {UNEXPECTED_HINT}"
    assert "\n" not in user_message(exc)


def test_the_cli_says_user_message(tmp_path, capsys, monkeypatch):
    import analysis.cli as cli

    def explode(args, *_):
        raise OSError("the disk\nis full")

    monkeypatch.setattr(cli, "_quiet_libraries", lambda debug: None)  # keep this process's warnings
    monkeypatch.setattr(cli, "run_headless", explode)
    args = cli.build_parser().parse_args(["--model", "x", "--text", "t", "--export-npz", str(tmp_path / "x.npz")])
    assert cli.headless_main(args) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err == "error: unexpected OSError: the disk; rerun with --debug for details\n"

    def oom(args, *_):
        raise MemoryError

    monkeypatch.setattr(cli, "run_headless", oom)
    assert cli.headless_main(args) == cli.EXIT_INTERNAL
    assert capsys.readouterr().err == f"error: {OUT_OF_MEMORY}\n"


def test_messages_name_a_model_kind_or_a_type_with_its_article():
    from analysis.errors import a_or_an

    assert [a_or_an(w) for w in ("encoder", "decoder", "seq2seq", "int", "dict", "Object")] == \
        ["an encoder", "a decoder", "a seq2seq", "an int", "a dict", "an Object"]
