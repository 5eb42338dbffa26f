"""A damaged or unreadable settings file (issue 17, item 10): the window starts with defaults for
what it cannot read, keeps what it can, and says so once, in the status bar."""

from __future__ import annotations


def write(path, data: bytes) -> None:
    path.write_bytes(data)


def test_garbage_in_the_settings_keeps_the_readable_keys(qtbot, make_window, settings_path):
    write(settings_path, b"[General]\ncmap=magma\ntheme=dark\n\x00\xff\xfe not ini at all [[[\nscale=purple\n"
                         b"shared_range=maybe\ngeometry=@ByteArray(garbage)\ndtype=float99\nrow_labels=input\n"
                         b"last_model=bundled:translator-en-fr\n")
    win = make_window()
    # what could be read is used
    assert win.spec.cmap == "magma" and win.spec.theme == "dark" and win.spec.rows == "input"
    assert win.model_panel.reference() == "bundled:translator-en-fr"
    # what makes no sense keeps its default
    assert win.spec.scale == "linear" and win.spec.shared_range is True
    assert win.model_panel.dtype.currentText() == "auto"
    # said once, in the status bar, naming what was dropped; never a dialog
    msg = win.statusBar().currentMessage()
    assert msg == win.settings_problem
    for key in ("scale", "shared_range", "geometry", "dtype"):
        assert key in msg, key
    assert "cmap" not in msg and "theme" not in msg
    assert win._dialog is None and win.last_error == ""
    # the window works, and saving leaves a clean file: the next start says nothing
    win.close()
    again = make_window()
    assert again.settings_problem == "" and again.spec.cmap == "magma"


def test_an_unreadable_settings_file_starts_with_defaults(qtbot, make_window, settings_path):
    settings_path.mkdir()  # a folder where the file should be: it cannot be read (even as root)
    win = make_window()
    assert "could not be read" in win.settings_problem and "the window starts with their defaults" in \
        win.settings_problem
    assert win.statusBar().currentMessage() == win.settings_problem
    assert win.spec.theme == "light" and win.spec.scale == "linear"
    assert win._dialog is None and win.last_error == ""


def test_a_bad_theme_in_the_settings_falls_back_to_light(qtbot, make_window, settings_path):
    write(settings_path, b"[General]\ntheme=purple\n")
    win = make_window()
    assert win.spec.theme == "light" and "theme" in win.settings_problem
