"""train.py end to end on CPU: the published command line (GPU-only flags aside) on the tiny pivot.

Fusion on an aligned fixture set, resuming from the latest checkpoint, the two SFT modes, and bad
input reported before any model is loaded.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from fusechat import schema
from fusechat.errors import InputError
from fusechat.storage import mark_output
from fusechat.templates import encode_conversation, generation_prompt_ids, get_template
from fusechat.training import checkpoints, run
from fusechat.training.datasets import ConversationRows
from train_fixtures import aligned_rows, conversations, save_set
from train_run_helpers import aligned_set, command  # noqa: F401

pytestmark = pytest.mark.slow  # end-to-end: whole scripts, model runs or subprocesses

# The OpenChat-3.5 prompt ids published with FuseChat-7B for this conversation.
CHAT = [("user", "Hello"), ("assistant", "Hi"), ("user", "How are you today?")]
CHAT_IDS = [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747,
            15359, 32000, 420, 6316, 28781, 3198, 3123, 1247, 28747, 1602, 460, 368, 3154, 28804, 32000, 420, 6316,
            28781, 3198, 3123, 21631, 28747]


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory, pivot_path, aligned_set):
    output_dir = tmp_path_factory.mktemp("fused") / "out"
    trainer = run.main(command(pivot_path, aligned_set, output_dir))
    return output_dir, trainer


def test_published_command_trains_and_saves_a_loadable_model(fused_run, pivot_path, openchat_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output_dir, trainer = fused_run
    assert (output_dir / "model.safetensors").exists() and (output_dir / "checkpoint-3").is_dir()
    assert not (output_dir / checkpoints.STAGING).exists()
    trained = AutoModelForCausalLM.from_pretrained(output_dir)
    pivot = AutoModelForCausalLM.from_pretrained(pivot_path)
    assert trained.config.use_cache
    assert not torch.equal(trained.model.embed_tokens.weight, pivot.model.embed_tokens.weight)

    saved = AutoTokenizer.from_pretrained(output_dir)
    prompt = saved.apply_chat_template([{"role": r, "content": c} for r, c in CHAT], add_generation_prompt=True)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert prompt == generation_prompt_ids(openchat_tokenizer, get_template("openchat_3.5"), CHAT) == CHAT_IDS


def test_losses_are_logged_apart(fused_run):
    output_dir, trainer = fused_run
    state = json.loads((output_dir / "trainer_state.json").read_text())
    steps = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3] and state["global_step"] == 3
    for entry in steps:
        assert entry["loss"] == pytest.approx(0.9 * entry["lm_loss"] + 0.1 * entry["fuse_loss"], rel=1e-5)
        assert 0.0 <= entry["source_share"] <= 1.0
        assert entry["source_share"] * 4 == round(entry["source_share"] * 4)  # 4 conversations a step


def test_a_second_run_resumes_from_the_latest_checkpoint(fused_run, tmp_path, pivot_path, aligned_set):
    """Two checkpoints, told apart by a mark in their trainer state: the run continues from checkpoint-10."""
    first_dir, _ = fused_run
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    mark_output(output_dir)  # as the interrupted run of this project left it
    for step in (9, 10):
        checkpoint = output_dir / f"checkpoint-{step}"
        shutil.copytree(first_dir / "checkpoint-3", checkpoint)
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        state["log_history"].append({"mark": f"from checkpoint-{step}", "step": 3})
        (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    trainer = run.main(command(pivot_path, aligned_set, output_dir))
    marks = [h["mark"] for h in trainer.state.log_history if "mark" in h]
    assert marks == ["from checkpoint-10"] and trainer.state.global_step == 3
    assert [h for h in trainer.state.log_history if "loss" in h] == \
        [h for h in json.loads((first_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def test_train_baseline_is_plain_sft_on_a_representation_set(tmp_path, pivot_path, openchat_tokenizer):
    from transformers import AutoModelForCausalLM

    rows = [{k: v for k, v in row.items() if not k.startswith("fused")}
            for row in aligned_rows(openchat_tokenizer, count=4)]
    data = save_set(rows, tmp_path / "representation", tokenizer=openchat_tokenizer)
    trainer = run.main(command(pivot_path, data, tmp_path / "out", max_steps=1, do_fuse="False",
                               train_baseline="True"))
    assert not isinstance(trainer, run.FuseTrainer)
    assert "fuse_loss" not in trainer.state.log_history[0]
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_plain_sft_from_the_json_corpus(tmp_path, pivot_path):
    corpus = [{"id": cid, "conversations": [{"from": "human" if r == "user" else "gpt", "value": text}
                                            for r, text in messages]} for cid, messages in conversations(5)]
    (tmp_path / "corpus.json").write_text(json.dumps(corpus))
    trainer = run.main(command(pivot_path, tmp_path / "corpus.json", tmp_path / "out", max_steps=1, do_fuse="False"))
    assert trainer.state.global_step == 1 and (tmp_path / "out" / "model.safetensors").exists()


def test_corpus_rows_eager_and_lazy_agree_with_the_template(openchat_tokenizer):
    records = [{"id": cid, "messages": messages} for cid, messages in conversations(4)]
    eager = ConversationRows(records, openchat_tokenizer, "openchat_3.5", 64)
    lazy = ConversationRows(records, openchat_tokenizer, "openchat_3.5", 64, lazy=True)
    for i, (cid, messages) in enumerate(conversations(4)):
        expected = encode_conversation(openchat_tokenizer, get_template("openchat_3.5"), messages, 64)
        assert eager[i] == lazy[i] == {"id": cid, **expected}


def test_the_json_corpus_is_shuffled_with_seed_42(tmp_path, openchat_tokenizer):
    from fusechat.training.arguments import DataArguments
    from fusechat.training.datasets import load_corpus_rows

    corpus = [{"id": f"c{i}", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
              for i in range(20)]
    (tmp_path / "c.json").write_text(json.dumps(corpus))
    rows = load_corpus_rows(str(tmp_path / "c.json"), openchat_tokenizer, DataArguments(lazy_preprocess=True), 64, True)
    assert [r["id"] for r in rows.records] == [r["id"] for r in random.Random(42).sample(corpus, 20)]


# ---- bad input ----------------------------------------------------------------------------------

def _drop_fused(rows):
    return [{k: v for k, v in row.items() if not k.startswith("fused")} for row in rows]


def _short_fused(rows):
    rows[3][schema.FUSED_LOGITS] = rows[3][schema.FUSED_LOGITS][:-1]
    rows[3][schema.FUSED_INDICES] = rows[3][schema.FUSED_INDICES][:-1]
    return rows


def _id_outside_vocab(rows):
    rows[5][schema.FUSED_INDICES][2] = [40000] * len(rows[5][schema.FUSED_INDICES][2])
    rows[5][schema.FUSED_LOGITS][2] = [1.0] * len(rows[5][schema.FUSED_INDICES][2])
    return rows


def _uneven_list(rows):
    rows[4][schema.FUSED_LOGITS][1] = rows[4][schema.FUSED_LOGITS][1] + [0.5]
    return rows


def _nan_logit(rows):
    rows[2][schema.LOGITS][3][0] = float("nan")
    return rows


def _nan_metric(rows):
    rows[1][schema.METRIC_CE] = float("nan")
    return rows


@pytest.mark.parametrize("corrupt, message", [
    (_drop_fused, "--do_fuse needs an aligned set .* no fused columns"),
    (_short_fused, r"row 3 \(id 'conv-3'\): fused_per_step_logits has \d+ positions but input_ids has \d+"),
    (_id_outside_vocab, r"row 5 \(id 'conv-5'\): position 2: fused_per_step_indices holds target id 40000, "
                        r"outside the model's vocabulary of 32002 ids"),
    (_uneven_list, r"row 4 \(id 'conv-4'\): position 1: fused_per_step_logits and fused_per_step_indices lists "
                   r"differ in length"),
    (_nan_logit, r"row 2 \(id 'conv-2'\): position 3: per_step_logits holds nan"),
    (_nan_metric, r"row 1 \(id 'conv-1'\): metric_ce is NaN; run filter_nan"),
])
def test_bad_aligned_sets_fail_before_training(tmp_path, monkeypatch, pivot_path, openchat_tokenizer, corrupt,
                                               message):
    monkeypatch.setattr(run, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    data = save_set(corrupt(aligned_rows(openchat_tokenizer, count=6)), tmp_path / "bad", tokenizer=openchat_tokenizer)
    with pytest.raises(InputError, match=f"{tmp_path / 'bad'}: .*{message}"):
        run.main(command(pivot_path, data, tmp_path / "out"))


def test_a_set_of_another_tokenizer_is_a_vocabulary_mismatch(tmp_path, monkeypatch, pivot_path, qwen_tokenizer):
    monkeypatch.setattr(run, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    data = save_set(aligned_rows(qwen_tokenizer, count=3), tmp_path / "qwen", index_dtype="int32")
    with pytest.raises(InputError, match=r"row 0 \(id 'conv-0'\): input_ids hold id \d+, outside the model's "
                                         r"vocabulary of 32002 ids: the set was made with another tokenizer"):
        run.main(command(pivot_path, data, tmp_path / "out") + ["--accept_sets_without_provenance"])


@pytest.mark.parametrize("flag, value, message", [
    ("--lm_loss_weight", "1.2", "--lm_loss_weight must be in [0, 1], got 1.2"),
    ("--fuse_loss_type", "js", "--fuse_loss_type must be one of ce, kl, got 'js'"),
])
def test_bad_flags_exit_with_one_clear_line(tmp_path, capsys, pivot_path, aligned_set, flag, value, message):
    argv = command(pivot_path, aligned_set, tmp_path / "out")
    argv[argv.index(flag) + 1] = value
    assert run.cli(argv) == 2
    assert f"train.py: error: {message}" in capsys.readouterr().err
