"""Domain errors of Headmap.

Every error carries one sentence that says what went wrong *and what to do*. The CLI prints
``str(err)`` and exits non-zero; the window shows it in the status bar and a dialog.
"""

from __future__ import annotations


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

    request = None


class ConsentRequiredError(ModelLoadError):
    """Loading needs an explicit user decision (pickle weights, big memory)."""


class IntegrityError(ModelLoadError):
    """A bundled weights file does not match its recorded sha256."""


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
