"""Hand-built models with the module layouts of two remote-code LVLMs the Short-LVLM paper evaluates.

- QWenLMHeadModel: Qwen-VL-Chat's GPT-style blocks (`transformer.h`, `attn.c_attn`/`attn.c_proj`,
  `mlp.w1`/`mlp.w2`/`mlp.c_proj`), a ViT under `transformer.visual` with its own block list, and
  image features written between <img> and </img> tokens.
- MPLUGOwl2LlamaForCausalLM: mPLUG-Owl2's modality-adaptive Llama (`model.layers`, k/v projections
  and norms split per modality through `MultiwayNetwork`, `modality_indicators` passed to every
  layer), a vision encoder and abstractor with block lists, and one -200 image placeholder that
  expands into the visual tokens inside forward.

Only the layout and data flow mimic the originals; the maths is a plain pre-norm transformer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

IMAGE_PLACEHOLDER = -200  # mPLUG-Owl2's IMAGE_TOKEN_INDEX


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = q.shape
    split = lambda x: x.view(b, t, heads, d // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
    return out.transpose(1, 2).reshape(b, t, d)


class VisionBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViT(nn.Module):
    """Patchify (4x4) a 3x16x16 image into 16 tokens, then a list of blocks."""

    def __init__(self, d: int, out_dim: int, num_blocks: int):
        super().__init__()
        self.patch = nn.Linear(3 * 16, d)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(VisionBlock(d) for _ in range(num_blocks))
        self.proj = nn.Linear(d, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        patches = images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(b, 16, 48)
        x = self.patch(patches)
        for block in self.transformer.resblocks:
            x = block(x)
        return self.proj(x)


# --- Qwen-VL-Chat layout ---------------------------------------------------------------------


class QWenConfig(PretrainedConfig):
    model_type = "qwen_mimic"

    def __init__(self, vocab_size=200, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                 intermediate_size=96, visual=None, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size = intermediate_size
        self.visual = visual or {"image_start_id": 190, "width": 24, "layers": 8}
        super().__init__(**kwargs)


class QWenAttention(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        d = config.hidden_size
        self.heads = config.num_attention_heads
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        return self.c_proj(causal_attention(q, k, v, self.heads))


class QWenMLP(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        d, half = config.hidden_size, config.intermediate_size // 2  # half != d on purpose
        self.w1, self.w2 = nn.Linear(d, half, bias=False), nn.Linear(d, half, bias=False)
        self.c_proj = nn.Linear(half, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class QWenBlock(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        d = config.hidden_size
        self.ln_1, self.attn = nn.RMSNorm(d), QWenAttention(config)
        self.ln_2, self.mlp = nn.RMSNorm(d), QWenMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class QWenModel(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        d = config.hidden_size
        self.wte = nn.Embedding(config.vocab_size, d)
        self.h = nn.ModuleList(QWenBlock(config) for _ in range(config.num_hidden_layers))
        self.ln_f = nn.RMSNorm(d)
        # The ViT has more blocks than the LM, so a "longest list" rule would pick the wrong one.
        self.visual = TinyViT(config.visual["width"], d, config.visual["layers"])


class QWenLMHeadModel(PreTrainedModel):
    config_class = QWenConfig

    def __init__(self, config: QWenConfig):
        super().__init__(config)
        self.transformer = QWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, images: torch.Tensor | None = None, **kwargs):
        x = self.transformer.wte(input_ids)
        if images is not None:
            start = self.config.visual["image_start_id"]
            for b in range(input_ids.shape[0]):
                pos = int((input_ids[b] == start).nonzero()[0])
                features = self.transformer.visual(images[b : b + 1])[0]
                x[b, pos + 1 : pos + 1 + features.shape[0]] = features
        for block in self.transformer.h:
            x = block(x)
        return CausalLMOutput(logits=self.lm_head(self.transformer.ln_f(x)))


def qwen_vl_chat_inputs(config: QWenConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Text, <img>, 16 image pad tokens, </img>, text: the layout Qwen-VL-Chat's tokenizer makes."""
    g = torch.Generator().manual_seed(seed)
    start = config.visual["image_start_id"]
    pre, post = torch.randint(3, 150, (batch_size, 3), generator=g), torch.randint(3, 150, (batch_size, 5), generator=g)
    image = torch.cat([torch.full((batch_size, 1), start), torch.full((batch_size, 16), start + 2),
                       torch.full((batch_size, 1), start + 1)], dim=1)
    return {"input_ids": torch.cat([pre, image, post], dim=1),
            "images": torch.randn(batch_size, 3, 16, 16, generator=g)}


# --- mPLUG-Owl2 layout -----------------------------------------------------------------------


class MultiwayNetwork(nn.Module):
    """One copy of a module per modality; tokens are routed by modality_indicators (0 text, 1 image)."""

    def __init__(self, make: callable, num_multiway: int = 2):
        super().__init__()
        self.multiway = nn.ModuleList(make() for _ in range(num_multiway))

    def forward(self, x: torch.Tensor, modality_indicators: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x[..., :1]).expand(*x.shape[:-1], self.multiway[0](x[:1, :1]).shape[-1]).clone()
        for index, module in enumerate(self.multiway):
            mask = modality_indicators == index
            out[mask] = module(x[mask])
        return out


class MplugOwl2Config(PretrainedConfig):
    model_type = "mplug_owl2_mimic"

    def __init__(self, vocab_size=200, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                 intermediate_size=64, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size = intermediate_size
        super().__init__(**kwargs)


class MplugAttention(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d = config.hidden_size
        self.heads = config.num_attention_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = MultiwayNetwork(lambda: nn.Linear(d, d, bias=False))
        self.v_proj = MultiwayNetwork(lambda: nn.Linear(d, d, bias=False))
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, modality_indicators: torch.Tensor) -> torch.Tensor:
        q = self.q_proj(x)
        k, v = self.k_proj(x, modality_indicators), self.v_proj(x, modality_indicators)
        return self.o_proj(causal_attention(q, k, v, self.heads))


class MplugMLP(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MplugDecoderLayer(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d = config.hidden_size
        self.self_attn, self.mlp = MplugAttention(config), MplugMLP(config)
        self.input_layernorm = MultiwayNetwork(lambda: nn.RMSNorm(d))
        self.post_attention_layernorm = MultiwayNetwork(lambda: nn.RMSNorm(d))

    def forward(self, x: torch.Tensor, modality_indicators: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x, modality_indicators), modality_indicators)
        return x + self.mlp(self.post_attention_layernorm(x, modality_indicators))


class MplugOwl2Model(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.layers = nn.ModuleList(MplugDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(d)
        self.vision_model = TinyViT(24, 24, 3)
        self.visual_abstractor = TinyViT(24, d, 2)
        self.visual_abstractor.patch = nn.Linear(24, 24)  # abstractor consumes vision tokens


class MPLUGOwl2LlamaForCausalLM(PreTrainedModel):
    config_class = MplugOwl2Config

    def __init__(self, config: MplugOwl2Config):
        super().__init__(config)
        self.model = MplugOwl2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _visual_tokens(self, image: torch.Tensor) -> torch.Tensor:
        features = self.model.vision_model(image)
        x = self.model.visual_abstractor.patch(features)
        for block in self.model.visual_abstractor.transformer.resblocks:
            x = block(x)
        return self.model.visual_abstractor.proj(x)[0]

    def forward(self, input_ids: torch.Tensor, images: torch.Tensor | None = None, **kwargs):
        rows, modality = [], []
        for b in range(input_ids.shape[0]):
            ids = input_ids[b]
            at = (ids == IMAGE_PLACEHOLDER).nonzero()
            if images is None or len(at) == 0:
                rows.append(self.model.embed_tokens(ids.clamp(min=0)))
                modality.append(torch.zeros(len(ids), dtype=torch.long))
                continue
            pos = int(at[0])
            visual = self._visual_tokens(images[b : b + 1])
            embeds = [self.model.embed_tokens(ids[:pos]), visual, self.model.embed_tokens(ids[pos + 1 :])]
            rows.append(torch.cat(embeds))
            modality.append(torch.cat([torch.zeros(pos), torch.ones(len(visual)),
                                       torch.zeros(len(ids) - pos - 1)]).long())
        x, indicators = torch.stack(rows), torch.stack(modality)
        for layer in self.model.layers:
            x = layer(x, indicators)
        return CausalLMOutput(logits=self.lm_head(self.model.norm(x)))


def mplug_owl2_inputs(config: MplugOwl2Config, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Text, one -200 image placeholder, text: the layout mPLUG-Owl2's tokenizer_image_token makes."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.vocab_size, (batch_size, 10), generator=g)
    ids[:, 3] = IMAGE_PLACEHOLDER
    return {"input_ids": ids, "images": torch.randn(batch_size, 3, 16, 16, generator=g)}
