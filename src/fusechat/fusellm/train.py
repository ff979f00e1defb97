"""FuseLLM/src/train.py's main() (docs/design.md 12.6): check the packed sets, train, save, evaluate.

Data: ``--dataset_name`` folders (packed DatasetDicts of 12.5), their ``train`` splits concatenated
in the given order, likewise ``validation`` for ``--do_eval``. No explicit shuffle: the Trainer's
sampler, seeded by ``--seed``, orders the rows, as in the reference. Every folder is checked before
the model is loaded: the columns each enabled teacher needs, NaN metrics (named by folder and row),
lengths, ids inside the model's vocabulary.

Without ``--do_distill`` the run is plain causal-LM training on input_ids/attention_mask/labels
(the Llama-2 CLM baseline). ``metrics.json`` in output_dir records the losses, ``perplexity``
(exp of the combined eval loss, as the reference reports it), which optimizer and schedule ran, and
how (``run``: processes, precision, DeepSpeed ZeRO stage).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, run_cli
from ..schema import metric_array
from ..modeling import check_model_path, load_causal_lm, load_config, load_tokenizer, output_vocab_size
from ..provenance import check_sets_tokenizer
from ..storage import check_output_dir, claim_output_dir, load_dataset_dir, split_paths, write_json
from ..training.datasets import ArrowRows, check_rows
from ..training.checkpoints import save_final
from .collator import DistillCollator
from .distill import PIVOT, source_teachers, teacher_columns, teacher_name
from .schedule import released_update_steps
from .train_arguments import parse_args
from .trainer import DistillTrainer

logger = logging.getLogger(__name__)

TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")


@dataclass(frozen=True)
class PackedRequirements:
    """What a packed set must hold for this run (the interface of fusechat.training.datasets.check_rows)."""

    teachers: tuple[str, ...]  # teachers whose lists are read (the pivot's whenever a source is)
    metric_teachers: tuple[str, ...]  # teachers whose metric decides (the candidates)
    vocab_size: int
    model_max_length: int
    fuse: bool = False
    fuse_with_ref_model: bool = False

    @property
    def topk_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(teacher_columns(t)[:2] for t in self.teachers)

    @property
    def metric_columns(self) -> tuple[str, ...]:
        return tuple(teacher_columns(t)[2] for t in self.metric_teachers)

    @property
    def columns(self) -> tuple[str, ...]:
        return TOKEN_COLUMNS + tuple(c for pair in self.topk_pairs for c in pair) + self.metric_columns


def requirements(args, vocab_size: int) -> PackedRequirements:
    if args.fusion_mode is None:
        return PackedRequirements((), (), vocab_size, args.model_max_length)
    candidates = args.candidates
    teachers = tuple(dict.fromkeys((PIVOT,) + candidates))  # empty aligned lists take the pivot's
    return PackedRequirements(teachers, candidates, vocab_size, args.model_max_length)


def check_packed_set(dataset, where: str, req: PackedRequirements) -> None:
    """The columns of every enabled teacher, no NaN metric, then the shared row checks."""
    present = set(dataset.column_names)
    for teacher in req.teachers:
        columns = teacher_columns(teacher)[:2] + ((teacher_columns(teacher)[2],) if teacher in req.metric_teachers
                                                  else ())
        missing = [c for c in columns if c not in present]
        if missing:
            hint = "" if teacher == PIVOT else f" (or leave {teacher} out of --distill_aligned_models)"
            if teacher in ("0", "1"):
                hint = f" (or set --distill_with_aligned_model_{teacher} False, or leave {teacher} out of " \
                       "--distill_aligned_models)"
            raise InputError(f"{where}: {teacher_name(teacher)} is a teacher but the set lacks {missing}; found "
                             f"{dataset.column_names}; align that source into the set first{hint}")
    for name in req.metric_columns:
        values = metric_array(dataset.data.column(name).combine_chunks(), name, where)
        nan = np.flatnonzero(np.isnan(values))
        if len(nan):
            raise InputError(f"{where}: row {int(nan[0])}: {name} is NaN ({len(nan)} such rows); pack with "
                             f"--fiter_nan or disable that teacher")
    unused = [t for t in source_teachers(dataset.column_names) if t not in req.metric_teachers]
    if unused and req.metric_teachers:
        logger.warning("%s holds source(s) %s that are not candidates of this run; --distill_aligned_models "
                       "%s makes every source a candidate", where, ", ".join(unused),
                       ",".join(source_teachers(dataset.column_names)))
    check_rows(dataset, where, req)


def load_packed(paths: str, split: str, req: PackedRequirements, limit: int | None):
    """The ``split`` of every folder of ``paths``, checked and concatenated in order (first ``limit`` rows)."""
    from datasets import Dataset, concatenate_datasets

    sets = []
    for folder in split_paths(paths):
        loaded = load_dataset_dir(folder, "--dataset_name")
        if isinstance(loaded, Dataset):
            raise InputError(f"--dataset_name {folder}: a single Dataset; a packed set is a DatasetDict with "
                             f"'train' and 'validation' splits")
        if split not in loaded:
            raise InputError(f"--dataset_name {folder}: no '{split}' split (found {list(loaded)})")
        check_packed_set(loaded[split], f"{folder} [{split}]", req)
        sets.append(loaded[split].select_columns(list(req.columns)))
    if not sets:
        raise InputError("--dataset_name: no dataset folder given")
    dataset = sets[0] if len(sets) == 1 else concatenate_datasets(sets)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return ArrowRows(dataset)


def optimizer_record(args) -> dict:
    """Which optimizer and schedule this run uses (12.6.5, docs/design.md 12.8 #21)."""
    if args.paper_optimizer:
        optim, schedule = (getattr(v, "value", v) for v in (args.optim, args.lr_scheduler_type))
        return {"optimizer": f"{optim} betas ({args.adam_beta1}, {args.adam_beta2}) eps {args.adam_epsilon}, "
                             f"no decay on norms and biases",
                "schedule": f"{schedule} (Trainer)", "source": "--paper_optimizer"}
    return {"optimizer": "AdamW betas (0.9, 0.999) eps 1e-08, weight decay on every parameter",
            "schedule": "WarmupDecayLR (log warm-up, linear decay to 0)",
            "source": "DeepSpeed config" if args.deepspeed else "the released DeepSpeed config, reproduced"}


def main(argv: list[str] | None = None):
    """Train (and evaluate); return the Trainer."""
    from transformers.trainer_utils import get_last_checkpoint

    model_args, data_args, args, generation_args = parse_args(argv)
    if not args.paper_optimizer:
        logger.warning("optimizer and schedule as the released DeepSpeed config runs them: AdamW betas (0.9, 0.999), "
                       "WarmupDecayLR; --optim, --adam_beta1/2 and --lr_scheduler_type are not applied "
                       "(--paper_optimizer applies them)")
    check_model_path(model_args.model_name_or_path)
    check_output_dir(args.output_dir, "--output_dir", [model_args.model_name_or_path,
                                                       *split_paths(data_args.dataset_name)])
    config = load_config(model_args.model_name_or_path, cache_dir=args.cache_dir)
    tokenizer = load_tokenizer(model_args.model_name_or_path, args.model_max_length, args.cache_dir)
    check_sets_tokenizer(split_paths(data_args.dataset_name), tokenizer, model_args.model_name_or_path,
                         "--dataset_name", data_args.accept_sets_without_provenance)
    vocab_size = config.get_text_config().vocab_size
    req = requirements(args, vocab_size)
    train_set = load_packed(data_args.dataset_name, "train", req, data_args.max_train_samples) if args.do_train \
        else None
    eval_set = load_packed(data_args.dataset_name, "validation", req, data_args.max_eval_samples) if args.do_eval \
        else None

    model = load_causal_lm(model_args.model_name_or_path, flash_attn=args.use_flash_attn, cache_dir=args.cache_dir)
    if output_vocab_size(model) != vocab_size:
        raise InputError(f"{model_args.model_name_or_path}: the output layer has {output_vocab_size(model)} rows "
                         f"but the config says {vocab_size}")
    model.config.use_cache = False
    claim_output_dir(args.output_dir)
    model.generation_config.update(**{k: v for k, v in vars(generation_args).items() if v is not None})
    if train_set is not None and args.max_steps <= 0:
        # The release's step count (12.6.5); it also sets S of the schedule.
        args.max_steps = released_update_steps(len(train_set), args.world_size, args.per_device_train_batch_size,
                                               args.gradient_accumulation_steps, args.num_train_epochs)
        logger.info("%d optimizer steps, as the release counts them (per-rank batches // accumulation)",
                    args.max_steps)
    collator = DistillCollator(tokenizer.pad_token_id, args.model_max_length, args.fusion_mode,
                               args.candidates, args.distill_teacher_temperature)
    trainer = DistillTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                             data_collator=collator, processing_class=tokenizer, fusion_mode=args.fusion_mode,
                             fusion_type=args.fusion_type, released_optimizer=not args.paper_optimizer,
                             candidates=args.candidates)
    record = optimizer_record(args)
    logger.info("optimizer: %s; schedule: %s (%s)", record["optimizer"], record["schedule"], record["source"])

    metrics = {"optimizer": record, "fusion": {"do_distill": args.do_distill, "mode": args.fusion_mode,
                                               "type": args.fusion_type if args.fusion_mode else None,
                                               "candidates": list(args.candidates) if args.fusion_mode else []}}
    if args.do_train:
        checkpoint = args.resume_from_checkpoint
        if checkpoint is None and Path(args.output_dir).is_dir():
            checkpoint = get_last_checkpoint(args.output_dir)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        model.config.use_cache = True
        save_final(trainer, args.output_dir)
        metrics["train"] = result.metrics
    if args.do_eval:
        evaluation = trainer.evaluate()
        # As the reference: exp of the combined loss (LM and distill), not a true perplexity.
        evaluation["perplexity"] = math.exp(evaluation["eval_loss"]) if evaluation["eval_loss"] < 700 else math.inf
        metrics["eval"] = evaluation
    metrics["run"] = run_record(args, trainer)
    if trainer.is_world_process_zero():
        write_json(Path(args.output_dir) / "metrics.json", metrics)
    return trainer


def run_record(args, trainer) -> dict:
    """How the run ran: processes, precision, and the DeepSpeed ZeRO stage (None without DeepSpeed)."""
    stage = None
    if trainer.is_deepspeed_enabled:
        stage = args.hf_deepspeed_config.config.get("zero_optimization", {}).get("stage", 0)
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return {"world_size": args.world_size, "zero_stage": stage, "precision": precision}


def cli(argv: list[str] | None = None) -> int:
    """Entry point of FuseLLM/src/train.py and fusellm-train."""
    return run_cli(main, argv, prog="train.py")
