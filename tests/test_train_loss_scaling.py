"""Loss scaling of plain SFT and --train_baseline (docs/design.md 8): the mean over the labelled tokens of
each micro-batch, then the mean over the gradient-accumulation steps (the released transformers 4.39
behaviour), not the token sum of the window divided by its token count.

One optimizer step of plain SGD (no clipping, no decay) on two micro-batches of one conversation
each: the weight change is -lr times the oracle gradient, computed here with autograd.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusechat.cli.get_data_representation import main as capture
from fusechat.templates import encode_conversation, get_template
from fusechat.training import run

RECORDS = [
    {"id": "short", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    {"id": "long", "conversations": [
        {"from": "human", "value": "Tell me about tea."},
        {"from": "gpt", "value": "Tea is brewed from the leaves of Camellia sinensis; green, black and oolong "
                                 "teas differ in how the leaves are oxidised after picking."}]},
]
LR = 1.0  # large, so the float32 weight difference resolves the step finely


def oracle_grads(model_path):
    """(released gradient, transformers-5 gradient) of lm_head.weight for the two conversations."""
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(model_path))
    sums, counts = [], []
    for record in RECORDS:
        messages = [("user" if t["from"] == "human" else "assistant", t["value"]) for t in record["conversations"]]
        enc = encode_conversation(tok, get_template("openchat_3.5"), messages, 512)
        ids, labels = torch.tensor([enc["input_ids"]]), torch.tensor(enc["labels"])
        logits = model(input_ids=ids).logits[0, :-1]
        target = labels[1:]
        ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
        sums.append(ce)
        counts.append(int((target != -100).sum()))
    weight = model.get_output_embeddings().weight
    released = torch.autograd.grad(sum(s / n for s, n in zip(sums, counts)) / 2, weight, retain_graph=True)[0]
    pooled = torch.autograd.grad(sum(sums) / sum(counts), weight)[0]
    return released, pooled


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sft", "baseline"])
def test_one_step_matches_micro_batch_means(tmp_path, pivot_path, mode):
    corpus = tmp_path / "c.json"
    corpus.write_text(json.dumps(RECORDS))
    data = str(corpus)
    extra = []
    if mode == "baseline":
        data = str(tmp_path / "rep")
        capture(["--model_name_or_path", str(pivot_path), "--data_path", str(corpus), "--tknz_dataset_path",
                 str(tmp_path / "tk"), "--dataset_save_dir", data, "--get_representation", "--mask_instruction",
                 "--model_max_length", "512"])
        extra = ["--train_baseline", "True"]
    out = tmp_path / "out"
    run.main(["--model_name_or_path", str(pivot_path), "--data_path", data, "--output_dir", str(out),
              "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2", "--max_steps", "1",
              "--learning_rate", str(LR), "--optim", "sgd", "--weight_decay", "0", "--max_grad_norm", "0",
              "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--use_cpu", "True", "--report_to", "none",
              "--save_strategy", "no", "--model_max_length", "512", "--dataloader_num_workers", "0", *extra])
    before = AutoModelForCausalLM.from_pretrained(str(pivot_path)).get_output_embeddings().weight
    after = AutoModelForCausalLM.from_pretrained(str(out)).get_output_embeddings().weight
    step = (before - after).detach() / LR
    released, pooled = oracle_grads(pivot_path)
    assert torch.allclose(step, released, rtol=1e-3, atol=1e-6)
    assert json.loads((out / "tokenizer_config.json").read_text())["legacy"] is True  # kept on save
    assert not torch.allclose(step, pooled, rtol=1e-2, atol=1e-5)  # the two scalings differ here
