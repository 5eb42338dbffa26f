"""Behaviours pinned down by mutation testing (group G): the Rollout view's out-of-range output
position names the input's last position, and a short alignment keeps its word labels upright."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.alignment import AlignmentResult
from analysis.errors import InputError
from analysis.themes import get_theme
from analysis.views.alignment import AlignmentData, AlignmentDrawer
from analysis.views.spec import ViewSpec, validate_spec
from tests.test_aggregate import make_encoder


# --------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------
def test_rollout_position_out_of_range_names_the_last_position():
    """'output position 9 is out of range: this input has positions 0–5' for a 6-token input."""
    with pytest.raises(InputError, match=r"^output position 9 is out of range: this input has positions 0–5$"):
        validate_spec(make_encoder(), ViewSpec(view="rollout", position=9))


# --------------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------------
def test_short_alignment_word_labels_are_upright():
    """A short sentence's source and translation word labels are drawn upright (rotation 0), not at 35°."""
    m = np.array([[0.8, 0.2], [0.3, 0.7]])
    res = AlignmentResult(m, ((0, 0), (1, 1)), 0, None)
    d = AlignmentData(res, ("I", "like"), ("나는", "좋아"), None, 0, None, False, "title", "viridis")
    drawer = AlignmentDrawer(Figure(figsize=(6, 5)), get_theme("light"))
    drawer.draw(d)
    labels = {t.get_text(): t for t in drawer.ax_links.texts}
    words = [labels[w] for w in ("I", "like", "나는", "좋아")]
    assert [t.get_rotation() for t in words] == [0.0] * 4
    assert [t.get_horizontalalignment() for t in words] == ["center"] * 4
