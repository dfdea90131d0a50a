"""Speed of a LLaVA-1.5-7B-shaped model unpruned vs. 10/20/30% pruned, on a GPU, beside the paper.

    python benchmarks/gpu_llava7b_speed.py [--rounds 20] [--warmup 3] [--answer-tokens 8]
        [--save DIR]

Builds LLaVA-1.5-7B's architecture from its config (CLIP ViT-L/14-336 tower, 2-layer GELU
projector, 32-layer Llama-2-7B decoder, 576 image tokens) with random bf16 weights on the GPU:
speed does not depend on the weights, and none can be downloaded here. The pruned copies drop
round(r x 32) = 3 / 6 / 10 decoder layers (a contiguous block ending before the last layer,
where layer-redundancy scorers find them on Llama-2-7B; for speed only the count matters).
All four models are measured by `shortlvlm.speed.run_bench` (the code behind `shortlvlm bench`:
interleaved rounds, medians, batch 1, every answer exactly --answer-tokens long, SDPA attention)
on an LLaVA-1.5 style short-answer prompt. The paper's LLaVA-1.5-7B samples/s are printed
beside the measured ones. With --save DIR the unpruned model is also saved there (with a
word-level processor) so the CLI can be run on it. Needs a CUDA GPU; never run by tests or CI.
Writes benchmarks/results/gpu_llava7b_speed.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
RATIOS = (0.1, 0.2, 0.3)
PAPER_SAMPLES_PER_S = {0.0: 4.75, 0.1: 4.95, 0.2: 5.46, 0.3: 5.88}  # Short-LVLM paper, LLaVA-1.5-7B
PROMPT = "What is the main object in the image ? Answer the question using a single word or phrase ."
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image> "
    "{% elif item['type'] == 'text' %}{{ item['text'] }} {% endif %}{% endfor %}"
    "{% else %}ASSISTANT: {{ message['content'][0]['text'] }} </s> {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def llava15_7b_config():
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                       "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                       "projection_dim": 768, "hidden_act": "quick_gelu"},
        text_config={"model_type": "llama", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                     "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "pad_token_id": 0,
                     "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False},
        image_token_id=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def word_processor(vocab_size: int = 32064, image_token_id: int = 32000):
    """A LLaVA processor with a word-level tokenizer of the 7B vocabulary's size (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "USER:", "ASSISTANT:", *sorted(set(PROMPT.split()))]
    words += [f"w{i}" for i in range(image_token_id - len(words))] + ["<image>"]
    words += [f"x{i}" for i in range(vocab_size - len(words))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    core.add_special_tokens(["<pad>", "<s>", "</s>", "<unk>", "<image>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left", model_max_length=4096)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          image_token="<image>", num_additional_image_tokens=1)


def build(removed: list[int], seed: int = 0):
    from transformers import LlavaForConditionalGeneration

    from shortlvlm import drop_layers

    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(llava15_7b_config()).to(torch.bfloat16)
    if removed:
        drop_layers(model, removed)
    return model.eval(), word_processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--save", default=None, help="also save the unpruned model + processor here")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (speed of a 7B model on a CPU is not what it measures)")

    from shortlvlm.speed import markdown_table, run_bench

    layers = 32
    settings = [("LLaVA-1.5-7B-shaped (unpruned)", [], 0.0)]
    for ratio in RATIOS:
        count = round(ratio * layers)
        removed = list(range(layers - 1 - count, layers - 1))
        settings.append((f"-{int(ratio * 100)}% ({count} layers)", removed, ratio))
    loaders = [(label, (lambda removed=removed: build(removed))) for label, removed, _ in settings]
    rows = run_bench(loaders, rounds=args.rounds, warmup=args.warmup, answer_tokens=args.answer_tokens,
                     prompt=PROMPT)
    base_paper = PAPER_SAMPLES_PER_S[0.0]
    for row, (_, removed, ratio) in zip(rows, settings, strict=True):
        row["removed_layers"] = removed
        row["paper_samples_per_s"] = PAPER_SAMPLES_PER_S[ratio]
        row["paper_speedup"] = PAPER_SAMPLES_PER_S[ratio] / base_paper
    if args.save:
        torch.cuda.empty_cache()
        model, processor = build([])
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)

    command = (f"python benchmarks/gpu_llava7b_speed.py --rounds {args.rounds} --warmup {args.warmup} "
               f"--answer-tokens {args.answer_tokens}")
    environment = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "platform": platform.platform()}
    import transformers

    environment["transformers"] = transformers.__version__
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_llava7b_speed.json").write_text(json.dumps(
        {"command": command, "environment": environment, "prompt": PROMPT, "rows": rows}, indent=2) + "\n")
    paper = "\n".join(
        f"| {r['model']} | {r['decoder_layers']} | {r['samples_per_s']:.2f} | {r['samples_speedup']:.3f} | "
        f"{r['ideal_speedup']:.3f} | {r['paper_samples_per_s']:.2f} | {r['paper_speedup']:.3f} |" for r in rows)
    text = (f"# LLaVA-1.5-7B-shaped speed, unpruned vs. pruned (batch 1, {environment['gpu']}, bf16)\n\n"
            f"`{command}`; random weights built from LLaVA-1.5-7B's config; medians of {args.rounds} interleaved "
            f"rounds after {args.warmup} warm-up rounds; every answer exactly {args.answer_tokens} tokens; "
            f"{rows[0]['parameters'] / 1e9:.2f} B parameters unpruned; torch {environment['torch']}, "
            f"transformers {environment['transformers']}.\n\n{markdown_table(rows)}\n\n"
            "## Beside the paper (LLaVA-1.5-7B, samples/s)\n\n"
            "| model | layers | measured samples/s | measured speedup | ideal 32/L "
            "| paper samples/s | paper speedup |\n"
            "|---|---|---|---|---|---|---|\n" + paper + "\n")
    (out / "gpu_llava7b_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
