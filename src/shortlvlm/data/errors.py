"""Errors raised while reading benchmark data."""

from __future__ import annotations

from shortlvlm.errors import ShortLVLMError


class BenchmarkDataError(ShortLVLMError):
    """Benchmark files are missing, malformed, or point outside the data folder."""
