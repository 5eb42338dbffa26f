"""Domain errors of Headmap.

Every error carries one sentence that says what went wrong *and what to do*. :func:`user_message`
turns any exception into the sentence shown for it: the CLI prints it and exits non-zero; the
window shows it in the status bar and a dialog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .consent import CodeConsent


class HeadmapError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the one-sentence message."""

    exit_code = 2


class ModelLoadError(HeadmapError):
    """The model reference could not be resolved or loaded."""


class RemoteCodeError(ModelLoadError):
    """The checkpoint needs custom code that no consent covers.

    ``request``: the :class:`analysis.consent.CodeConsent` to ask the user for (this checkpoint and
    the sha256 of its code files), or ``None`` when the code was not looked at.
    """

    request: CodeConsent | None = None


class ConsentRequiredError(ModelLoadError):
    """Loading needs an explicit user decision (pickle weights, big memory)."""


class IntegrityError(ModelLoadError):
    """A bundled weights file does not match its recorded sha256."""


class MissingWeightsError(ConsentRequiredError):
    """The checkpoint lacks weights its config describes (they would start random).

    ``missing``: the parameter names transformers reported as missing.
    """

    missing: tuple[str, ...] = ()


class CacheError(ModelLoadError):
    """Headmap's own cache cannot be written (a full, read-only or unwritable disk)."""


class NoAttentionError(HeadmapError):
    """The architecture returned no attention maps."""


class InputError(HeadmapError):
    """The text / target / option given is unusable."""


class CaptureError(HeadmapError):
    """A capture failed its consistency checks (shapes, row sums)."""


class ExportError(HeadmapError):
    """Writing an output file failed."""


class Cancelled(HeadmapError):
    """The user cancelled a long job."""


#: the sentence for a :class:`MemoryError`
OUT_OF_MEMORY = "out of memory; use a shorter text (--max-tokens) or a smaller dtype"
#: what follows an unexpected error's description unless the caller gives its own hint
UNEXPECTED_HINT = "try again, or report it with the model and text used"
_DETAIL_CHARS = 240



def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, for messages: "an encoder", "a decoder", "a seq2seq",
    "an int" (by the first letter, which is right for Headmap's model kinds and type names)."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word

def user_message(exc: BaseException, *, hint: str = UNEXPECTED_HINT) -> str:
    """The one sentence shown for ``exc``, in the window and by the CLI.

    Parameters
    ----------
    exc : any exception that ended a job
    hint : what to do after an unexpected error (the CLI says to rerun with ``--debug``)

    Returns
    -------
    * a :class:`HeadmapError`: its own sentence, ``str(exc)``;
    * a ``KeyError`` (``Capture.resolve_stack`` explains itself in one): its first argument;
    * a ``MemoryError``: :data:`OUT_OF_MEMORY`;
    * anything else: ``unexpected <type>: <first line of the message, at most 240 characters>;
      <hint>``.
    """
    if isinstance(exc, HeadmapError):
        return str(exc)
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    text = str(exc)
    detail = text.splitlines()[0][:_DETAIL_CHARS] if text.strip() else ""
    return f"unexpected {type(exc).__name__}: {detail}; {hint}"
