"""The README's Python example of the method runs as written, on the bundled toy."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_readme.py runs this block on the bundled toy -->"


def readme_snippet() -> str:
    text = README.read_text()
    assert MARKER in text, "the README's tested Python block lost its marker"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    return match.group(1)


def test_the_readme_method_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it saves a checkpoint into the working directory
    snippet = readme_snippet()
    for call in ("shortlvlm.score(", "shortlvlm.prune(", "plan=plan", "BlockInfluence()"):
        assert call in snippet  # score once, prune many from the plan, compare with a baseline
    exec(compile(snippet, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "removal order: [" in printed
    removed = re.findall(r"short-lvlm (\d+)%: removed (\[[\d, ]+\]), accuracy ([\d.]+)", printed)
    assert [(ratio, len(json.loads(layers))) for ratio, layers, _ in removed] == [("20", 3), ("30", 5)]
    assert re.search(r"block-influence 30%: removed \[[\d, ]+\], accuracy [\d.]+", printed)
    assert (tmp_path / "toy-block-influence-30" / "pruning_plan.json").is_file()
