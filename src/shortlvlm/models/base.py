"""What shortlvlm knows about one architecture (ArchitectureSpec) and its view of one model (Adapter)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from shortlvlm.errors import UnsupportedModelError

if TYPE_CHECKING:
    from PIL import Image

# Config fields that hold one entry per decoder layer in transformers 5.x text configs.
# Any other field whose name ends in "layer_types" is treated the same way (see per_layer_fields).
COMMON_PER_LAYER_FIELDS = ("layer_types", "mlp_layer_types")


@dataclass(frozen=True)
class ChatSample:
    """One calibration sample as a chat encoding sees it: the user's text, the reply, and the image."""

    prompt: str
    answer: str | None
    image: Image.Image  # RGB
    path: Path | None  # the image's own file, if it has one
    write_copy: Callable[[], Path]  # writes the image to a file that lasts as long as the process, returns its path


@dataclass(frozen=True)
class EncodedSample:
    """A sample as the model's own chat code writes it: token ids, the answer's token span, other inputs."""

    input_ids: list[int]
    answer: tuple[int, int] | None  # [start, end) of the answer text's tokens; None without an answer
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # per-sample tensors, stacked into the batch


class ChatEncoding(ABC):
    """How an architecture that ships no transformers processor turns samples into model inputs.

    Its published chat code is the reference: `load` reads the parts that code uses from the checkpoint
    (tokenizer, image processor), `encode` writes one sample the way that code does.
    """

    needs: str = ""  # the checkpoint files the parts come from, named when they are missing

    @abstractmethod
    def load(self, name_or_path: str, hub_kwargs: dict) -> object | None:
        """The parts `encode` uses, or None when the checkpoint lacks them."""

    @abstractmethod
    def encode(self, parts: object, config, sample: ChatSample) -> EncodedSample:
        """One sample's token ids, answer span and other inputs, as the model's chat code writes them."""

    @abstractmethod
    def pad_id(self, parts: object) -> int:
        """The id right padding is written with."""

    @abstractmethod
    def special_ids(self, parts: object) -> set[int]:
        """Ids of template tokens (turn markers, image tags) that statistics leave out."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """Declarative facts about one architecture; algorithms read these, never class names."""

    name: str
    model_classes: tuple[str, ...]
    layers_path: str
    # Attention output first, MLP output last (compensation picks writers by that position).
    residual_writers: tuple[str, ...] = ("self_attn.o_proj", "mlp.down_proj")
    # The attention module inside a decoder layer; None = the parent of the first residual writer.
    attention_path: str | None = None
    # Norm applied to a writer's output before it joins the residual stream (Gemma's sandwich
    # norms): a weight edit on such a writer is not a linear edit of the residual update.
    writer_post_norms: dict[str, str] = field(default_factory=dict)
    image_token_attrs: tuple[str, ...] = ("image_token_id", "image_token_index")
    # For layouts that mark images by spans rather than one placeholder id: (config, input_ids) -> mask.
    image_mask: Callable[[object, torch.Tensor], torch.Tensor] | None = None
    # Extra model inputs the processor produces that mark modalities (e.g. token_type_ids).
    modality_inputs: tuple[str, ...] = ()
    # For layouts whose layers see another sequence than input_ids (mPLUG-Owl2 expands each image
    # placeholder inside forward): (config, input_ids) -> [B, T'] input position behind each layer position.
    layer_positions: Callable[[object, torch.Tensor], torch.Tensor] | None = None
    # Where the attention module's output tuple holds the probabilities, and the keyword arguments its
    # call needs to return them (remote-code attention returns them only when asked, at its own index).
    attention_probs_index: int = 1
    attention_call_kwargs: dict[str, object] = field(default_factory=dict)
    # Whether decoder layers return a tuple whose first entry is the hidden states (the caller indexes
    # [0]) rather than the tensor itself (transformers 5.x).
    layer_returns_tuple: bool = False
    per_layer_fields: tuple[str, ...] = COMMON_PER_LAYER_FIELDS
    # Fields that count a prefix of layers (Qwen2's max_window_layers: "the first N layers use
    # full attention"); after a cut they become the number of kept layers inside that prefix.
    layer_prefix_fields: tuple[str, ...] = ()
    # Returns {layer index: reason} for layers that must not be removed, given the model config.
    protected_layers: Callable[[object], dict[int, str]] | None = None
    # For layouts with no transformers processor (remote code): how their own chat code encodes a sample.
    chat_encoding: ChatEncoding | None = None
    remote_code: bool = False
    notes: str = ""


class Adapter:
    """An architecture spec bound to a loaded model: finds its layers, writers and image tokens."""

    def __init__(self, spec: ArchitectureSpec, model: nn.Module):
        self.spec = spec
        self.model = model
        try:
            layers = model.get_submodule(spec.layers_path)
        except AttributeError as err:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no submodule '{spec.layers_path}' "
                f"(expected by the {spec.name} adapter); pass --layers-path with the dotted path "
                "of its decoder layer list"
            ) from err
        if not isinstance(layers, nn.ModuleList):
            raise UnsupportedModelError(
                f"'{spec.layers_path}' in {type(model).__name__} is a {type(layers).__name__}, "
                "not an nn.ModuleList of decoder layers; pass --layers-path to point at one"
            )
        self.layers_path = spec.layers_path
        # How each decoder layer class returns its output, learned by capture.hooks.bypass_layers: state of
        # this model's adapter, so nothing learned on one model is used on another.
        self.output_forms: dict[tuple, object] = {}

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layer list of the language model."""
        return self.model.get_submodule(self.layers_path)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def config(self):
        """The model's top-level config."""
        return self.model.config

    def text_configs(self) -> list:
        """Every distinct config object that describes the language model's layers."""
        configs = []
        candidates = [self.config.get_text_config()]
        parent_path = self.layers_path.rpartition(".")[0]
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        if getattr(parent, "config", None) is not None:
            candidates.append(parent.config)
        for cfg in candidates:
            if all(cfg is not seen for seen in configs):
                configs.append(cfg)
        return configs

    def per_layer_fields(self, config) -> list[str]:
        """Names of list-valued config fields that hold one entry per decoder layer."""
        names = set(self.spec.per_layer_fields)
        names.update(k for k in vars(config) if k.endswith("layer_types"))
        return sorted(k for k in names if isinstance(getattr(config, k, None), (list, tuple)))

    def residual_writers(self, index: int) -> dict[str, nn.Linear]:
        """The linear layers of decoder layer `index` whose outputs are added to the residual stream."""
        layer = self.layers[index]
        writers = {}
        for name in self.spec.residual_writers:
            try:
                writers[name] = layer.get_submodule(name)
            except AttributeError as err:
                raise UnsupportedModelError(
                    f"decoder layer {index} of {type(self.model).__name__} has no '{name}'; "
                    "pass --writers with the dotted names of its residual-writing projections"
                ) from err
        return writers

    def attention_module(self, index: int) -> nn.Module:
        """The self-attention module of decoder layer `index` (its forward returns the probabilities)."""
        path = self.spec.attention_path or self.spec.residual_writers[0].rpartition(".")[0]
        try:
            return self.layers[index].get_submodule(path)
        except AttributeError as err:
            raise UnsupportedModelError(
                f"decoder layer {index} of {type(self.model).__name__} has no attention module '{path}'"
            ) from err

    def image_token_id(self) -> int | None:
        """The placeholder token id that marks image positions in input_ids, if the config names one."""
        for cfg in (self.config, self.config.get_text_config()):
            for attr in self.spec.image_token_attrs:
                value = getattr(cfg, attr, None)
                if isinstance(value, int):
                    return value
        return None

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of image-token positions in a batch of input_ids."""
        if self.spec.image_mask is not None:
            return self.spec.image_mask(self.config, input_ids)
        token_id = self.image_token_id()
        if token_id is None:
            raise UnsupportedModelError(
                f"cannot tell image tokens apart for {type(self.model).__name__}: its config has none of "
                f"{', '.join(self.spec.image_token_attrs)}; pass --image-token-id"
            )
        return input_ids == token_id

    def layer_positions(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """[B, T'] input position behind each position the decoder layers see; None when they see input_ids."""
        if self.spec.layer_positions is None:
            return None
        return self.spec.layer_positions(self.config, input_ids)

    def protected_layers(self) -> dict[int, str]:
        """Layers that must not be removed, with the reason."""
        if self.spec.protected_layers is None:
            return {}
        return self.spec.protected_layers(self.config)
