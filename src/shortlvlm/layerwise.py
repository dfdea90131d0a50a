"""Layer-by-layer calibration (DESIGN §5): one decoder layer in memory at a time, every batch through it.

The whole-model capture pass runs batch by batch, so every decoder layer must be resident (or be
reloaded from offload for every batch). Here the loop is turned around, as in llm-compressor's
sequential pipeline:
1. a prefix pass per batch runs the model with every decoder layer stubbed out (no layer weights
   are touched) and records what the model hands each layer: the hidden states entering layer 0
   and each layer's other arguments (attention mask, position embeddings, ...);
2. then for each layer: its weights are loaded once (from accelerate's weights map: for a model
   from `load(..., layerwise=True)` that is the checkpoint's own safetensors), every batch is run
   through it, its output replaces the batch's stored activations (CPU memory or a folder), and
   the weights are released.
Collectors see the same calls with the same tensors as in the whole-model pass, only in layer-major
order; each keeps one copy of its per-batch state per batch (`Collector.batch_state`), swapped in
before a batch's call. Results are identical to the whole-model pass (tested), peak memory on the
execution device is about one layer plus one batch's activations.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from shortlvlm.capture import CaptureError, _hidden_of, _layer_input
from shortlvlm.offload import _offload_hook

LAYERWISE_ATTR = "_shortlvlm_layerwise"


@dataclass(frozen=True)
class Layerwise:
    """Options of the layer-by-layer pass: where the activations between layers are kept."""

    activations_dir: str | None = None  # None: CPU memory; else a folder (a scratch subfolder is used)


def use_layerwise(model: nn.Module, options: Layerwise | None = Layerwise()) -> None:
    """Make every capture pass over `model` run layer by layer (None: back to whole-model passes)."""
    setattr(model, LAYERWISE_ATTR, options)


def layerwise_options(model: nn.Module) -> Layerwise | None:
    """The layer-by-layer options set on `model` (by `load(..., layerwise=True)` or use_layerwise)."""
    return getattr(model, LAYERWISE_ATTR, None)


class _StopForward(Exception):
    """Raised by the last stub to end a prefix pass (the final norm and LM head are not needed)."""


@dataclass
class _Ref:
    """A placeholder for the index-th tensor of a recorded batch."""

    index: int


class _Recording:
    """One batch's inputs to every layer, tensors deduplicated (the layers share one mask object)."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []
        self.layers: dict[int, tuple[bool, tuple, dict]] = {}  # layer -> (hidden positional?, args, kwargs)
        self.deltas: dict[int, torch.Tensor] = {}  # layer -> what the model adds to its output (CPU)
        self.spilled = 0  # how many tensors were moved to the activation folder
        self._ids: dict[int, int] = {}
        self._originals: list[torch.Tensor] = []  # keeps ids unique while recording

    def pack(self, value):
        if torch.is_tensor(value):
            if id(value) not in self._ids:
                self._ids[id(value)] = len(self.tensors)
                self._originals.append(value)
                self.tensors.append(value.detach().to("cpu"))
            return _Ref(self._ids[id(value)])
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(self.pack(v) for v in value)
        if isinstance(value, list):
            return [self.pack(v) for v in value]
        if isinstance(value, dict):
            return {k: self.pack(v) for k, v in value.items()}
        return value

    def unpack(self, value, device: torch.device, tensors: list[torch.Tensor] | None = None):
        tensors = self.tensors if tensors is None else tensors
        if isinstance(value, _Ref):
            return tensors[value.index].to(device)
        if isinstance(value, tuple):
            return tuple(self.unpack(v, device, tensors) for v in value)
        if isinstance(value, list):
            return [self.unpack(v, device, tensors) for v in value]
        if isinstance(value, dict):
            return {k: self.unpack(v, device, tensors) for k, v in value.items()}
        return value

    def done(self) -> None:
        self._ids.clear()
        self._originals.clear()


def _to(value, device: torch.device):
    """Tensors (and objects with .to, such as CalibrationBatch) inside dicts/lists/tuples moved to device."""
    if torch.is_tensor(value) or (hasattr(value, "to") and not isinstance(value, nn.Module)):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


class _ActivationStore:
    """Each batch's residual stream between two layers and its recorded layer inputs (masks, position
    embeddings), in CPU memory or as safetensors files."""

    def __init__(self, folder: str | None):
        self.memory: dict[int, torch.Tensor] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="shortlvlm-activations-", dir=folder)) if folder else None

    def put(self, batch: int, hidden: torch.Tensor) -> None:
        hidden = hidden.detach().to("cpu")
        if self.folder is None:
            self.memory[batch] = hidden
            return
        from safetensors.torch import save_file

        save_file({"hidden": hidden.contiguous()}, self.folder / f"{batch}.safetensors")

    def get(self, batch: int, device: torch.device) -> torch.Tensor:
        if self.folder is None:
            return self.memory[batch].to(device)
        from safetensors.torch import load_file

        return load_file(self.folder / f"{batch}.safetensors")["hidden"].to(device)

    def keep_inputs(self, batch: int, recording: _Recording) -> None:
        """With a folder, move a batch's recorded layer-input tensors there (out of CPU memory)."""
        if self.folder is None or not recording.tensors:
            return
        from safetensors.torch import save_file

        # clone: recorded CPU tensors may share storage (cos/sin views), which safetensors refuses
        save_file({str(i): t.clone(memory_format=torch.contiguous_format) for i, t in enumerate(recording.tensors)},
                  self.folder / f"{batch}-inputs.safetensors")
        recording.spilled, recording.tensors = len(recording.tensors), []

    def inputs_of(self, batch: int, recording: _Recording) -> list[torch.Tensor]:
        if not recording.spilled:
            return recording.tensors
        from safetensors.torch import load_file

        loaded = load_file(self.folder / f"{batch}-inputs.safetensors")
        return [loaded[str(i)] for i in range(recording.spilled)]

    def close(self) -> None:
        self.memory.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def onloaded(module: nn.Module) -> Iterator[None]:
    """Load the accelerate-offloaded weights inside `module` once and keep them until the block ends.

    Offload hooks normally load a module's weights before each call and drop them after; here each
    hook loads them once (its own pre_forward, so tied weights and dtypes are handled as accelerate
    does) and is told not to offload until the block ends. Modules without offload are untouched.
    """
    hooked = [(sub, hook) for sub in module.modules() if (hook := _offload_hook(sub)) is not None]
    loaded = []
    try:
        for sub, hook in hooked:
            hook.pre_forward(sub)
            hook.offload = False
            loaded.append((sub, hook))
        yield
    finally:
        for sub, hook in loaded:
            hook.offload = True
            hook.post_forward(sub, None)


@contextlib.contextmanager
def _stubbed_layers(layers: nn.ModuleList, record) -> Iterator[None]:
    """Replace each layer's forward (accelerate's wrapper included) by `record(index, args, kwargs)`."""
    saved = []
    for index, layer in enumerate(layers):
        saved.append((layer, layer.__dict__.get("forward")))

        def stub(*args, _index=index, **kwargs):
            return record(_index, args, kwargs)

        layer.forward = stub
    try:
        yield
    finally:
        for layer, forward in saved:
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward


def _refuse_replay(model: nn.Module, index: int, why: str) -> CaptureError:
    return CaptureError(
        f"{type(model).__name__} {why} between decoder layers {index - 1} and {index}, which the layer-by-layer "
        "pass cannot replay; run without --layerwise (accelerate offload, --device-map auto, also bounds memory)"
    )


def _run_stubbed(model: nn.Module, layers: nn.ModuleList, inputs: dict, record) -> None:
    with _stubbed_layers(layers, record), contextlib.suppress(_StopForward):
        model(**inputs)


def record_layer_inputs(model: nn.Module, layers: nn.ModuleList, inputs: dict,
                        skip: set[int]) -> tuple[torch.Tensor, _Recording]:
    """(hidden states entering layer 0 on CPU, every layer's other inputs) for one batch.

    Each stub returns zeros, so what the next stub receives is whatever the model adds between the
    two layers (Qwen3-VL's deepstack adds visual features after its first layers): kept as that
    layer's `delta` and added to its output in the replay (`check_replay` proves it is additive).
    """
    recording = _Recording()
    seen: dict[str, torch.Tensor] = {}
    last = len(layers) - 1

    def record(index, args, kwargs):
        hidden = _layer_input(args, kwargs)
        if index == 0:
            seen["first"] = hidden.detach().to("cpu")
        elif hidden is not seen["returned"]:
            if hidden.shape != seen["returned"].shape:
                raise _refuse_replay(model, index, "reshapes the hidden states (or its layers return tuples)")
            if torch.count_nonzero(hidden):
                recording.deltas[index - 1] = hidden.detach().to("cpu")
        if index not in skip:  # everything but the hidden states (positional, or the hidden_states keyword)
            rest_kwargs = {k: v for k, v in kwargs.items() if args or k != "hidden_states"}
            recording.layers[index] = (bool(args), recording.pack(args[1:]), recording.pack(rest_kwargs))
        if index == last:
            raise _StopForward
        seen["returned"] = torch.zeros_like(hidden)
        return seen["returned"]

    _run_stubbed(model, layers, inputs, record)
    recording.done()
    if "first" not in seen:
        raise CaptureError("the model's forward pass never reached its first decoder layer")
    return seen["first"], recording


def check_replay(model: nn.Module, layers: nn.ModuleList, inputs: dict, recording: _Recording) -> None:
    """Run the stubs again returning their input: what reaches each layer must equal the previous
    layer's output plus the recorded delta, bit for bit, or the replay would not match the model."""
    seen: dict[str, torch.Tensor] = {}
    last = len(layers) - 1

    def record(index, args, kwargs):
        hidden = _layer_input(args, kwargs)
        if index > 0:
            previous = seen["returned"]
            delta = recording.deltas.get(index - 1)
            expected = previous if delta is None else previous + delta.to(previous.device)
            if hidden.shape != expected.shape or not torch.equal(hidden, expected):
                raise _refuse_replay(model, index, "transforms the hidden states (not by adding a fixed term)")
        if index == last:
            raise _StopForward
        seen["returned"] = hidden
        return hidden

    _run_stubbed(model, layers, inputs, record)


def run_layerwise(
    model: nn.Module,
    layers: nn.ModuleList,
    batches: list,
    collector,
    *,
    device: torch.device,
    skip: set[int],
    options: Layerwise,
    model_inputs,
    on_layer_output,
    attention_hooks,
    desc: str,
    progress: bool,
) -> None:
    """The layer-major capture loop. `on_layer_output(index, hidden_in, hidden_out, batch)` checks each
    result and hands it to the collector; `attention_hooks()` (a context manager) attaches the attention
    hooks for the layer loop only, so the prefix passes feed the collector nothing."""
    if getattr(collector, "batch_state", None) is None:
        raise CaptureError(f"{type(collector).__name__} does not declare its per-batch state (batch_state), "
                           "so it cannot run layer by layer; use a whole-model pass")
    cpu = torch.device("cpu")
    store = _ActivationStore(options.activations_dir)
    recordings: list[_Recording] = []
    states: list[dict | None] = []
    try:
        for number, batch in enumerate(tqdm(batches, desc=f"{desc}: layer inputs", unit="batch",
                                            disable=not progress, leave=False)):
            on_device = batch.to(device)
            hidden, recording = record_layer_inputs(model, layers, model_inputs(on_device), skip)
            if number == 0:
                check_replay(model, layers, model_inputs(on_device), recording)
            store.put(number, hidden)
            store.keep_inputs(number, recording)
            recordings.append(recording)
            collector.begin_batch(on_device)
            states.append(_to(collector.get_batch_state(), cpu))
        steps = [i for i in range(len(layers)) if i not in skip or any(i in r.deltas for r in recordings)]
        with attention_hooks(), tqdm(total=len(steps) * len(batches), desc=f"{desc}: layer by layer", unit="batch",
                                     disable=not progress, leave=False) as bar:
            for index in steps:
                layer = layers[index]
                with onloaded(layer) if index not in skip else contextlib.nullcontext():
                    for number, batch in enumerate(batches):
                        recording = recordings[number]
                        hidden_in = store.get(number, device)
                        hidden_out = hidden_in
                        if index not in skip:
                            collector.set_batch_state(_to(states[number], device))
                            positional, args, kwargs = recording.layers[index]
                            tensors = store.inputs_of(number, recording)
                            args, kwargs = recording.unpack(args, device, tensors), recording.unpack(kwargs, device, tensors)
                            if positional:
                                output = layer(hidden_in, *args, **kwargs)
                            else:
                                output = layer(*args, hidden_states=hidden_in, **kwargs)
                            hidden_out = _hidden_of(output)
                            on_layer_output(index, hidden_in, hidden_out, batch)
                            states[number] = _to(collector.get_batch_state(), cpu)
                        if index in recording.deltas:
                            hidden_out = hidden_out + recording.deltas[index].to(device)
                        store.put(number, hidden_out)
                        bar.update()
        for number in range(len(batches)):
            collector.set_batch_state(_to(states[number], device))
            states[number] = None
            collector.end_batch()
    finally:
        store.close()


def layer_device_map(model: nn.Module, list_paths: list[str], device: str | torch.device,
                     on_disk: tuple[str, ...] = ()) -> dict[str, str]:
    """An accelerate device map: each element of the given layer lists, and the modules `on_disk`, on
    "disk" (read from the checkpoint's safetensors when used), every other module on `device`."""
    device = str(device)
    mapping: dict[str, str] = {}
    targets = [*list_paths, *on_disk]

    def walk(module: nn.Module, prefix: str) -> None:
        for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            mapping[f"{prefix}{name}"] = device  # e.g. LLaVA-NeXT's image_newline
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path in list_paths:
                mapping.update({f"{path}.{i}": "disk" for i in range(len(child))})
            elif path in on_disk:
                mapping[path] = "disk"
            elif any(target.startswith(path + ".") for target in targets):
                walk(child, path + ".")
            else:
                mapping[path] = device
    walk(model, "")
    return mapping


def streamed_parts(model: nn.Module, decoder_layers: str) -> tuple[list[str], tuple[str, ...]]:
    """What a layer-by-layer load leaves on disk: every top-level ModuleList of blocks (the decoder
    layers, which the capture pass reads once each, and e.g. the vision encoder's layers, which
    accelerate reads for each prefix pass) and an untied LM head (capture never uses it)."""
    lists = [path for path, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) > 1 and any(p.numel() for p in module.parameters())]
    lists = [path for path in lists if not any(path.startswith(other + ".") for other in lists)]
    if decoder_layers not in lists:
        lists.append(decoder_layers)
    return lists, untied_head(model)


def untied_head(model: nn.Module) -> tuple[str, ...]:
    """The LM head's module path, unless it shares its weight with the input embeddings (then ())."""
    try:
        head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return ()
    if head is None or head.weight is getattr(embeddings, "weight", None):
        return ()
    return tuple(name for name, module in model.named_modules() if module is head)[:1]


def offloaded_layer_lists(model: nn.Module) -> list[str]:
    """Paths of the ModuleLists in `model` whose elements keep weights in accelerate's offload."""
    found = []
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                any(_offload_hook(sub) is not None for sub in element.modules()) for element in module):
            found.append(path)
    return found


def default_execution_device() -> torch.device:
    """Where the layer-by-layer pass computes: the first GPU if there is one, else the CPU."""
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
