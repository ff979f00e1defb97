"""train.py under ``torchrun --nproc_per_node=2`` on CPU (gloo): the ranks share out the rows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import aligned_rows, save_set

from fusechat.training.run import ROW_LOG_ENV

pytestmark = pytest.mark.slow  # end-to-end: whole scripts, model runs or subprocesses

SCRIPT = Path(__file__).resolve().parents[1] / "FuseChat" / "train" / "train.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_on_different_rows_and_save_a_loadable_model(tmp_path, pivot_path, openchat_tokenizer):
    from transformers import AutoModelForCausalLM

    rows = aligned_rows(openchat_tokenizer, count=12, seed=3)
    data = save_set(rows, tmp_path / "set", tokenizer=openchat_tokenizer)
    output_dir = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(SCRIPT), "--model_name_or_path", str(pivot_path), "--data_path", str(data),
               "--output_dir", str(output_dir), "--use_cpu", "True", "--report_to", "none",
               "--num_train_epochs", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
               "--evaluation_strategy", "no", "--save_strategy", "epoch", "--logging_steps", "1",
               "--learning_rate", "5e-6", "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.03",
               "--model_max_length", "2048", "--do_train", "--do_fuse", "--fuse_with_ref_model", "True",
               "--lm_loss_weight", "0.9", "--conv_temp", "openchat_3.5", "--dataloader_num_workers", "1"]
    env = {**os.environ, ROW_LOG_ENV: "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

    seen = [(output_dir / f"row_ids.rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(row["id"] for row in rows)

    state = json.loads((output_dir / "trainer_state.json").read_text())
    steps = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3]  # 12 rows / (2 processes x 2 rows)
    assert all({"lm_loss", "fuse_loss", "source_share"} <= entry.keys() for entry in steps)
    AutoModelForCausalLM.from_pretrained(output_dir)
