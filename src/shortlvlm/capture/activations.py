"""Where the layer-by-layer pass keeps each batch's activations between two layers: CPU memory or files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from shortlvlm.capture.recording import Recording


class ActivationStore:
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

    def keep_inputs(self, batch: int, recording: Recording) -> None:
        """With a folder, move a batch's recorded layer-input tensors there (out of CPU memory)."""
        if self.folder is None or not recording.tensors:
            return
        from safetensors.torch import save_file

        # clone: recorded CPU tensors may share storage (cos/sin views), which safetensors refuses
        save_file({str(i): t.clone(memory_format=torch.contiguous_format) for i, t in enumerate(recording.tensors)},
                  self.folder / f"{batch}-inputs.safetensors")
        recording.spilled, recording.tensors = len(recording.tensors), []

    def inputs_of(self, batch: int, recording: Recording) -> list[torch.Tensor]:
        if not recording.spilled:
            return recording.tensors
        from safetensors.torch import load_file

        loaded = load_file(self.folder / f"{batch}-inputs.safetensors")
        return [loaded[str(i)] for i in range(recording.spilled)]

    def close(self) -> None:
        self.memory.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


