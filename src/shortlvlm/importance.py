"""Token Importance Scores (docs/design.md §2.1): which vision-language tokens a layer should be judged on.

For one sample and one probe layer, with A the head-averaged attention probabilities (rows are
queries) and only the entries the layer's own mask allows (causal entries for a causal LM):
- a visual token j scores the mean of the attention it receives from visual queries (visual
  self-attention block) and from text queries (visual-textual cross-attention block);
- a text token j scores the mean of the attention it receives from text queries (textual
  self-attention block) and the attention it pays to the image, averaged over image tokens
  (cross-attention block).
"Receives from X" is the mean over the allowed queries in X, so a token is not favoured just
for sitting early in the sequence. A component with no allowed entries is left out of the mean.
Scores are averaged over the probe layers; the important tokens are the top `top_p` fraction of
each modality per sample (or of both together, `joint=True`).

The shared chat template (`template_length`: the leading tokens every calibration sample has in
common, before the first image, e.g. LLaVA's system prompt and "USER:") is not vision-language
content: with `skip_template` its tokens are neither text queries nor candidates. Measured on the
toy, they act as attention sinks (twice the TIS of any question word) and would otherwise be
picked as the most important text tokens.

`TIS` holds these settings; the layer scorer (`TISCosine`) and SCP read the same object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from shortlvlm.capture import CalibrationBatch, Collector
from shortlvlm.errors import TokenImportanceError
from shortlvlm.options import Options, fraction, is_bool, option, options

TOKEN_CHOICES = ("important", "all")


def parse_probe_layers(text: str) -> str | tuple[int, ...]:
    """'all', or comma-separated layer indices such as '8,12'."""
    if text == "all":
        return "all"
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError("takes 'all' or indices such as 8,12") from None


def _probe_layers(value) -> str | None:
    if value == "all" or (isinstance(value, tuple) and value and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)):
        return None
    return "must be 'all' or a list of layer indices"


@options
class TIS(Options):
    """Token Importance Scores: which tokens a layer is judged on (Short-LVLM's first insight)."""

    flag_prefix = "tis"
    error = TokenImportanceError

    tokens: str = option("important", choices=TOKEN_CHOICES,
                         help="'important': the top-p tokens of each modality by TIS; 'all': every real token "
                              "(the ablation without TIS)")
    top_p: float = option(0.5, check=fraction, help="fraction of each modality's tokens kept as important")
    layers: str | tuple[int, ...] = option("all", parse=parse_probe_layers, check=_probe_layers,
                                           help="layers whose attention defines token importance: 'all' (mean) "
                                                "or e.g. 4,8")
    joint: bool = option(False, check=is_bool, help="one top-p over image and text tokens together")
    skip_template: bool = option(True, check=is_bool,
                                 help="leave the chat template every calibration sample shares (system prompt, "
                                      "'USER:'; attention sinks) out of the text tokens TIS ranks")

    @property
    def important(self) -> bool:
        """Whether the statistics use the TIS-selected tokens (else every real token)."""
        return self.tokens == "important"

    def importance(self, batches: Sequence[CalibrationBatch], num_layers: int,
                   skip: Sequence[int] = ()) -> TokenImportance | None:
        """The collector that selects the important tokens (None with tokens="all"), probes resolved."""
        if not self.important:
            return None
        try:
            probes = resolve_probe_layers(self.layers, num_layers, skip)
        except ValueError as err:
            raise TokenImportanceError(str(err)) from err
        return TokenImportance(probes, self.top_p, self.joint, template_length(batches) if self.skip_template else 0)


def check_tis_layers(num_layers: int, *holders: object) -> None:
    """Refuse probe layers (--tis-layers) that a model of `num_layers` decoder layers does not have, for every
    scorer or compensation in `holders` that selects tokens by TIS: a check that needs only the config."""
    for holder in holders:
        tis = getattr(holder, "tis", None)
        if isinstance(tis, TIS) and tis.important:
            try:
                resolve_probe_layers(tis.layers, num_layers)
            except ValueError as err:
                raise TokenImportanceError(f"{err}: the model has {num_layers} decoder layers") from err


def _mean_over(values: torch.Tensor, weights: torch.Tensor, counts: torch.Tensor, dim: int) -> torch.Tensor:
    """sum(values * weights) / counts along `dim`, NaN where the count is zero."""
    total = torch.einsum("bij,bi->bj" if dim == 1 else "bij,bj->bi", values, weights)
    return torch.where(counts > 0, total / counts.clamp(min=1), torch.full_like(total, math.nan))


def _count(allowed: torch.Tensor, members: torch.Tensor, dim: int) -> torch.Tensor:
    """How many allowed entries along `dim` belong to `members` (a [B, T] mask)."""
    if dim == 1:  # queries i of key j
        return (allowed & members[:, :, None]).sum(dim=1).to(torch.float32)
    return (allowed & members[:, None, :]).sum(dim=2).to(torch.float32)


def token_importance(probs: torch.Tensor, allowed: torch.Tensor, image: torch.Tensor,
                     text: torch.Tensor) -> torch.Tensor:
    """[B, T] TIS of one layer from [B, T, T] head-averaged probabilities; NaN outside image/text."""
    probs = probs.to(torch.promote_types(probs.dtype, torch.float32))
    visual_q, text_q = image.to(probs.dtype), text.to(probs.dtype)
    from_visual = _mean_over(probs, visual_q, _count(allowed, image, 1).to(probs.dtype), dim=1)
    from_text = _mean_over(probs, text_q, _count(allowed, text, 1).to(probs.dtype), dim=1)
    to_image = _mean_over(probs, visual_q, _count(allowed, image, 2).to(probs.dtype), dim=2)
    visual_score = torch.stack([from_visual, from_text]).nanmean(dim=0)
    text_score = torch.stack([from_text, to_image]).nanmean(dim=0)
    scores = torch.where(image, visual_score, text_score)
    return torch.where(image | text, scores, torch.full_like(scores, math.nan))


def select_top(scores: torch.Tensor, members: torch.Tensor, top_p: float) -> torch.Tensor:
    """[B, T] mask of the ceil(top_p * n) highest-scoring members of each row (at least one if any)."""
    ranked = torch.where(members, scores.nan_to_num(nan=-math.inf), torch.full_like(scores, -math.inf))
    order = ranked.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    counts = members.sum(dim=1)
    keep = torch.where(counts > 0, (counts * top_p).ceil().clamp(min=1), torch.zeros_like(counts))
    return (rank < keep[:, None]) & members


def important_token_mask(
    scores: torch.Tensor, image: torch.Tensor, text: torch.Tensor, top_p: float, joint: bool = False
) -> torch.Tensor:
    """[B, T] mask of important tokens: top-p per modality, or over both when `joint`."""
    if joint:
        return select_top(scores, image | text, top_p)
    return select_top(scores, image, top_p) | select_top(scores, text, top_p)


def template_length(batches: Sequence[CalibrationBatch]) -> int:
    """How many leading non-padding tokens every sample shares, stopping before the first image token.

    That shared prefix is the chat template (system prompt, role words); 0 with fewer than two
    samples, since one sample gives nothing to compare.
    """
    rows = []
    for batch in map(CalibrationBatch.at_layers, batches):
        ids, real = batch.token_ids, batch.real
        for row in range(ids.shape[0]):
            tokens = ids[row][real[row]]
            image = batch.image[row][real[row]]
            stop = int(image.float().argmax()) if image.any() else len(tokens)
            rows.append(tokens[:stop].tolist())
    if len(rows) < 2:
        return 0
    length = min(len(r) for r in rows)
    first = rows[0]
    for other in rows[1:]:
        length = next((i for i in range(length) if other[i] != first[i]), length)
    return length


def template_mask(batch: CalibrationBatch, length: int) -> torch.Tensor:
    """[B, T] the first `length` non-padding positions of each row (padding on either side)."""
    real = batch.real
    order = real.long().cumsum(dim=1) - 1
    return real & (order < length)


def resolve_probe_layers(probe_layers: str | Sequence[int], num_layers: int, skip: Sequence[int] = ()) -> list[int]:
    """Probe layer indices: "all" = every (not skipped) layer, or an explicit list, validated."""
    if probe_layers == "all":
        return [i for i in range(num_layers) if i not in set(skip)]
    if isinstance(probe_layers, str):
        raise ValueError(f"TIS.layers must be 'all' or a list of layer indices, got {probe_layers!r}")
    layers = sorted(set(probe_layers))
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise ValueError(f"TIS.layers (--tis-layers) {list(probe_layers)} must be indices in 0..{num_layers - 1}")
    return [i for i in layers if i not in set(skip)] or layers


class TokenImportance(Collector):
    """Accumulates TIS over the probe layers of one batch and selects the important tokens."""

    batch_state = ("batch", "text", "total", "layers_seen")

    def __init__(self, probe_layers: Sequence[int], top_p: float, joint: bool = False, template: int = 0):
        if not 0 < top_p <= 1:
            raise ValueError(f"tis_top_p must be in (0, 1], got {top_p}")
        self.probe_layers = list(probe_layers)
        self.top_p = top_p
        self.joint = joint
        self.template = template  # leading shared tokens left out of the text tokens (template_length)
        self.batch: CalibrationBatch | None = None
        self.text: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.layers_seen = 0

    def begin_batch(self, batch: CalibrationBatch) -> None:
        self.batch, self.total, self.layers_seen = batch, None, 0
        self.text = batch.text & ~template_mask(batch, self.template) if self.template else batch.text

    def attention(self, layer: int, probs: torch.Tensor, allowed: torch.Tensor) -> None:
        if layer not in self.probe_layers:
            return
        scores = token_importance(probs, allowed, self.batch.image, self.text)
        self.total = scores if self.total is None else self.total + scores
        self.layers_seen += 1

    def scores(self) -> torch.Tensor:
        """[B, T] TIS averaged over the probe layers seen in this batch."""
        return self.total / self.layers_seen

    def mask(self) -> torch.Tensor:
        """[B, T] important tokens of the current batch."""
        return important_token_mask(self.scores(), self.batch.image, self.text, self.top_p, self.joint)


class ImportanceAwareCollector(Collector):
    """Base for collectors that reduce over the important tokens (or all real tokens without TIS)."""

    def __init__(self, importance: TokenImportance | None):
        self.importance = importance
        self.batch: CalibrationBatch | None = None

    def begin_batch(self, batch: CalibrationBatch) -> None:
        self.batch = batch
        if self.importance is not None:
            self.importance.begin_batch(batch)

    def attention(self, layer: int, probs: torch.Tensor, allowed: torch.Tensor) -> None:
        if self.importance is not None:
            self.importance.attention(layer, probs, allowed)

    def get_batch_state(self) -> dict:
        state = super().get_batch_state()
        if self.importance is not None:
            state["importance"] = self.importance.get_batch_state()
        return state

    def set_batch_state(self, state: dict) -> None:
        state = dict(state)
        if self.importance is not None:
            self.importance.set_batch_state(state.pop("importance"))
        super().set_batch_state(state)

    def selected_tokens(self) -> torch.Tensor:
        """[B, T] tokens of the current batch the statistics use."""
        return self.importance.mask() if self.importance is not None else self.batch.valid
