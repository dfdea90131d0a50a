"""smol-llava's training recipe runs end to end on the real SmolLM2 (a few steps) and writes usable parts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from shortlvlm.testbeds.smol.parts import META_FILE, PARTS_FILE

pytest.importorskip("peft")


@pytest.mark.slow
def test_two_stage_recipe_writes_parts_and_keeps_the_projector(smol_wheel, tmp_path, monkeypatch):
    from shortlvlm.testbeds.smol import train

    monkeypatch.setenv("SHORTLVLM_CACHE", str(smol_wheel.parent))
    out = tmp_path / "run"
    train.main(["--out", str(out), "--lm-source", "wheel", "--align-steps", "3", "--align-batch", "8",
                "--steps", "2", "--batch-size", "6", "--eval-every", "2", "--val-size", "6", "--rank", "2",
                "--precision", "float32"])  # the same code paths; bfloat16 autocast is slow on CPUs without it
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["done"] is True
    assert any(entry.get("step") == 2 for entry in log)
    parts = load_file(out / PARTS_FILE)
    lora = [k for k in parts if k.startswith("lora.")]
    # every linear layer of the 30 LM layers: 7 adapters x 2 factors
    assert len(lora) == 30 * 7 * 2
    assert parts["lora.model.language_model.layers.0.self_attn.q_proj.A"].shape == (2, 576)
    assert parts["lora.model.language_model.layers.0.mlp.down_proj.B"].shape == (576, 2)
    stage1 = torch.load(out / "stage1.pt", weights_only=True)
    for name, value in stage1.items():  # stage 2 leaves the vision side as stage 1 left it
        assert torch.equal(parts[name], value), name
    assert json.loads((out / META_FILE).read_text())["trained_steps"] == 2


def test_token_targets_put_each_cell_content_at_its_cell():
    from shortlvlm.testbeds.smol.train import GRID, token_targets

    content, position = torch.randn(5, 8), torch.randn(GRID * GRID, 8)
    targets = token_targets(content, position, 0.5)
    assert targets.shape == (5, GRID * GRID, 8)
    assert torch.allclose(targets[3, 7], content[3] + 0.5 * position[7])
    assert torch.equal(token_targets(content, position, 0.0)[:, 0], content)  # weight 0: the first recipe's targets


def test_kl_to_reference_matches_a_float64_computation():
    from shortlvlm.testbeds.smol.train import kl_to_reference

    torch.manual_seed(0)
    logits, reference = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    p = reference.double().softmax(-1)
    expected = (p * (p.log() - logits.double().log_softmax(-1))).sum(-1).mean()
    assert kl_to_reference(logits, reference).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl_to_reference(reference, reference).item() == pytest.approx(0.0, abs=1e-6)


def test_load_lora_restores_the_saved_factors(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from shortlvlm.testbeds.smol.parts import lora_factors
    from shortlvlm.testbeds.smol.train import load_lora

    def wrapped(seed):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1)
        lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"])
        return get_peft_model(LlamaForCausalLM(config), lora)

    trained = wrapped(0)
    for name, param in trained.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)
    factors = lora_factors(trained)
    from safetensors.torch import save_file

    save_file({f"lora.{n}.{k}": t.contiguous() for n, (a, b) in factors.items() for k, t in (("A", a), ("B", b))},
              tmp_path / PARTS_FILE)
    fresh = wrapped(0)
    assert load_lora(fresh, tmp_path) == 4  # q_proj and down_proj in 2 layers
    ids = torch.tensor([[1, 5, 7, 3]])
    assert torch.allclose(fresh(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-5)
    other = get_peft_model(LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                                        num_hidden_layers=1, num_attention_heads=2)),
                           LoraConfig(r=2, target_modules=["k_proj"]))
    with pytest.raises(ValueError, match="no LoRA factors"):
        load_lora(other, tmp_path)


def test_text_windows_are_fixed_and_held_out_topics_are_disjoint(smollm2):
    from shortlvlm.testbeds.smol.train import TextWindows

    _, tokenizer = smollm2
    train, held_out = TextWindows(tokenizer, False, 64), TextWindows(tokenizer, True, 64)
    batch = train.batch(3, 4)
    assert batch.shape == (4, 64)
    assert torch.equal(batch, TextWindows(tokenizer, False, 64).batch(3, 4))
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert [bool((row == im_start).any()) for row in batch] == [False, True, False, True]  # odd rows are chats
    assert not set(map(tuple, held_out.batch(0, 8).tolist())) & set(map(tuple, train.batch(0, 8).tolist()))
    assert len(held_out.ids) < len(train.ids) / 4


def test_order_targets_compare_columns_and_rows():
    from shortlvlm.testbeds.smol.train import GRID, order_targets

    firsts = torch.tensor([0 * GRID + 1, 2 * GRID + 3, 1 * GRID + 2])  # (0,1), (2,3), (1,2)
    seconds = torch.tensor([0 * GRID + 3, 0 * GRID + 3, 3 * GRID + 0])  # (0,3), (0,3), (3,0)
    columns, rows = order_targets(firsts, seconds)
    assert columns.tolist() == [0, 1, 2]  # left of, same column, right of
    assert rows.tolist() == [1, 2, 0]  # same row, below, above


def test_family_weights_shape_the_training_batches():
    from shortlvlm.testbeds.smol.train import parse_family_weights, training_batch

    weights = parse_family_weights("spatial=5,exists=0")
    assert weights["spatial"] == 5.0 and weights["exists"] == 0.0 and weights["count"] == 1.0
    batch = training_batch(3, 400, weights, crowd=6)
    families = [s.family for s in batch]
    assert "exists" not in families
    assert families.count("spatial") > 2 * families.count("count")  # 5:1 expected
    assert [s.id for s in training_batch(3, 400, weights, 6)] == [s.id for s in batch]  # deterministic
    assert all(s.id.startswith("train-") for s in batch)
    with pytest.raises(ValueError, match="unknown family"):
        parse_family_weights("colour=2")
    from shortlvlm.testbeds.toy.data import make_split

    equal = training_batch(2, 12, parse_family_weights(""), crowd=6)  # the first recipe's batches
    assert [s.id for s in equal] == [s.id for s in make_split("train", 12, start=12)]


def test_a_continuation_with_a_data_offset_sees_only_new_samples():
    """The batches of steps 701-1400 (what `--data-offset 700` trains on) share no sample with steps 1-700.

    This checks the batch layout the flag relies on; the flag itself only adds the offset to the step."""
    from shortlvlm.testbeds.smol.train import parse_family_weights, training_batch

    weights = parse_family_weights("spatial=3,count=2,compositional=2")
    seen = {s.id for step in range(1, 701, 7) for s in training_batch(step, 16, weights, 6)}
    later = {s.id for step in range(701, 1401, 7) for s in training_batch(step, 16, weights, 6)}
    assert seen and later and not seen & later
