"""Tiny stand-ins for the two remote-code LVLMs the Short-LVLM paper evaluates, faithful where the method looks.

What the method touches (decoder layer list, attention module signature and output tuple, residual
writers, how the attention mask reaches the layers, where image features enter, cache conventions)
follows the published code; sizes are tiny and the vision towers are stand-ins. References:

Qwen-VL-Chat, `modeling_qwen.py` of Qwen/Qwen-VL-Chat as mirrored in GitHub Immerso-AIIP-Ltd/Qwen-VL-Chat
at e176543 (line numbers of that file):
- `QWenAttention` (114-323): one fused `c_attn` (hidden -> 3 x hidden, split in q, k, v), heads laid out
  [B, T, H, D], its own rotary embedding (`RotaryEmbedding` 1093, `apply_rotary_pos_emb` 1144, given to
  each block as a [cos, sin] list), an additive attention mask added to the scores (177), softmax, `c_proj`.
  forward(hidden_states, rotary_pos_emb, registered_causal_mask, layer_past, attention_mask, head_mask,
  encoder_hidden_states, encoder_attention_mask, output_attentions, use_cache) returns
  (attn_output, present) and appends the probabilities only when output_attentions (319-321), so they
  sit at index 2.
- eager vs flash: Qwen-VL-Chat's QWenModel stores `config.use_flash_attn` (478) but always computes
  `_attn` (no flash kernel in this file), and transformers' `_attn_implementation` is never read.
- `QWenBlock` (345-406): ln_1 -> attn -> residual, ln_2 -> `QWenMLP` (w1 * silu(w2) -> c_proj, 326-343) ->
  residual; it returns a tuple, (hidden,) + the attention outputs after `present` when use_cache is off.
- `QWenModel.forward` (545-750): the additive mask is causal + padding, [B, 1, T, T]
  (`_prepare_decoder_attention_mask` 521-543); image features overwrite the positions strictly between
  <img> (image_start_id) and </img> (image_start_id + 1): `hidden_states[i][a + 1 : b]` (675-676). No
  layer_idx: the cache is a per-layer tuple zipped with `self.h` (689).
- Images: `QWenModel.forward` reads each image's file path from the ids between <img> and the first
  <imgpad> (image_start_id + 2), one byte per token (561-571), and `visual.encode` opens the files and
  applies `image_transform` (visual.py 352-361, 416-426: bicubic resize to image_size, /255, CLIP
  mean/std); the tower ends in `attn_pool`, a resampler of n_queries learnable queries (visual.py 92-150,
  383; 256 upstream, the tokenizer's IMG_TOKEN_SPAN), whose outputs fill the span.
- Deviation: a pixel tensor given as `images=` replaces reading the files (the reference tests perturb
  pixels); the mimic's tower takes 16x16 images and `visual["n_queries"]` (default 16) sets the span.

mPLUG-Owl2, GitHub X-PLUG/mPLUG-Owl at 0f3068f, `mPLUG-Owl2/mplug_owl2/model/`:
- `multiway.py` (7-35): `MultiwayNetwork` keeps one module per modality in `.multiway` and routes each
  token by `multiway_indices` (0 text, 1 image).
- `modeling_llama2.py` `LlamaAttention` (33-163): q_proj, k_proj/v_proj as MultiwayNetwork, o_proj;
  forward(hidden_states, modality_indicators, attention_mask, position_ids, past_key_value,
  output_attentions, use_cache, padding_mask) returns (attn_output, attn_weights or None, past_key_value)
  (160-163): the probabilities at index 1, only when output_attentions. The softmax is always the
  eager one (145); the file patches transformers' Llama classes (`replace_llama_modality_adaptive`,
  464-469), so no attention kernel is chosen.
- `LlamaDecoderLayer` (167-237): input_layernorm and post_attention_layernorm are MultiwayNetworks; it
  returns (hidden,) + (weights,) if output_attentions + (present,) if use_cache.
- `model_forward` (240-368): an additive [B, 1, T, T] causal + padding mask, every layer called with
  modality_indicators= (334-343); the cache is `past_key_values[idx]`, no layer_idx.
- `modeling_mplug_owl2.py` `prepare_inputs_labels_for_multimodal` (66-197): each -200 placeholder is
  replaced by the abstractor's `num_learnable_queries` features, modality indicators are 1 there and 0
  elsewhere (122-123), and when every row has the same length the attention mask gets the extra
  positions as True at its left (190-196).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

IMAGE_PLACEHOLDER = -200  # mPLUG-Owl2's IMAGE_TOKEN_INDEX (constants.py)


def additive_causal_mask(attention_mask: torch.Tensor | None, batch: int, length: int, dtype) -> torch.Tensor:
    """[B, 1, T, T]: 0 where a query may attend, the dtype's minimum elsewhere (causal and padding)."""
    minimum = torch.finfo(dtype).min
    mask = torch.full((length, length), minimum, dtype=dtype).triu(1)[None, None].expand(batch, 1, length, length)
    if attention_mask is not None:
        padding = (1.0 - attention_mask[:, None, None, :].to(dtype)) * minimum
        mask = (mask + padding).clamp(min=minimum)
    return mask


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rotary_cos_sin(length: int, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    freqs = torch.outer(torch.arange(length).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


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

    def features(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        patches = images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(b, 16, 48)
        x = self.patch(patches.to(self.patch.weight.dtype))
        for block in self.transformer.resblocks:
            x = block(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images))


CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class QWenVisual(TinyViT):
    """Qwen-VL's tower in small: patches, blocks, a resampler of n_queries learnable queries, projection."""

    def __init__(self, visual: dict, out_dim: int):
        super().__init__(visual["width"], out_dim, visual["layers"])
        self.attn_pool = nn.Parameter(torch.randn(visual.get("n_queries", 16), visual["width"]) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images)
        weights = F.softmax(self.attn_pool @ x.transpose(1, 2) / math.sqrt(x.shape[-1]), dim=-1)
        return self.proj(weights @ x)

    def encode(self, image_paths: list[str]) -> torch.Tensor:
        """Open each file, resize (bicubic) to 16x16, scale to [0, 1], normalise with CLIP's mean and std."""
        pixels = []
        for path in image_paths:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((16, 16), Image.BICUBIC)
            x = torch.tensor(np.asarray(rgb), dtype=torch.float32).permute(2, 0, 1) / 255
            pixels.append((x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None])
        return self(torch.stack(pixels))


# --- Qwen-VL-Chat ----------------------------------------------------------------------------


class QWenConfig(PretrainedConfig):
    model_type = "qwen_mimic"

    def __init__(self, vocab_size=200, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                 intermediate_size=96, layer_norm_epsilon=1e-6, use_flash_attn=False, rotary_emb_base=10000,
                 max_position_embeddings=512, visual=None, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.kv_channels = hidden_size // num_attention_heads
        self.intermediate_size, self.layer_norm_epsilon = intermediate_size, layer_norm_epsilon
        self.use_flash_attn, self.rotary_emb_base = use_flash_attn, rotary_emb_base
        self.max_position_embeddings = max_position_embeddings
        self.visual = visual or {"image_start_id": 190, "width": 24, "layers": 8}
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


class QWenAttention(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.c_attn = nn.Linear(self.hidden_size, 3 * self.hidden_size)
        self.c_proj = nn.Linear(self.hidden_size, self.hidden_size, bias=False)

    def forward(self, hidden_states, rotary_pos_emb=None, registered_causal_mask=None, layer_past=None,
                attention_mask=None, head_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                output_attentions=False, use_cache=False):
        b, t, _ = hidden_states.shape
        query, key, value = (x.view(b, t, self.num_heads, self.head_dim)
                             for x in self.c_attn(hidden_states).split(self.hidden_size, dim=2))
        if rotary_pos_emb is not None:
            cos, sin = (f[:, -t:] for f in rotary_pos_emb)
            query, key = query * cos + rotate_half(query) * sin, key * cos + rotate_half(key) * sin
        if layer_past is not None:
            key, value = torch.cat((layer_past[0], key), dim=1), torch.cat((layer_past[1], value), dim=1)
        present = (key, value) if use_cache else None
        query, key, value = (x.permute(0, 2, 1, 3) for x in (query, key, value))
        weights = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
        weights = F.softmax(weights + attention_mask, dim=-1).type(value.dtype)
        context = torch.matmul(weights, value).transpose(1, 2).reshape(b, t, self.hidden_size)
        outputs = (self.c_proj(context), present)
        if output_attentions:
            outputs += (weights,)
        return outputs


class QWenMLP(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        d, half = config.hidden_size, config.intermediate_size // 2  # half != d on purpose
        self.w1, self.w2 = nn.Linear(d, half, bias=False), nn.Linear(d, half, bias=False)
        self.c_proj = nn.Linear(half, d, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(hidden_states) * F.silu(self.w2(hidden_states)))


class QWenBlock(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        d = config.hidden_size
        self.ln_1, self.attn = nn.RMSNorm(d, eps=config.layer_norm_epsilon), QWenAttention(config)
        self.ln_2, self.mlp = nn.RMSNorm(d, eps=config.layer_norm_epsilon), QWenMLP(config)

    def forward(self, hidden_states, rotary_pos_emb=None, registered_causal_mask=None, layer_past=None,
                attention_mask=None, head_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                use_cache=False, output_attentions=False):
        attn_outputs = self.attn(self.ln_1(hidden_states), rotary_pos_emb,
                                 registered_causal_mask=registered_causal_mask, layer_past=layer_past,
                                 attention_mask=attention_mask, head_mask=head_mask, use_cache=use_cache,
                                 output_attentions=output_attentions)
        outputs = attn_outputs[1:]
        hidden_states = hidden_states + attn_outputs[0]
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return (hidden_states,) + (outputs if use_cache else outputs[1:])


class QWenModel(nn.Module):
    def __init__(self, config: QWenConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.wte = nn.Embedding(config.vocab_size, d)
        self.h = nn.ModuleList(QWenBlock(config) for _ in range(config.num_hidden_layers))
        self.ln_f = nn.RMSNorm(d, eps=config.layer_norm_epsilon)
        self.use_flash_attn = config.use_flash_attn  # stored, never used to pick a kernel (upstream 478)
        self.registered_causal_mask = None
        # The ViT has more blocks than the LM, so a "longest list" rule would pick the wrong one.
        self.visual = QWenVisual(config.visual, d)

    def forward(self, input_ids, attention_mask=None, images=None, output_attentions=False,
                output_hidden_states=False):
        start = self.config.visual["image_start_id"]
        img_pos = None
        if torch.any(input_ids == start):
            bos, eos = torch.where(input_ids == start), torch.where(input_ids == start + 1)
            img_pos = torch.stack((bos[0], bos[1], eos[1]), dim=1)
            if images is None:  # upstream: the path's bytes, up to the first <imgpad> (start + 2)
                paths = []
                for i, a, e in img_pos:
                    span = input_ids[i][a + 1 : e - 1].tolist()
                    paths.append(bytes(span[: span.index(start + 2)]).decode("utf-8"))
                features = self.visual.encode(paths)
            else:
                features = self.visual(images)
        b, t = input_ids.shape
        hidden_states = self.wte(input_ids).clone()
        mask = additive_causal_mask(attention_mask, b, t, hidden_states.dtype)
        cos, sin = rotary_cos_sin(t, self.config.kv_channels, self.config.rotary_emb_base)
        rotary = [cos[None, :, None].to(hidden_states), sin[None, :, None].to(hidden_states)]
        if img_pos is not None:
            for idx, (i, a, e) in enumerate(img_pos):
                hidden_states[i][a + 1 : e] = features[idx]
        states, attentions = (), ()
        for block, layer_past in zip(self.h, [None] * len(self.h), strict=True):
            states += (hidden_states,)
            outputs = block(hidden_states, layer_past=layer_past, rotary_pos_emb=rotary,
                            registered_causal_mask=self.registered_causal_mask, attention_mask=mask,
                            head_mask=None, use_cache=False, output_attentions=output_attentions)
            hidden_states = outputs[0]
            if output_attentions:
                attentions += (outputs[1],)
        hidden_states = self.ln_f(hidden_states)
        return hidden_states, (*states, hidden_states) if output_hidden_states else None, attentions or None


class QWenLMHeadModel(PreTrainedModel):
    config_class = QWenConfig
    base_model_prefix = "transformer"

    def __init__(self, config: QWenConfig):
        super().__init__(config)
        self.transformer = QWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, images=None, output_attentions=False,
                output_hidden_states=False, use_cache=None, **kwargs):
        hidden, states, attentions = self.transformer(input_ids, attention_mask, images, output_attentions,
                                                      output_hidden_states)
        return CausalLMOutputWithPast(logits=self.lm_head(hidden), hidden_states=states, attentions=attentions)


def qwen_vl_chat_inputs(config: QWenConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Text, <img>, 16 image pad tokens, </img>, text: the layout Qwen-VL-Chat's tokenizer makes."""
    g = torch.Generator().manual_seed(seed)
    start = config.visual["image_start_id"]
    pre, post = torch.randint(3, 150, (batch_size, 3), generator=g), torch.randint(3, 150, (batch_size, 5), generator=g)
    image = torch.cat([torch.full((batch_size, 1), start), torch.full((batch_size, 16), start + 2),
                       torch.full((batch_size, 1), start + 1)], dim=1)
    ids = torch.cat([pre, image, post], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "images": torch.randn(batch_size, 3, 16, 16, generator=g)}


# --- mPLUG-Owl2 ------------------------------------------------------------------------------


class MultiwayNetwork(nn.Module):
    """One copy of a module per modality; each token goes through the copy its indicator names."""

    def __init__(self, make, num_multiway: int = 2):
        super().__init__()
        self.multiway = nn.ModuleList(make() for _ in range(num_multiway))

    def forward(self, hidden_states: torch.Tensor, multiway_indices: torch.Tensor) -> torch.Tensor:
        out = None
        for idx, subway in enumerate(self.multiway):
            where = multiway_indices.eq(idx).nonzero(as_tuple=True)
            routed = subway(hidden_states[where].unsqueeze(1)).squeeze(1)
            if out is None:
                out = hidden_states.new_empty(*hidden_states.shape[:-1], routed.shape[-1])
            out[where] = routed
        return out


class MplugOwl2Config(PretrainedConfig):
    model_type = "mplug_owl2_mimic"

    def __init__(self, vocab_size=200, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                 intermediate_size=64, rms_norm_eps=1e-6, max_position_embeddings=512, visual_config=None, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size, self.rms_norm_eps = intermediate_size, rms_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.visual_config = visual_config or {"visual_model": {"hidden_size": 24},
                                               "visual_abstractor": {"num_learnable_queries": 8}}
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


class LlamaAttention(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, d // config.num_attention_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = MultiwayNetwork(lambda: nn.Linear(d, d, bias=False))
        self.v_proj = MultiwayNetwork(lambda: nn.Linear(d, d, bias=False))
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, hidden_states, modality_indicators, attention_mask=None, position_ids=None,
                past_key_value=None, output_attentions=False, use_cache=False, padding_mask=None):
        b, t, d = hidden_states.shape
        split = lambda x: x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        query = split(self.q_proj(hidden_states))
        key = split(self.k_proj(hidden_states, modality_indicators))
        value = split(self.v_proj(hidden_states, modality_indicators))
        cos, sin = rotary_cos_sin(t, self.head_dim)
        cos, sin = cos[position_ids][:, None].to(query), sin[position_ids][:, None].to(query)
        query, key = query * cos + rotate_half(query) * sin, key * cos + rotate_half(key) * sin
        if past_key_value is not None:
            key, value = torch.cat([past_key_value[0], key], dim=2), torch.cat([past_key_value[1], value], dim=2)
        past_key_value = (key, value) if use_cache else None
        weights = torch.matmul(query, key.transpose(2, 3)) / math.sqrt(self.head_dim)
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
        out = self.o_proj(torch.matmul(weights, value).transpose(1, 2).reshape(b, t, d))
        return out, weights if output_attentions else None, past_key_value


class LlamaMLP(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d = config.hidden_size
        self.self_attn, self.mlp = LlamaAttention(config), LlamaMLP(config)
        self.input_layernorm = MultiwayNetwork(lambda: nn.RMSNorm(d, eps=config.rms_norm_eps))
        self.post_attention_layernorm = MultiwayNetwork(lambda: nn.RMSNorm(d, eps=config.rms_norm_eps))

    def forward(self, hidden_states, modality_indicators=None, attention_mask=None, position_ids=None,
                past_key_value=None, output_attentions=False, use_cache=False):
        residual = hidden_states
        hidden_states, weights, present = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states, modality_indicators),
            modality_indicators=modality_indicators, attention_mask=attention_mask, position_ids=position_ids,
            past_key_value=past_key_value, output_attentions=output_attentions, use_cache=use_cache)
        hidden_states = residual + hidden_states
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states, modality_indicators))
        outputs = (hidden_states,)
        if output_attentions:
            outputs += (weights,)
        if use_cache:
            outputs += (present,)
        return outputs


class Abstractor(nn.Module):
    """Learnable queries that read the vision tokens (mPLUG-Owl2's visual abstractor), then a block list."""

    def __init__(self, width: int, out_dim: int, num_queries: int, num_blocks: int = 2):
        super().__init__()
        self.query_embeds = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(VisionBlock(width) for _ in range(num_blocks))
        self.visual_fc = nn.Linear(width, out_dim)

    def forward(self, vision: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.query_embeds @ vision.transpose(1, 2) / math.sqrt(vision.shape[-1]), dim=-1)
        x = weights @ vision
        for block in self.encoder.layers:
            x = block(x)
        return self.visual_fc(x)


class MPLUGOwl2LlamaModel(nn.Module):
    def __init__(self, config: MplugOwl2Config):
        super().__init__()
        d, visual = config.hidden_size, config.visual_config
        width = visual["visual_model"]["hidden_size"]
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.vision_model = TinyViT(width, width, 3)
        self.visual_abstractor = Abstractor(width, d, visual["visual_abstractor"]["num_learnable_queries"])

    def forward(self, inputs_embeds, modality_indicators, attention_mask, output_attentions=False,
                output_hidden_states=False):
        b, t, _ = inputs_embeds.shape
        position_ids = torch.arange(t)[None].expand(b, t)
        mask = additive_causal_mask(attention_mask, b, t, inputs_embeds.dtype)
        hidden_states, states, attentions = inputs_embeds, (), ()
        for decoder_layer in self.layers:
            states += (hidden_states,)
            past_key_value = None  # upstream: past_key_values[idx], the cache by list position
            outputs = decoder_layer(hidden_states, modality_indicators=modality_indicators, attention_mask=mask,
                                    position_ids=position_ids, past_key_value=past_key_value,
                                    output_attentions=output_attentions, use_cache=False)
            hidden_states = outputs[0]
            if output_attentions:
                attentions += (outputs[1],)
        hidden_states = self.norm(hidden_states)
        return hidden_states, (*states, hidden_states) if output_hidden_states else None, attentions or None


class MPLUGOwl2LlamaForCausalLM(PreTrainedModel):
    config_class = MplugOwl2Config

    def __init__(self, config: MplugOwl2Config):
        super().__init__(config)
        self.model = MPLUGOwl2LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.visual_abstractor(self.model.vision_model(images))

    def prepare_inputs_labels_for_multimodal(self, input_ids, attention_mask, images):
        """(inputs_embeds, modality_indicators, attention_mask) over the expanded sequence (one image a row)."""
        if images is None:
            return self.model.embed_tokens(input_ids), torch.zeros_like(input_ids), attention_mask
        features = self.encode_images(images)
        embeds, indicators = [], []
        for row, ids in enumerate(input_ids):
            at = int(torch.where(ids == IMAGE_PLACEHOLDER)[0][0])
            embeds.append(torch.cat([self.model.embed_tokens(ids[:at]), features[row],
                                     self.model.embed_tokens(ids[at + 1:])]))
            indicators.append(torch.cat([torch.zeros(at), torch.ones(len(features[row])),
                                         torch.zeros(len(ids) - at - 1)]).long())
        embeds = torch.stack(embeds)
        if attention_mask is not None:  # upstream 190-196: the added positions are True at the left
            pad_left = torch.ones(attention_mask.shape[0], embeds.shape[1] - input_ids.shape[1],
                                  dtype=attention_mask.dtype)
            attention_mask = torch.cat((pad_left, attention_mask), dim=1)
        return embeds, torch.stack(indicators), attention_mask

    def forward(self, input_ids, attention_mask=None, images=None, output_attentions=False,
                output_hidden_states=False, use_cache=None, **kwargs):
        embeds, indicators, attention_mask = self.prepare_inputs_labels_for_multimodal(input_ids, attention_mask,
                                                                                      images)
        hidden, states, attentions = self.model(embeds, indicators, attention_mask, output_attentions,
                                                output_hidden_states)
        return CausalLMOutputWithPast(logits=self.lm_head(hidden), hidden_states=states, attentions=attentions)


def mplug_owl2_inputs(config: MplugOwl2Config, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Text, one -200 image placeholder, text: the layout mPLUG-Owl2's tokenizer_image_token makes."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.vocab_size, (batch_size, 10), generator=g)
    ids[:, 3] = IMAGE_PLACEHOLDER
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "images": torch.randn(batch_size, 3, 16, 16, generator=g)}
