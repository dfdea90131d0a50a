"""Where a model comes from: a name meant as a local folder that does not exist is refused before the Hub is asked."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from shortlvlm.cli import main
from shortlvlm.io.source import looks_like_path


@pytest.mark.parametrize("name", ["./my-local-model", "../models/llava", "/no/such/model", "~/models/llava",
                                  "models/llava", "a/b/c", "my-model/"])
def test_names_meant_as_folders_look_like_paths(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # "models/llava": its first part is a folder here
    assert looks_like_path(name)


@pytest.mark.parametrize("name", ["llava-hf/llava-1.5-7b-hf", "gpt2", "HuggingFaceTB/SmolVLM-256M-Instruct"])
def test_hub_ids_do_not_look_like_paths(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path(name)


@pytest.mark.parametrize("command", [["prune", "--layers", "1"], ["score", "--method", "last"],
                                     ["eval", "--bench", "shapes"], ["bench"]])
def test_a_missing_local_folder_is_one_line_without_asking_the_hub(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked")
    monkeypatch.setattr(AutoConfig, "from_pretrained", no_hub)
    for name in ("./my-local-model", "models/my-model", str(tmp_path / "gone")):
        code = main([command[0], name, *command[1:], "--out", str(tmp_path / "out" / "x.json")])
        err = capsys.readouterr().err
        assert code == 2 and err == f"shortlvlm: error: no such directory: {name} (MODEL is a local model folder or " \
                                    "a hub id such as owner/name)\n"
    assert not (tmp_path / "out").exists()
