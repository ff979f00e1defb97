"""SFT, DPO and WRPO on tiny offline models, through fusechat-imf-sft/-dpo/-wrpo (docs/design.md 13.7)."""

import json
import math

import pytest
import torch

from fusechat.errors import run_cli
from fusechat.fixtures import PIVOT, SAME_VOCAB_SOURCE, build_tiny_model, load_tokenizer
from fusechat.implicit import cli
from implicit_fixtures import write_jsonl
from implicit_oracle import dpo_loss, ln_dpo_loss, wrpo_alpha, wrpo_loss

LN2 = math.log(2)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def wrpo_rows(n):
    return [{"prompt_id": f"w{i}", "prompt": [user(f"What is {i} plus {i}?")],
             "chosen_source": [assistant(f"It is {2 * i}, since {i} and {i} make {2 * i}.")],
             "chosen_target": [assistant(f"{2 * i}")], "rejected": [assistant(f"Maybe {i}")],
             "source_of_ws": "A", "scores": {"ws": 0.3, "wt": 0.2, "l": 0.1}} for i in range(n)]


def dpo_rows(n):
    return [{"prompt_id": f"d{i}", "domain": "if", "prompt": [user(f"Name {i} colours.")],
             "chosen": [assistant(f"Red, blue and {i} more.")], "rejected": [assistant("No.")], "source": "A",
             "score_chosen": 0.3, "score_rejected": 0.25} for i in range(n)]


def sft_rows(n):
    return [{"prompt_id": f"s{i}", "domain": "if", "messages": [user(f"Count to {i}."), assistant(f"1 to {i}.")],
             "source": "A", "rm_score": 0.3} for i in range(n)]


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def completion_ids(tokenizer, prompt, reply):
    """The reply's tokens, from the rendered texts: what follows the prompt with the generation prompt."""
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(prompt + reply, tokenize=False)
    assert full_text.startswith(prompt_text)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    assert full_ids[:len(prompt_ids)] == prompt_ids
    return prompt_ids, full_ids[len(prompt_ids):]


def summed_logp(model, prompt_ids, reply_ids):
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return sum(logp[len(prompt_ids) + k - 1, t].item() for k, t in enumerate(reply_ids))


@pytest.mark.slow
def test_sft_masks_the_prompt_in_fusechat3_mode_only(tmp_path):
    from fusechat.implicit.sft import sft_trainer
    from fusechat.implicit.training import TrainSettings, load_policy

    model_dir = str(build_tiny_model(PIVOT))
    rows = sft_rows(4)
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    out = tmp_path / "sft_out"
    assert run_cli(cli.sft_main, ["--model", model_dir, "--data", data, "--out", str(out), "--max-steps", "2",
                                  "--learning-rate", "1e-4"]) == 0
    history = metrics(out)["log_history"]
    assert metrics(out)["mode"] == "fusechat3" and all(math.isfinite(h["loss"]) for h in history if "loss" in h)
    assert (out / "model.safetensors").is_file()

    model, tokenizer = load_policy(model_dir)
    prompt_ids, reply_ids = completion_ids(tokenizer, rows[0]["messages"][:1], rows[0]["messages"][1:])
    settings = TrainSettings(1e-4, batch_size=4, max_length=64)
    batch = next(iter(sft_trainer(model, tokenizer, rows, "fusechat3", settings, str(tmp_path / "a"))
                      .get_train_dataloader()))
    expected = prompt_ids + reply_ids
    (ids, labels), = [(i, l) for i, l in zip(batch["input_ids"].tolist(), batch["labels"].tolist())
                      if i[:len(expected)] == expected]  # the dataloader shuffles: find rows[0]
    assert labels[:len(prompt_ids)] == [-100] * len(prompt_ids)
    assert labels[len(prompt_ids):len(prompt_ids) + len(reply_ids)] == reply_ids

    packed = next(iter(sft_trainer(model, tokenizer, rows, "wrpo", settings, str(tmp_path / "b"))
                       .get_train_dataloader()))
    assert packed["input_ids"].shape == (2, 64)  # the four rows (about 110 tokens) wrapped into two blocks
    found = False
    for ids, labels in zip(packed["input_ids"].tolist(), packed["labels"].tolist()):
        used = next(i for i in range(64, 0, -1) if labels[i - 1] != -100)
        assert labels[:used] == ids[:used] and labels[used:] == [-100] * (64 - used)  # only padding is masked
        found |= any(labels[i:i + len(prompt_ids)] == prompt_ids for i in range(used))
    assert found  # prompt tokens are labels


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sigmoid", "sigmoid_norm"])
def test_dpo_first_loss_is_ln2_with_the_policy_as_reference(tmp_path, loss):
    data = write_jsonl(tmp_path / "dpo.jsonl", dpo_rows(2))
    out = tmp_path / "dpo_out"
    status = run_cli(cli.dpo_main, ["--model", str(build_tiny_model(PIVOT)), "--data", data, "--out", str(out),
                                    "--max-steps", "1", "--loss", loss, "--beta", "10", "--batch-size", "2"])
    assert status == 0
    assert metrics(out)["log_history"][0]["loss"] == pytest.approx(LN2, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("loss, beta", [("sigmoid", 0.1), ("sigmoid_norm", 2.0)])
def test_dpo_batch_loss_equals_the_oracle(tmp_path, loss, beta):
    from fusechat.implicit.dpo import dpo_trainer
    from fusechat.implicit.training import TrainSettings, load_policy

    policy, tokenizer = load_policy(str(build_tiny_model(PIVOT)))
    reference, _ = load_policy(str(build_tiny_model(SAME_VOCAB_SOURCE)))  # same vocabulary, other weights
    rows = dpo_rows(3)
    trainer = dpo_trainer(policy, tokenizer, rows, loss, beta, TrainSettings(1e-4, batch_size=3, max_length=128),
                          str(tmp_path / "o"), ref_model=reference)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
    terms = []
    for row in rows:  # independently: the replies' tokens and summed log-probs under each model
        p_ids, c_ids = completion_ids(tokenizer, row["prompt"], row["chosen"])
        _, r_ids = completion_ids(tokenizer, row["prompt"], row["rejected"])
        pc, pr = summed_logp(policy, p_ids, c_ids), summed_logp(policy, p_ids, r_ids)
        rc, rr = summed_logp(reference, p_ids, c_ids), summed_logp(reference, p_ids, r_ids)
        terms.append(dpo_loss(pc, pr, rc, rr, beta) if loss == "sigmoid"
                     else ln_dpo_loss(pc, pr, rc, rr, len(c_ids), len(r_ids), beta))
    assert got == pytest.approx(float(sum(terms) / len(terms)), abs=1e-6)


@pytest.mark.slow
def test_wrpo_alpha_ramp_first_loss_and_released_yaml(tmp_path):
    data = write_jsonl(tmp_path / "wrpo.jsonl", wrpo_rows(10))
    config = tmp_path / "wrpo.yaml"
    config.write_text("beta: 0.5\nalpha: 0.1\nis_dynamic: true\nloss_type: wrpo\nmax_length: 128\n"
                      "max_prompt_length: 100\nlearning_rate: 1.0e-4\nnum_train_epochs: 1\n"
                      "per_device_train_batch_size: 1\ngradient_accumulation_steps: 1\nwarmup_ratio: 0.1\n"
                      "lr_scheduler_type: cosine\ntorch_dtype: null\nbf16: true\nsave_strategy: \"no\"\n")
    out = tmp_path / "wrpo_out"
    status = run_cli(cli.wrpo_main, ["--config", str(config), "--model", str(build_tiny_model(PIVOT)),
                                     "--data", data, "--out", str(out)])
    assert status == 0
    record = metrics(out)
    assert record["beta"] == 0.5 and record["max_prompt_length"] == 100
    steps = [h for h in record["log_history"] if "loss" in h]
    # T = ceil(1 epoch x floor(10 batches / 1)) = 10; step s ran at global_step s - 1.
    assert [h["alpha"] for h in steps] == pytest.approx([wrpo_alpha(t, 10, 0.1) for t in range(10)], abs=1e-12)
    assert steps[0]["loss"] == pytest.approx(LN2, abs=1e-6)
    assert steps[-1]["loss"] < LN2


@pytest.mark.slow
def test_wrpo_batch_loss_equals_the_oracle(tmp_path):
    from fusechat.implicit.training import TrainSettings, load_policy
    from fusechat.implicit.wrpo_trainer import WRPOSettings, wrpo_trainer

    policy, tokenizer = load_policy(str(build_tiny_model(PIVOT)))
    reference, _ = load_policy(str(build_tiny_model(SAME_VOCAB_SOURCE)))
    rows = wrpo_rows(3)
    trainer = wrpo_trainer(policy, reference, tokenizer, rows, WRPOSettings(beta=0.1, alpha=0.3, is_dynamic=False),
                           TrainSettings(1e-4, batch_size=3, max_length=128), str(tmp_path / "o"))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch).item()
    terms = []
    for row in rows:
        logps = {}
        for key in ("chosen_source", "chosen_target", "rejected"):
            p_ids, c_ids = completion_ids(tokenizer, row["prompt"], row[key])
            logps[key] = (summed_logp(policy, p_ids, c_ids), summed_logp(reference, p_ids, c_ids))
        (p_ws, r_ws), (p_wt, r_wt), (p_l, r_l) = logps.values()
        terms.append(wrpo_loss(p_ws, p_wt, p_l, r_ws, r_wt, r_l, 0.1, 0.3))
    assert got == pytest.approx(float(sum(terms) / len(terms)), abs=1e-6)


def test_wrpo_rendering_and_truncation_spans():
    from fusechat.implicit.wrpo_trainer import WRPOSettings, tokenize_row

    tokenizer = load_tokenizer("openchat")
    row = wrpo_rows(1)[0]
    ids, truncated = tokenize_row(row, tokenizer, WRPOSettings(max_length=128, max_prompt_length=100))
    assert not truncated
    for key, column in (("chosen_source", "ws_ids"), ("chosen_target", "wt_ids"), ("rejected", "l_ids")):
        prompt_ids, reply_ids = completion_ids(tokenizer, row["prompt"], row[key])
        assert ids["prompt_ids"] == prompt_ids and ids[column] == reply_ids
        assert tokenizer.decode(reply_ids) == row[key][0]["content"] + "<|end_of_turn|>"
    long_row = {**row, "chosen_source": [assistant("word " * 60)]}
    prompt_len = len(ids["prompt_ids"])
    full = len(completion_ids(tokenizer, row["prompt"], long_row["chosen_source"])[1])
    assert prompt_len < 30 and full > 50
    default, hit = tokenize_row(long_row, tokenizer, WRPOSettings(max_length=50, max_prompt_length=30))
    assert hit and len(default["prompt_ids"]) == prompt_len and len(default["ws_ids"]) == 50 - prompt_len
    assert len(default["wt_ids"]) == len(ids["wt_ids"])  # short responses are not cut
    reference, _ = tokenize_row(long_row, tokenizer, WRPOSettings(max_length=50, max_prompt_length=30,
                                                                  truncation="reference"))
    assert len(reference["ws_ids"]) == 20  # every response cut to max_length - max_prompt_length
    assert reference["wt_ids"] == ids["wt_ids"][:20] and reference["l_ids"] == ids["l_ids"][:20]


def test_released_wrpo_rows_round_trip(tmp_path, capsys):
    rows = wrpo_rows(3)
    data = write_jsonl(tmp_path / "wrpo.jsonl", rows)
    assert run_cli(cli.convert_main, ["--to", "wrpo-release", data, str(tmp_path / "released"),
                                      "--test-share", "0.34"]) == 0
    from datasets import load_from_disk

    released = load_from_disk(str(tmp_path / "released"))
    assert len(released["train"]) == 2 and len(released["test"]) == 1
    first = released["train"][0]
    assert first["prompt"] == user("What is 0 plus 0?")  # one message dict, not a list
    assert [c["content"] for c in first["chosen"]] == ["It is 0, since 0 and 0 make 0.", "0"]  # [y_ws, y_wt]
    assert run_cli(cli.convert_main, ["--to", "wrpo", str(tmp_path / "released"), str(tmp_path / "back.jsonl")]) == 0
    back = [json.loads(x) for x in (tmp_path / "back.jsonl").read_text().splitlines()]
    keep = ("prompt_id", "prompt", "chosen_source", "chosen_target", "rejected")
    assert [{k: r[k] for k in keep} for r in back] == [{k: r[k] for k in keep} for r in rows[:2]]
