"""Find the decoder layers and residual writers of an unknown model by its structure."""

from __future__ import annotations

from torch import nn

from shortlvlm.errors import UnsupportedModelError
from shortlvlm.models.base import ArchitectureSpec

# Leaf names that transformer codebases use for projections writing into the residual stream.
WRITER_NAMES = ("o_proj", "out_proj", "c_proj", "down_proj", "dense_4h_to_h", "fc2", "w2", "wo")


def _hidden_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("hidden_size", "n_embd", "d_model"):
        if isinstance(getattr(text, attr, None), int):
            return getattr(text, attr)
    return None


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "num_hidden_layers", None)
    return value if isinstance(value, int) else None


def _is_block_list(module: nn.Module) -> bool:
    """A ModuleList of >= 2 same-typed blocks that are not themselves Linear but contain Linears."""
    if not isinstance(module, nn.ModuleList) or len(module) < 2:
        return False
    first_type = type(module[0])
    if isinstance(module[0], nn.Linear) or any(type(m) is not first_type for m in module):
        return False
    return any(isinstance(m, nn.Linear) for m in module[0].modules())


def find_decoder_layers(model: nn.Module) -> str:
    """Dotted path of the language model's decoder layer list.

    Among ModuleLists of identical blocks, prefer those whose length equals the text config's
    num_hidden_layers, then the one with the most parameters (the language model dwarfs the
    vision tower in every LVLM we know).
    """
    candidates = [(name, mod) for name, mod in model.named_modules() if name and _is_block_list(mod)]
    if not candidates:
        raise UnsupportedModelError(
            f"found no list of decoder blocks in {type(model).__name__}; pass --layers-path"
        )
    expected = _num_layers(model)
    matching = [c for c in candidates if len(c[1]) == expected]
    pool = matching or candidates
    name, _ = max(pool, key=lambda c: sum(p.numel() for p in c[1].parameters()))
    return name


def find_residual_writers(block: nn.Module, hidden_size: int | None) -> tuple[str, ...]:
    """Names (relative to a block) of Linears that project back to the residual width."""
    writers = []
    for name, mod in block.named_modules():
        if not isinstance(mod, nn.Linear) or name.rpartition(".")[2] not in WRITER_NAMES:
            continue
        if hidden_size is None or mod.out_features == hidden_size:
            writers.append(name)
    if not writers:
        raise UnsupportedModelError(
            f"found no residual-writing projection in {type(block).__name__} (looked for "
            f"{', '.join(WRITER_NAMES)}); pass --writers, e.g. --writers attn.c_proj,mlp.c_proj"
        )
    return tuple(writers)


def detect_spec(
    model: nn.Module, layers_path: str | None = None, writers: tuple[str, ...] | None = None
) -> ArchitectureSpec:
    """A spec for `model` inferred from its module tree; explicit layers_path/writers win."""
    path = layers_path or find_decoder_layers(model)
    try:
        layers = model.get_submodule(path)
    except AttributeError as err:
        raise UnsupportedModelError(f"{type(model).__name__} has no submodule '{path}'") from err
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UnsupportedModelError(f"'{path}' in {type(model).__name__} is not a non-empty nn.ModuleList")
    return ArchitectureSpec(
        name=f"generic ({type(model).__name__})",
        model_classes=(type(model).__name__,),
        layers_path=path,
        residual_writers=writers or find_residual_writers(layers[0], _hidden_size(model)),
        notes="detected by structure",
    )
