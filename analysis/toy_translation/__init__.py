"""Two teaching translators (English→French, English→Korean) trained on a synthetic grammar.

``grammar`` generates sentence pairs with gold word alignments; ``train`` trains the small
MarianMT models bundled in ``analysis/bundled_models/translator-en-fr`` and ``translator-en-ko``.
Neither module imports Qt; ``grammar`` needs only the standard library.
"""

from .grammar import LANGS, Meaning, Pair, generate_meanings, render, sample_pairs, split_pairs

__all__ = [
    "LANGS",
    "Meaning",
    "Pair",
    "generate_meanings",
    "render",
    "sample_pairs",
    "split_pairs",
]
