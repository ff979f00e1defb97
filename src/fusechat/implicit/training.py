"""What the SFT, DPO and WRPO stages share: their training settings and how a run is saved."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError

logger = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class TrainSettings:
    learning_rate: float
    epochs: float = 1.0
    batch_size: int = 2
    grad_accum: int = 1
    max_length: int = 2048
    max_steps: int = -1
    warmup_ratio: float = 0.1
    seed: int = 42
    logging_steps: int = 1

    def trainer_kwargs(self, output_dir: str) -> dict:
        """TrainingArguments fields (TRL's configs extend them): cosine schedule, AdamW without weight
        decay, bf16 on a GPU, float32 on a CPU, no checkpoints (the final model is saved whole)."""
        import torch

        cuda = torch.cuda.is_available()
        return dict(output_dir=output_dir, learning_rate=self.learning_rate, num_train_epochs=self.epochs,
                    per_device_train_batch_size=self.batch_size, gradient_accumulation_steps=self.grad_accum,
                    max_steps=self.max_steps, warmup_steps=self.warmup_ratio, lr_scheduler_type="cosine",
                    weight_decay=0.0, seed=self.seed, logging_steps=self.logging_steps, save_strategy="no",
                    report_to="none", bf16=cuda, use_cpu=not cuda, dataloader_num_workers=0,
                    disable_tqdm=False)


def add_train_flags(parser: argparse.ArgumentParser, learning_rate: float, batch_size: int = 2,
                    grad_accum: int = 1) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--learning-rate", type=float, default=learning_rate)
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=batch_size, help="per device")
    g.add_argument("--grad-accum", type=int, default=grad_accum)
    g.add_argument("--max-length", type=int, default=2048)
    g.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs)")
    g.add_argument("--warmup-ratio", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=42)


def settings_from(args) -> TrainSettings:
    if args.batch_size < 1 or args.grad_accum < 1 or args.max_length < 2:
        raise InputError("--batch-size and --grad-accum must be at least 1, --max-length at least 2")
    if not 0 <= args.warmup_ratio < 1:
        raise InputError(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    return TrainSettings(args.learning_rate, args.epochs, args.batch_size, args.grad_accum, args.max_length,
                         args.max_steps, args.warmup_ratio, args.seed)


def load_policy(path: str):
    """The model to train and its tokenizer (pad token set), float32 weights (bf16 autocast on a GPU)."""
    from ..modeling import check_model_path, load_causal_lm, load_tokenizer

    check_model_path(path, "--model")
    tokenizer = load_tokenizer(path)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"--model {path}: the tokenizer has no chat template (the conversations are rendered "
                         "with it)")
    return load_causal_lm(path), tokenizer


def save_run(trainer, folder: Path, record: dict) -> None:
    """The trained model and tokenizer, and metrics.json: the run's settings and its log history."""
    from ..training.checkpoints import save_final

    save_final(trainer, str(folder))
    record = {**record, "log_history": trainer.state.log_history, "global_step": trainer.state.global_step}
    (folder / METRICS_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def settings_record(settings: TrainSettings) -> dict:
    return asdict(settings)
