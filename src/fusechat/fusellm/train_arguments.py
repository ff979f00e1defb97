"""Arguments of FuseLLM's train.py (docs/design.md 12.6.1): four dataclasses for ``HfArgumentParser``.

The released script parsed with ``return_remaining_strings=True`` and silently ignored flags it
did not know, so a typo or a flag renamed by transformers disabled a feature unseen. Here renamed
flags are translated (``--evaluation_strategy`` -> ``--eval_strategy``, ``--warmup_ratio``, ...,
the table of :mod:`fusechat.training.arguments`) and any flag still unknown is reported in a loud
warning before training starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import transformers

from ..errors import InputError
from ..kernels.checks import check_lm_loss_weight
from ..provenance import ACCEPT_HELP
from ..training.arguments import translate_legacy_flags
from .distill import FUSION_TYPES, PIVOT, RULE_OF_MODE

logger = logging.getLogger(__name__)

DISTILL_LOSS_TYPES = ("ce", "kl")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "The pivot (student and teacher)."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={
        "help": "Comma-separated packed DatasetDict folders (save_to_disk); their train and validation "
                "splits are concatenated in the given order."})
    accept_sets_without_provenance: bool = field(default=False, metadata={"help": ACCEPT_HELP})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Accepted; unused, as in the reference."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Accepted; unused, as in the reference."})
    preprocessing_num_workers: int | None = field(default=None, metadata={
        "help": "Accepted; unused, as in the reference."})


@dataclass
class FuseLLMTrainingArguments(transformers.Seq2SeqTrainingArguments):
    training_mode: str = field(default="full", metadata={"help": "full (qlora is not offered)."})
    use_flash_attn: bool = field(default=False, metadata={
        "help": "The library's flash-attention 2 (SDPA when flash-attn is not installed)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for hub models."})
    model_max_length: int = field(default=2048, metadata={"help": "Rows are cut at this length."})
    report_to: str = field(default="none", metadata={"help": "tensorboard, wandb, none, ..."})
    # QLoRA knobs of the reference: accepted so the published lines parse; only --training_mode full runs.
    bits: int = field(default=4, metadata={"help": "QLoRA only (not offered)."})
    lora_r: int = field(default=64, metadata={"help": "QLoRA only (not offered)."})
    lora_alpha: float = field(default=16, metadata={"help": "QLoRA only (not offered)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "QLoRA only (not offered)."})
    double_quant: bool = field(default=True, metadata={"help": "QLoRA only (not offered)."})
    quant_type: str = field(default="nf4", metadata={"help": "QLoRA only (not offered)."})
    max_memory_MB: int = field(default=40000, metadata={"help": "QLoRA only (not offered)."})
    adam8bit: bool = field(default=False, metadata={"help": "QLoRA only (not offered)."})
    # Distillation (12.6.1).
    do_distill: bool = field(default=False, metadata={"help": "LM loss plus distillation toward the teachers."})
    distill_with_ref_model: bool = field(default=True, metadata={"help": "The pivot's own top-k is a candidate."})
    distill_with_aligned_model_0: bool = field(default=True, metadata={"help": "Source 0 is a candidate."})
    distill_with_aligned_model_1: bool = field(default=True, metadata={"help": "Source 1 is a candidate."})
    distill_aligned_models: str | None = field(default=None, metadata={
        "help": "Comma-separated indices of the sources that are candidates, any number (e.g. 0 for one source, "
                "0,1,2 for three: the *_<k> columns of token_alignment.py --blending_model_index k); given, it "
                "replaces --distill_with_aligned_model_0/1."})
    distill_loss_type: str = field(default="ce", metadata={"help": "ce or kl."})
    distill_teacher_temperature: float = field(default=1.0, metadata={"help": "T of the teacher softmax."})
    lm_loss_weight: float = field(default=1.0, metadata={
        "help": "lambda: loss = lambda * LM + (1 - lambda) * distill."})
    distill_greater_as_gt: bool = field(default=False, metadata={
        "help": "MinCE: per packed row, the teacher with the lowest CE."})
    distill_greater_as_gt_type: str = field(default="hard", metadata={"help": "hard, hard_and_decay or soft."})
    distill_weighted_as_gt: bool = field(default=False, metadata={
        "help": "Target = reward-weighted sum of the teachers (softmax over exp(-CE))."})
    distill_weighted_as_gt_type: str = field(default="hard", metadata={"help": "hard, hard_and_decay or soft."})
    paper_optimizer: bool = field(default=False, metadata={
        "help": "Use the Trainer's optimizer and schedule from the command line (--lr_scheduler_type cosine, "
                "--adam_beta2 0.95 as published) instead of what the released DeepSpeed config runs "
                "(AdamW 0.9/0.999, WarmupDecayLR)."})
    # The collator picks its own columns from each row, so Trainer must not drop any.
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "Kept False: the collator needs the teacher columns."})

    def __post_init__(self):
        if self.remove_unused_columns:
            logger.warning("--remove_unused_columns True ignored: the collator needs the teacher columns")
            self.remove_unused_columns = False
        if self.paper_optimizer and isinstance(self.deepspeed, str) and not self.deepspeed.lstrip().startswith("{"):
            self.deepspeed = paper_deepspeed_config(self.deepspeed)
        super().__post_init__()  # first: it settles do_eval from the evaluation strategy
        check_distill_arguments(self)

    @property
    def fusion_mode(self) -> str | None:
        """"greater", "weighted", or None (no distillation term)."""
        if not self.do_distill:
            return None
        if self.distill_greater_as_gt:
            return "greater"
        return "weighted" if self.distill_weighted_as_gt else None

    @property
    def fusion_type(self) -> str:
        return self.distill_greater_as_gt_type if self.fusion_mode == "greater" else self.distill_weighted_as_gt_type

    @property
    def candidates(self) -> tuple[str, ...]:
        """The teachers in candidate order: the pivot (if on), then the sources by index."""
        pivot = (PIVOT,) if self.distill_with_ref_model else ()
        if self.distill_aligned_models is not None:
            return pivot + parse_source_indices(self.distill_aligned_models)
        flags = (("0", self.distill_with_aligned_model_0), ("1", self.distill_with_aligned_model_1))
        return pivot + tuple(name for name, on in flags if on)


@dataclass
class GenerationArguments:
    """The reference's generation settings: they only fill a generation config (nothing is generated)."""

    max_length: int = field(default=4096)
    max_new_tokens: int | None = field(default=None)
    do_sample: bool = field(default=True)
    num_beams: int = field(default=1)
    temperature: float = field(default=0.6)
    top_k: int = field(default=50)
    top_p: float = field(default=0.9)
    repetition_penalty: float = field(default=1.0)


def parse_source_indices(text: str) -> tuple[str, ...]:
    """``--distill_aligned_models``: "0,2,1" -> ("0", "1", "2"); empty means no source."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise InputError(f"--distill_aligned_models {text!r}: expected comma-separated source indices such as 0,1,2")
    indices = [int(p) for p in parts]
    if len(set(indices)) != len(indices):
        raise InputError(f"--distill_aligned_models {text!r}: a source index is given twice")
    return tuple(str(k) for k in sorted(indices))


def check_distill_arguments(args) -> None:
    """Bad or contradictory flags, reported before anything is loaded."""
    if args.training_mode != "full":
        raise InputError(f"--training_mode {args.training_mode}: only 'full' is offered (QLoRA is not)")
    check_lm_loss_weight(args.lm_loss_weight)
    if args.distill_loss_type not in DISTILL_LOSS_TYPES:
        raise InputError(f"--distill_loss_type must be ce or kl, got {args.distill_loss_type!r}")
    if not args.distill_teacher_temperature > 0:
        raise InputError(f"--distill_teacher_temperature must be positive, got {args.distill_teacher_temperature}")
    for flag in ("distill_greater_as_gt_type", "distill_weighted_as_gt_type"):
        if getattr(args, flag) not in FUSION_TYPES:
            raise InputError(f"--{flag} must be one of {', '.join(FUSION_TYPES)}, got {getattr(args, flag)!r}")
    if not args.do_distill:
        return
    if args.distill_greater_as_gt and args.distill_weighted_as_gt:
        logger.warning("--distill_greater_as_gt and --distill_weighted_as_gt both set: MinCE is used, as in the "
                       "reference")
    mode, candidates = args.fusion_mode, args.candidates
    if mode is None:
        logger.warning("--do_distill without --distill_greater_as_gt or --distill_weighted_as_gt: there is no "
                       "distillation term, the loss is %s * LM loss (as in the reference)", args.lm_loss_weight)
        return
    if args.distill_aligned_models is not None and not (args.distill_with_aligned_model_0 and
                                                        args.distill_with_aligned_model_1):
        logger.warning("--distill_aligned_models %s decides the source candidates: "
                       "--distill_with_aligned_model_0/1 are not read", args.distill_aligned_models)
    if mode == "greater" and not candidates:
        raise InputError("--distill_greater_as_gt: every teacher is disabled (--distill_with_ref_model False and "
                         "no source: --distill_with_aligned_model_0/1 False or --distill_aligned_models empty)")
    if mode == "weighted" and len(candidates) < RULE_OF_MODE[mode].min_candidates:
        raise InputError(f"--distill_weighted_as_gt needs at least two teachers with a source among them; "
                         f"enabled: {list(candidates) or 'none'}")
    if args.fusion_type == "soft":
        check_soft(args, mode, candidates)


def check_soft(args, mode: str, candidates: tuple[str, ...]) -> None:
    """The ``soft`` types weigh each packed row by its own reward: one row per micro-batch, every teacher named."""
    flag = f"--distill_{'greater' if mode == 'greater' else 'weighted'}_as_gt_type soft"
    if args.per_device_train_batch_size != 1:
        raise InputError(f"{flag} needs --per_device_train_batch_size 1 (one packed row per micro-batch), "
                         f"got {args.per_device_train_batch_size}")
    if args.do_eval and args.per_device_eval_batch_size != 1:
        raise InputError(f"{flag} needs --per_device_eval_batch_size 1 with --do_eval, "
                         f"got {args.per_device_eval_batch_size}")
    if mode == "greater" and args.distill_aligned_models is None and not {"0", "1"} <= set(candidates):
        # The release reads both sources' rewards by name (12.8 #27); --distill_aligned_models takes the
        # largest reward over whichever candidates it names.
        raise InputError(f"{flag} takes the largest reward over both sources (and the pivot): "
                         f"--distill_with_aligned_model_0 and --distill_with_aligned_model_1 must be True "
                         f"(or name the sources with --distill_aligned_models)")


def paper_deepspeed_config(path: str) -> dict:
    """The DeepSpeed config without its optimizer and scheduler, so that the Trainer's own (the paper's) run."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"--deepspeed {path}: {exc}") from exc
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    return config


def make_parser() -> transformers.HfArgumentParser:
    return transformers.HfArgumentParser((ModelArguments, DataArguments, FuseLLMTrainingArguments,
                                          GenerationArguments))


def parse_args(argv: list[str] | None = None):
    """(model, data, training, generation) arguments; renamed flags translated, unknown ones reported."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, notices = translate_legacy_flags(argv, _known_flags())
    first_process = os.environ.get("RANK", "0") == "0"
    *parsed, unknown = make_parser().parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if first_process:
        for notice in notices:
            logger.warning(notice)
        if unknown:
            banner = "!" * 78
            logger.warning("\n%s\nUNKNOWN COMMAND-LINE FLAGS, IGNORED (the released script ignored them silently; "
                           "check for typos and renamed flags):\n    %s\n%s", banner, " ".join(unknown), banner)
    model_args, data_args, training_args, generation_args = parsed
    if not model_args.model_name_or_path:
        raise InputError("--model_name_or_path is required")
    if not data_args.dataset_name:
        raise InputError("--dataset_name is required")
    return model_args, data_args, training_args, generation_args


def _known_flags() -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(FuseLLMTrainingArguments)}
