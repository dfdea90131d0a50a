"""Tests of the benchmark data layer (loaders, prompts, answer parsing, metrics)."""
