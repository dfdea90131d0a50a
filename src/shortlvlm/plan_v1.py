"""Plans of format 1 (before options objects): every option flat in `params`, converted on reading.

Format 1 kept the scorer's name as `params.scorer` and its options beside the results
(`tis_top_p`, `tis_layers`, `tis_joint`, `tis_skip_template`, `tokens`, `iterative`, `seed`, ...),
and SCP's as `scp_rank`, `scp_alpha`, `scp_writers`, `scp_tokens`, `scp_normalize`. SCP measured on
the scorer's TIS settings (tis-cosine) or the defaults; a missing `tis_skip_template` means the
default, as the code that read these plans assumed.
"""

from __future__ import annotations

# Format-1 params key -> path in the scorer's options, per scorer.
_TIS = {"tokens": ("tis", "tokens"), "tis_top_p": ("tis", "top_p"), "tis_layers": ("tis", "layers"),
        "tis_joint": ("tis", "joint"), "tis_skip_template": ("tis", "skip_template")}
SCORER_KEYS = {
    "tis-cosine": {**_TIS, "iterative": ("iterative",)},
    "last": {"keep_final": ("keep_final",)},
    "random": {"seed": ("seed",)},
    "taylor": {"keep_first": ("keep_first",), "keep_last": ("keep_last",)},
}
SCP_KEYS = {"scp_rank": "rank", "scp_alpha": "alpha", "scp_writers": "writers", "scp_normalize": "normalize"}


def upgrade(data: dict) -> dict:
    """`data` in the current format (unchanged if it already is); the caller has checked its field types."""
    if "format" in data:
        return data
    data = {**data, "format": 2}
    params = dict(data.get("params", {}))
    name = params.pop("scorer", None)
    if not isinstance(name, str):
        return {**data, "params": params} if name is None else data
    scorer: dict = {"name": name}
    for key, path in SCORER_KEYS.get(name, {}).items():
        if key in params:
            _put(scorer, path, params.pop(key))
    if any(key in params for key in (*SCP_KEYS, "scp_tokens")):
        scp = {new: params.pop(old) for old, new in SCP_KEYS.items() if old in params}
        tokens = params.pop("scp_tokens", None)
        if tokens is not None:
            tis = dict(scorer.get("tis", {})) if name == "tis-cosine" else {}
            scp["tis"] = {**tis, "tokens": tokens}
        data["scp"] = scp
    return {**data, "scorer": scorer, "params": params}


def _put(target: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
