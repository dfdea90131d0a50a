"""shortlvlm speaks through the `shortlvlm` logger: a library user levels or silences it, the CLI prints it."""

from __future__ import annotations

import json
import logging

import pytest

from shortlvlm import log
from shortlvlm.cli import main
from shortlvlm.data.calibration_set import Calibration, read_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.io.load import load
from shortlvlm.models import get_adapter
from shortlvlm.testbeds.toy import BUNDLED_CALIBRATION

SHORTLVLM = logging.getLogger("shortlvlm")


@pytest.fixture
def with_text_only(tmp_path):
    """Four bundled samples plus one without an image: reading it warns that one was skipped."""
    lines = BUNDLED_CALIBRATION.read_text().splitlines()[:4]
    record = json.loads(lines[0])
    record.pop("image")
    (tmp_path / "images").symlink_to(BUNDLED_CALIBRATION.parent / "images")
    path = tmp_path / "calib.jsonl"
    path.write_text("\n".join([*lines, json.dumps(record)]) + "\n")
    return path


@pytest.fixture
def restore_level():
    level = SHORTLVLM.level
    yield
    SHORTLVLM.setLevel(level)


def test_a_library_warning_reaches_the_logger_and_stderr_by_default(with_text_only, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="shortlvlm"):
        samples = read_calibration(Calibration(source=str(with_text_only))).samples
    assert len(samples) == 4
    (record,) = [r for r in caplog.records if "skipped 1 text-only sample" in r.getMessage()]
    assert record.name.startswith("shortlvlm.") and record.levelno == logging.WARNING


def test_a_library_user_silences_shortlvlm_with_its_logger(with_text_only, caplog, capsys, restore_level):
    SHORTLVLM.setLevel(logging.ERROR)
    with caplog.at_level(logging.DEBUG):  # the root logger listens to everything
        read_calibration(Calibration(source=str(with_text_only)))
    assert not [r for r in caplog.records if r.name.startswith("shortlvlm")]
    assert "skipped" not in capsys.readouterr().err
    SHORTLVLM.setLevel(logging.INFO)
    with caplog.at_level(logging.DEBUG):
        read_calibration(Calibration(source=str(with_text_only)))
    assert any("skipped 1 text-only" in r.getMessage() for r in caplog.records)  # the same call, heard again


def encode_some(processor, model):
    samples = read_calibration(Calibration(num_samples=4), "toy").samples
    return encode_calibration(list(samples), processor, get_adapter(model), batch_size=2)


def test_progress_bars_follow_the_logger_level_and_the_context_switch(capsys, restore_level):
    model, processor = load("toy")
    capsys.readouterr()
    encode_some(processor, model)
    assert "encode" in capsys.readouterr().err  # INFO (the default): the bar is drawn
    SHORTLVLM.setLevel(logging.WARNING)
    assert not log.bars_enabled()
    encode_some(processor, model)
    assert capsys.readouterr().err == ""
    SHORTLVLM.setLevel(logging.INFO)
    with log.progress_bars(False):
        assert not log.bars_enabled()
        encode_some(processor, model)
    assert capsys.readouterr().err == "" and log.bars_enabled()  # off inside the block only


def test_cli_logging_prints_levels_with_one_prefix_and_restores_the_logger(capsys):
    before = (SHORTLVLM.level, SHORTLVLM.propagate, list(SHORTLVLM.handlers))
    child = logging.getLogger("shortlvlm.somewhere")
    with log.cli_logging():
        child.info("plain line")
        child.warning("look out")
        child.debug("hidden")
    with log.cli_logging(1):
        child.debug("shown")
    with log.cli_logging(-1):
        child.info("not shown")
        assert not log.bars_enabled()
        child.error("bad")
    err = capsys.readouterr().err.splitlines()
    assert err == ["plain line", "shortlvlm: warning: look out", "shortlvlm: debug: shown", "shortlvlm: error: bad"]
    assert (SHORTLVLM.level, SHORTLVLM.propagate, list(SHORTLVLM.handlers)) == before


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_quiet_keeps_results_and_drops_progress_lines(tmp_path, capsys, where):
    argv = ["compare", "toy", "--methods", "last", "--ratios", "0.1", "--limit", "4", "--out", str(tmp_path / "q")]
    assert main(argv) == 0
    loud = capsys.readouterr()
    assert "evaluating the unpruned model ..." in loud.err and "| last |" in loud.out
    quiet = ["--quiet", *argv] if where == "before" else [*argv, "--quiet", "--overwrite"]
    if where == "before":
        quiet.append("--overwrite")
    assert main(quiet) == 0
    silent = capsys.readouterr()
    assert silent.err == "" and "| last |" in silent.out
