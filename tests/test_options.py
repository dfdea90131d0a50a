"""Options objects: one field declaration is the API default, the docstring, the CLI flag and the plan's record."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import shortlvlm
from shortlvlm.cli.main import build_parser
from shortlvlm.compensation import COMPENSATIONS, SCP, LstSq
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.errors import ShortLVLMError
from shortlvlm.importance import TIS
from shortlvlm.io.placement import Layerwise
from shortlvlm.jobs.source import Architecture, Loading
from shortlvlm.options import Options, flag_of, nested_options
from shortlvlm.scoring import SCORERS, TISCosine, scorer_from_dict, scorer_to_dict

# prune shows all flags
OPTIONS = [TIS, *COMPENSATIONS.values(), Calibration, Layerwise, Loading, Architecture, *SCORERS.values()]


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def flagged(cls) -> list[tuple[dataclasses.Field, str]]:
    nested = nested_options(cls)
    return [(f, flag_of(cls, f)) for f in dataclasses.fields(cls) if flag_of(cls, f) and f.name not in nested]


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_every_field_has_help_a_default_and_its_line_in_the_docstring(cls):
    assert issubclass(cls, Options) and dataclasses.is_dataclass(cls)
    instance = cls()  # every field has a default
    for field in dataclasses.fields(cls):
        assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help"
        assert f"    {field.name} = " in cls.__doc__ and field.metadata["help"] in cls.__doc__
    fields = dataclasses.fields(cls)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(instance, fields[0].name, None)


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_the_cli_flag_carries_the_field_default_and_help(cls):
    actions = {flag: action for action in subparser("prune")._actions for flag in action.option_strings}
    for field, flag in flagged(cls):
        action = actions[flag]
        assert action.default == field.default, flag
        assert action.help.startswith(field.metadata["help"]), flag
        if field.metadata.get("choices"):
            assert list(action.choices) == list(field.metadata["choices"]), flag


def test_every_method_flag_of_score_and_prune_is_an_options_field():
    """The other direction: no method or calibration flag exists that no options field declares."""
    declared = {flag for cls in (*COMPENSATIONS.values(), Calibration, *SCORERS.values())
                for _, flag in _all_flags(cls)}
    for command in ("score", "prune"):
        group = next(g for g in subparser(command)._action_groups if g.title == "method")
        flags = {flag for action in group._group_actions for flag in action.option_strings}
        assert flags - {"--method", "--compensation"} <= declared | {f"--no-{f[2:]}" for f in declared}, command


def _all_flags(cls):
    for field in dataclasses.fields(cls):
        nested = nested_options(cls).get(field.name)
        if flag_of(cls, field) is None:
            continue
        yield from (_all_flags(nested) if nested else [(field, flag_of(cls, field))])


def test_flags_build_the_same_options_the_api_builds():
    from shortlvlm.cli.method import calibration_from_args, method_from_args

    args = subparser("prune").parse_args(["toy", "--ratio", "0.3", "--out", "x", "--tis-top-p", "0.25",
                                          "--tis-layers", "4,8", "--no-tis-skip-template", "--iterative",
                                          "--scp-rank", "4", "--scp-alpha", "fit", "--num-samples", "16"])
    scorer, scp = method_from_args(args, "short-lvlm")
    assert scorer == TISCosine(tis=TIS(top_p=0.25, layers=(4, 8), skip_template=False), iterative=True)
    assert scp == SCP(rank=4, alpha="fit")
    assert calibration_from_args(args) == Calibration(num_samples=16)
    _, none = method_from_args(subparser("prune").parse_args(["toy", "--out", "x", "--method", "tis-cosine"]),
                               "tis-cosine")
    assert none is None  # tis-cosine alone: no compensation unless --compensation scp
    bridged = subparser("prune").parse_args(["toy", "--out", "x", "--method", "sleb", "--compensation", "lstsq",
                                             "--lstsq-ridge", "0.2", "--lstsq-streams", "sequential"])
    assert method_from_args(bridged, "sleb")[1] == LstSq(ridge=0.2, streams="sequential")


@pytest.mark.parametrize("scorer", [TISCosine(tis=TIS(top_p=0.3, layers=[2, 5])), *(cls() for cls in SCORERS.values())],
                         ids=lambda s: s.name)
def test_the_plan_records_each_options_object_under_its_own_field_names(scorer):
    record = scorer_to_dict(scorer)
    assert set(record) == {"name"} | {f.name for f in dataclasses.fields(scorer)}
    assert scorer_from_dict(record) == scorer
    for options in (SCP(alpha="fit", tis=TIS(tokens="all")), LstSq(ridge=0.5, tokens="important"),
                    Calibration(source="c.jsonl", num_samples=4)):
        assert set(options.to_dict()) == {f.name for f in dataclasses.fields(options)}
        assert type(options).from_dict(options.to_dict()) == options


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TIS(top_p=1.5), r"TIS\.top_p \(--tis-top-p\) must be in \(0, 1\], got 1\.5"),
    (lambda: TIS(layers="some"), r"TIS\.layers \(--tis-layers\) must be 'all' or a list of layer indices"),
    (lambda: SCP(rank=0), r"SCP\.rank \(--scp-rank\) must be a positive integer, got 0"),
    (lambda: SCP(writers="qkv"), r"SCP\.writers \(--scp-writers\) must be one of mlp, attn, both"),
    (lambda: Calibration(batch_size=0), r"Calibration\.batch_size \(--batch-size\) must be a positive integer"),
    (lambda: shortlvlm.TaylorPlus(keep_first=-1), r"TaylorPlus\.keep_first must be a non-negative integer"),
    (lambda: TIS.from_dict({"top_p": 0.5, "colour": "red"}), r"unknown TIS option\(s\): colour"),
])
def test_a_bad_value_is_refused_when_the_object_is_made_naming_field_and_flag(make, message):
    with pytest.raises(ShortLVLMError, match=message):
        make()


def test_api_docstrings_point_at_the_options():
    assert "Options:" in shortlvlm.SCP.__doc__ and "rank = 8:" in shortlvlm.SCP.__doc__
    assert "top_p = 0.5:" in shortlvlm.TIS.__doc__
    for function in (shortlvlm.prune, shortlvlm.score):
        assert "TISLoss()" in function.__doc__
