"""Guard against a Qt binding that corrupts reference counts (PySide6 6.12.0 on Python 3.11 drops a
reference to None on every void-returning call, and the window aborts with "none_dealloc" after a
few minutes of use)."""

import sys

from PySide6.QtCore import QCoreApplication, QTimer


def test_void_calls_keep_none_refcount(qapp):
    timer = QTimer()
    before = sys.getrefcount(None)
    for _ in range(2000):
        timer.setInterval(5)
        QCoreApplication.processEvents()
    after = sys.getrefcount(None)
    # other threads may hold or drop a few references meanwhile; a leak is one per call
    assert abs(after - before) < 100, f"None refcount moved by {after - before} over 4000 void calls"
