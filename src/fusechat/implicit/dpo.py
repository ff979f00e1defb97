"""S5, DPO on TRL's DPOTrainer: plain (``sigmoid``) or length-normalised (``sigmoid_norm``), the policy
initialised from the target-SFT model and a frozen copy of it as the reference (docs/design.md 13.3)."""

from __future__ import annotations

LOSSES = ("sigmoid", "sigmoid_norm")


def dpo_rows_as_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                              for r in rows])


def dpo_trainer(model, tokenizer, rows: list[dict], loss: str, beta: float, settings, output_dir: str,
                ref_model=None):
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(**settings.trainer_kwargs(output_dir), beta=beta, loss_type=[loss],
                       max_length=settings.max_length, disable_dropout=True)
    return DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dpo_rows_as_dataset(rows),
                      processing_class=tokenizer)
