"""Jobs the model process runs for ``benchmarks/run.py``.

:meth:`analysis.host.ModelHost.call` pickles a function by name, so the model process must be able
to import it: these live in a module of their own (``run.py`` is ``__main__`` in a benchmark case).
"""

from __future__ import annotations

import os
import time

from analysis.errors import Cancelled

#: a job gives up after this long, so a benchmark that goes wrong still ends
MAX_HOLD_S = 60.0


def hold(path: str, task=None) -> str:
    """Report "holding", then run until the file ``path`` exists (returns "done") or the job is
    cancelled (raises :class:`Cancelled`)."""
    task.report("holding", None, "holding until told")
    t0 = time.monotonic()
    while time.monotonic() - t0 < MAX_HOLD_S:
        if task.cancelled:
            raise Cancelled("cancelled in the model process")
        if os.path.exists(path):
            return "done"
        time.sleep(0.005)
    return "never told"


def hold_gil(seconds: int, task=None) -> str:
    """Report "holding", then sleep in C *holding the GIL* (``ctypes.PyDLL`` never releases it):
    the model process is not stopped, but no thread in it can answer a ping or a cancel."""
    import ctypes

    task.report("holding", None, "asleep in C, holding the GIL")
    ctypes.PyDLL(None).sleep(int(seconds))
    return "woke"
