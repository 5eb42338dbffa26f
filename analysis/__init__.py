"""Headmap's analysis layer: loading, capture, statistics, masks, alignment, export.

Pure Python + numpy/torch. Never imports Qt (tests/test_layering.py enforces it).
"""
