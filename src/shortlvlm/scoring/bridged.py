"""`tis-loss`'s loss passes with each trial's least-squares bridge applied (`TISLoss.bridge`, docs/design.md §2.5.1).

The recipe `tis-loss+lstsq` bridges every removed run after the layers are chosen, but the bare loss
passes that choose them cannot tell a layer whose gap a linear map of the writer below closes from
one whose gap it cannot close (smol-llava's layer 12: its bridge leaves 117% of the gap). Here
every trial is measured as the pruned model will be: removing pool layer l from the current model
(the chosen layers bypassed, their bridges applied) also replaces the output A of the MLP writer
of w, the kept layer directly below l, by A T_l, where T_l is the least-squares bridge
(`compensation/lstsq.py`, zero prior, the given ridge, every real token) fitted on the *current*
model: A = w's writer output, the target the stream leaving l minus the stream entering it plus A.
Picking l composes T_l into w's map (a writer below several successive picks carries their
product); the maps act at run time through forward hooks, so no weight is edited.

Each greedy step (and the one-shot step) starts with one pass over the current model from the
input that accumulates A^T A and A^T Y (float64, CPU) for every remaining pool layer at once and
keeps the streams entering the pool layers and their writers; a trial then starts at its writer w
from the kept stream (one layer lower than an unbridged trial), so the extra cost is one full pass
per step (n passes for n layers removed) and d x d x 2 float64 values per pool layer
(576: 5.3 MB for smol-llava; 4096: 268 MB for a 7B model). The bridges the plan finally gets are
fitted again by the recipe's compensation, run by run from the bottom: the ones here only rank.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.capture.hooks import hidden_of, layer_input
from shortlvlm.compensation.lstsq import solve_bridge
from shortlvlm.compensation.runs import writer_names
from shortlvlm.scoring.base import ScoringContext
from shortlvlm.scoring.loss import Resume, answer_loss_streams


def writer_below(layer: int, chosen: set[int] | list[int]) -> int | None:
    """The kept layer directly below `layer` once `chosen` are removed (None: everything below goes)."""
    below = [index for index in range(layer) if index not in chosen]
    return below[-1] if below else None


@contextlib.contextmanager
def applied_maps(writers: dict[int, nn.Module], maps: dict[int, torch.Tensor]) -> Iterator[None]:
    """While inside, writer w's output A becomes A @ maps[w] (computed in float64, cast back)."""

    def hook(module, args, output, transform):
        mapped = output.double() @ transform.to(device=output.device)
        return mapped.to(output.dtype)

    handles = [writers[layer].register_forward_hook(functools.partial(hook, transform=transform))
               for layer, transform in maps.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class BridgedPool:
    """Loss passes of `tis-loss` over its pool, each trial bridged (see the module docstring).

    Same interface as tis_loss._PoolStreams: `step(chosen, bar)` before each greedy step, `loss(chosen,
    layer, bar)` per trial, `removed(layer)` once a layer is picked.
    """

    def __init__(self, context: ScoringContext, pool: list[int], *, enabled: bool, ridge: float):
        # the MLP writer the maps act on; CompensationError where a norm follows it (Gemma 3)
        (name,) = writer_names(context.adapter, "mlp", "tis-loss's bridged loss passes (--loss-bridge)")
        self.context, self.pool, self.enabled, self.ridge = context, sorted(pool), enabled, ridge
        self.writers = {index: context.adapter.residual_writers(index)[name]
                        for index in range(context.adapter.num_layers)}
        # the pool layers and every layer that can become a pool layer's writer (l - 1, and by induction
        # the writers of removed pool layers): the streams a trial starts from
        self.tracked = sorted(set(self.pool) | {layer - 1 for layer in self.pool if layer > 0})
        self.maps: dict[int, torch.Tensor] = {}  # writer layer -> its composed bridge (float64, CPU)
        self.fitted: dict[int, torch.Tensor] = {}  # pool layer -> its bridge on the current model
        self.current: dict[int, list[torch.Tensor]] = {}  # tracked layer -> streams entering it, per batch
        self.chosen: list[int] = []
        self.layers_run = 0
        self.fit_passes = 0

    def step(self, chosen: list[int], bar) -> None:
        """One pass over the current model: every remaining pool layer's bridge, and the streams trials start
        from."""
        self.chosen = list(chosen)
        candidates = [la for la in self.pool if la not in chosen and writer_below(la, chosen) is not None]
        dim = self.context.adapter.config.get_text_config().hidden_size
        ata = {la: torch.zeros(dim, dim, dtype=torch.float64) for la in candidates}
        aty = {la: torch.zeros(dim, dim, dtype=torch.float64) for la in candidates}
        below = {la: writer_below(la, chosen) for la in candidates}
        state: dict = {}

        def on_batch(number: int, batch: CalibrationBatch) -> None:
            state.clear()
            state["mask"] = batch.valid

        def keep_writer(module, args, output, layer):
            state[layer] = output

        def accumulate(module, args, kwargs, output, layer):
            mask = state["mask"]
            written = state[below[layer]][mask].double()
            entering = layer_input(args, kwargs)[mask].double()
            target = hidden_of(output)[mask].double() - entering + written
            ata[layer] += (written.T @ written).cpu()
            aty[layer] += (written.T @ target).cpu()

        with contextlib.ExitStack() as stack:
            stack.enter_context(applied_maps(self.writers, self.maps))  # first: the hooks below see mapped outputs
            for layer in set(below.values()):
                handle = self.writers[layer].register_forward_hook(functools.partial(keep_writer, layer=layer))
                stack.callback(handle.remove)
            for layer in candidates:
                handle = self.context.adapter.layers[layer].register_forward_hook(
                    functools.partial(accumulate, layer=layer), with_kwargs=True)
                stack.callback(handle.remove)
            record = [la for la in self.tracked if la not in chosen] if self.enabled else ()
            _, recorded = answer_loss_streams(self.context, chosen, record=record, progress_bar=bar,
                                              on_batch=on_batch)
        self.fit_passes += 1
        self.layers_run += sum(1 for la in range(self.context.adapter.num_layers) if la not in chosen)
        self.current = recorded
        self.fitted = {la: solve_bridge(ata[la], aty[la], self.ridge) for la in candidates
                       if torch.trace(ata[la]) > 0}

    def maps_with(self, chosen: list[int], layer: int) -> dict[int, torch.Tensor]:
        """The writers' maps of the current model with `layer` removed too (its bridge composed in)."""
        maps = {la: t for la, t in self.maps.items() if la != layer}
        writer = writer_below(layer, chosen)
        if writer is not None and layer in self.fitted:
            maps[writer] = maps[writer] @ self.fitted[layer] if writer in maps else self.fitted[layer]
        return maps

    def loss(self, chosen: list[int], layer: int, bar) -> float:
        """Answer loss with `chosen` and `layer` bypassed and every bridge applied, started at `layer`'s writer."""
        if list(chosen) != self.chosen:
            raise RuntimeError("BridgedPool.step must run on the current chosen layers before their trials")
        writer = writer_below(layer, chosen)
        start = writer if writer is not None else layer
        resume = Resume(start, self.current[start]) if self.enabled and start in self.current else None
        with applied_maps(self.writers, self.maps_with(chosen, layer)):
            loss, _ = answer_loss_streams(self.context, [*chosen, layer], resume=resume, progress_bar=bar)
        removed = {*chosen, layer}
        first = resume.layer if resume is not None else 0
        self.layers_run += sum(1 for la in range(first, self.context.adapter.num_layers) if la not in removed)
        return loss

    def removed(self, layer: int, *, measured: bool = True) -> None:
        """`layer` joins the chosen ones: its bridge joins its writer's map, and a map it carried goes with it."""
        self.maps = self.maps_with(self.chosen, layer)
        self.chosen = [*self.chosen, layer]
