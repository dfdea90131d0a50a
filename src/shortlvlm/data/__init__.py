"""Data: calibration sets and benchmark loading (see `shortlvlm.data.benchmarks`)."""
