"""Arguments of train.py (docs/design.md 8): three dataclasses for ``transformers.HfArgumentParser``.

``ModelArguments`` and ``DataArguments`` hold the script's own flags; ``FuseTrainingArguments``
extends ``transformers.TrainingArguments``, so every Trainer flag works too. The published command
lines were written for an older transformers: :func:`translate_legacy_flags` rewrites the flags
that transformers has since renamed or removed into their current form before the parser sees
them, with one notice per rewritten flag.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import transformers

from ..errors import InputError
from ..kernels.checks import check_lm_loss_weight
from ..provenance import ACCEPT_HELP

logger = logging.getLogger(__name__)

FUSE_LOSS_TYPES = ("ce", "kl")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "The pivot model to fine-tune."})


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={
        "help": "With --do_fuse or --train_baseline: comma-separated dataset folders (save_to_disk), "
                "concatenated. Otherwise: a JSON corpus of ShareGPT conversations."})
    eval_data_path: str | None = field(default=None, metadata={"help": "Evaluation data, same form as --data_path."})
    accept_sets_without_provenance: bool = field(default=False, metadata={"help": ACCEPT_HELP})
    conv_temp: str = field(default="openchat_3.5", metadata={"help": "Conversation template (fusechat.templates)."})
    separator: str | None = field(default=None, metadata={
        "help": "Token that closes a turn; default: the model's (its eos, or <|im_end|>/<|eot_id|>/<end_of_turn>/"
                "<sep> for InternLM2/Llama-3/Gemma/Yuan, as the released code)."})
    mask_instruction: bool = field(default=True, metadata={
        "help": "Labels only on assistant replies and their separators (JSON corpus mode)."})
    lazy_preprocess: bool = field(default=False, metadata={
        "help": "Tokenize JSON conversations when they are first read instead of all up front."})


@dataclass
class FuseTrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for models loaded from the hub."})
    model_max_length: int = field(default=512, metadata={"help": "Longer rows are truncated."})
    flash_attn_transformers: bool = field(default=False, metadata={
        "help": "Use flash-attention 2 (SDPA with one warning when flash-attn is not installed)."})
    train_baseline: bool = field(default=False, metadata={"help": "Plain SFT on a representation set."})
    do_fuse: bool = field(default=False, metadata={"help": "Knowledge fusion on an aligned set."})
    fuse_with_ref_model: bool = field(default=True, metadata={
        "help": "Per conversation, fuse toward whichever of pivot and source has the lower CE (MinCE); "
                "False: always the source."})
    fuse_loss_type: str = field(default="ce", metadata={"help": "ce or kl."})
    fuse_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the targets."})
    lm_loss_weight: float = field(default=1.0, metadata={
        "help": "loss = w * LM loss + (1 - w) * fuse loss; w in [0, 1]."})
    pad_to_multiple_of: int | None = field(default=None, metadata={
        "help": "Pad each batch to a multiple of this length (e.g. 8 for tensor cores)."})
    # The collator picks its own columns from each row, so Trainer must not drop any.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the collator selects columns."})

    def __post_init__(self):
        check_fuse_arguments(self)
        if self.remove_unused_columns:
            logger.warning("--remove_unused_columns True ignored: the collator reads the columns it needs from each "
                           "row (and the fast path hands it whole Arrow batches)")
            self.remove_unused_columns = False
        super().__post_init__()


def check_fuse_arguments(args) -> None:
    """Bad values of the fusion flags, reported before any work starts."""
    check_lm_loss_weight(args.lm_loss_weight)
    if args.fuse_loss_type not in FUSE_LOSS_TYPES:
        raise InputError(f"--fuse_loss_type must be one of {', '.join(FUSE_LOSS_TYPES)}, got {args.fuse_loss_type!r}")
    if not args.fuse_temperature > 0:
        raise InputError(f"--fuse_temperature must be positive, got {args.fuse_temperature}")
    if args.model_max_length < 2:
        raise InputError(f"--model_max_length must be at least 2, got {args.model_max_length}")
    if args.pad_to_multiple_of is not None and args.pad_to_multiple_of < 1:
        raise InputError(f"--pad_to_multiple_of must be positive, got {args.pad_to_multiple_of}")
    if args.do_fuse and args.train_baseline:
        raise InputError("--do_fuse and --train_baseline exclude each other")


# ---- legacy flags ---------------------------------------------------------------------------

# old name -> current name, same value. Applied only when the current name exists and the old one
# is gone (or is a deprecated alias), so the table follows the installed transformers.
RENAMED_FLAGS = {
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
    "per_gpu_train_batch_size": "per_device_train_batch_size",
    "per_gpu_eval_batch_size": "per_device_eval_batch_size",
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}
DEPRECATED_ALIASES = {"gradient_checkpointing", "gradient_checkpointing_kwargs"}
CHECKPOINTING_FLAGS = {"gradient_checkpointing", "activation_checkpointing"}
# Removed flags whose effect is now the default (or lives elsewhere): dropped with a notice.
DROPPED_FLAGS = {
    "overwrite_output_dir": "checkpoints are resumed from output_dir, nothing is overwritten first",
    "save_safetensors": "models are always saved as safetensors",
    "logging_dir": "set TENSORBOARD_LOGGING_DIR instead",
}
# FSDP option words of the old string form of --fsdp, as fsdp_config entries (FSDP2 shape).
FSDP_WORDS = {"full_shard": ("reshard_after_forward", True), "shard_grad_op": ("reshard_after_forward", False),
              "offload": ("cpu_offload", True), "auto_wrap": None}


def training_argument_names() -> set[str]:
    return {f.name for f in dataclasses.fields(FuseTrainingArguments)}


def _split_flags(argv: list[str]) -> list[tuple[str | None, str | None, bool]]:
    """argv as (flag name, value, value was inline) items; a positional token has name None."""
    items, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            items.append((None, token, False))
            i += 1
            continue
        name, eq, inline = token[2:].partition("=")
        if eq:
            items.append((name, inline, True))
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            items.append((name, argv[i + 1], False))
            i += 2
        else:
            items.append((name, None, False))
            i += 1
    return items


def _truthy(value: str | None) -> bool:
    return value is None or value.lower() in ("true", "1", "yes", "y")


def translate_legacy_flags(argv: list[str], known: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Rewrite renamed or removed TrainingArguments flags; return the new argv and one notice per flag.

    ``--evaluation_strategy X`` -> ``--eval_strategy X``; ``--warmup_ratio R`` -> ``--warmup_steps R``
    (a value below 1 is a ratio); ``--fsdp_transformer_layer_cls_to_wrap C`` and the string form
    ``--fsdp "full_shard auto_wrap"`` -> ``--fsdp`` with entries of ``--fsdp_config``; under FSDP
    ``--gradient_checkpointing True`` -> fsdp_config's ``activation_checkpointing`` (FSDP's own: the
    Trainer's would add a redundant AllGather in backward); and the others in :data:`RENAMED_FLAGS`
    and :data:`DROPPED_FLAGS`.
    """
    known = training_argument_names() if known is None else known
    items = _split_flags(argv)
    names = {name for name, _, _ in items if name}
    fsdp_on = any(name == "fsdp" and (value is None or _is_fsdp_word_list(value) or _truthy(value))
                  for name, value, _ in items)
    out: list[str] = []
    notices: list[str] = []
    fsdp_updates: dict = {}
    fsdp_config_value: str | None = None
    fsdp_config_slice: slice | None = None  # where --fsdp_config sits in ``out``
    fsdp_requested = False

    for name, value, inline in items:
        if name is None:
            out.append(value)
            continue
        new = RENAMED_FLAGS.get(name)
        if name in CHECKPOINTING_FLAGS and fsdp_on:
            if _truthy(value):
                fsdp_updates["activation_checkpointing"] = True
                notices.append(f"--{name} under FSDP is fsdp_config's activation_checkpointing (FSDP's own, "
                               "without the redundant AllGather in backward); using activation_checkpointing=true")
        elif new and new in known and (name not in known or name in DEPRECATED_ALIASES):
            notices.append(f"--{name} is now --{new}; using --{new}" + (f" {value}" if value is not None else ""))
            out.extend(_emit(new, value, inline))
        elif name in DROPPED_FLAGS and name not in known:
            notices.append(f"--{name} no longer exists in transformers {transformers.__version__}; ignored "
                           f"({DROPPED_FLAGS[name]})")
        elif name == "warmup_ratio" and name not in known:
            ratio = _float_flag(name, value)
            if not 0 <= ratio < 1:
                raise InputError(f"--warmup_ratio must be in [0, 1), got {value}")
            if "warmup_steps" in names:
                notices.append("--warmup_ratio ignored: --warmup_steps is given and takes precedence")
            else:
                notices.append(f"--warmup_ratio is now --warmup_steps (a value below 1 is a ratio); "
                               f"using --warmup_steps {value}")
                out.extend(["--warmup_steps", value])
        elif name == "group_by_length" and name not in known:
            if _truthy(value):
                notices.append("--group_by_length is now --train_sampling_strategy group_by_length")
                out.extend(["--train_sampling_strategy", "group_by_length"])
            else:
                notices.append("--group_by_length False ignored (it is the default)")
        elif name == "fsdp_transformer_layer_cls_to_wrap" and name not in known:
            if not value:
                raise InputError("--fsdp_transformer_layer_cls_to_wrap needs a class name")
            fsdp_updates["transformer_layer_cls_to_wrap"] = [c.strip() for c in value.split(",") if c.strip()]
            notices.append(f"--fsdp_transformer_layer_cls_to_wrap is now an entry of --fsdp_config; "
                           f"using transformer_layer_cls_to_wrap={fsdp_updates['transformer_layer_cls_to_wrap']}")
        elif name == "fsdp" and value is not None and _is_fsdp_word_list(value):
            fsdp_requested = True
            for word in value.split():
                entry = FSDP_WORDS[word]
                if entry:
                    fsdp_updates.setdefault(entry[0], entry[1])
            notices.append(f"--fsdp \"{value}\" is the deprecated string form; using --fsdp with fsdp_config "
                           f"entries {_fsdp_word_entries(value)}")
        elif name == "fsdp_config" and value is not None:
            fsdp_config_value = value
            tokens = _emit(name, value, inline)
            fsdp_config_slice = slice(len(out), len(out) + len(tokens))
            out.extend(tokens)
        else:
            out.extend(_emit(name, value, inline))

    if fsdp_requested:
        out.append("--fsdp")
    if fsdp_updates:
        config = _load_fsdp_config(fsdp_config_value)
        if fsdp_updates and config.get("version", 2) in (1, "1") and "reshard_after_forward" in fsdp_updates:
            # FSDP1 names its sharding strategy instead of the FSDP2 flag.
            fsdp_updates["reshard_after_forward"] = "full_shard" if fsdp_updates["reshard_after_forward"] \
                else "shard_grad_op"
        for key, val in fsdp_updates.items():
            config.setdefault(key, val)
        merged = ["--fsdp_config", json.dumps(config)]
        if fsdp_config_slice is None:
            out.extend(merged)
        else:
            out[fsdp_config_slice] = merged
    return out, notices


def _emit(name: str, value: str | None, inline: bool) -> list[str]:
    if value is None:
        return [f"--{name}"]
    return [f"--{name}={value}"] if inline else [f"--{name}", value]


def _float_flag(name: str, value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"--{name} needs a number, got {value!r}") from None


def _is_fsdp_word_list(value: str) -> bool:
    words = value.split()
    return bool(words) and all(w in FSDP_WORDS for w in words)


def _fsdp_word_entries(value: str) -> dict:
    return dict(FSDP_WORDS[w] for w in value.split() if FSDP_WORDS[w])


def _load_fsdp_config(value: str | None) -> dict:
    """--fsdp_config as given: a JSON object or the path of a JSON file."""
    if value is None or not value.strip():
        return {}
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"--fsdp_config is not valid JSON: {exc}") from exc
    path = Path(value)
    if not path.is_file():
        raise InputError(f"--fsdp_config file not found: {value}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"--fsdp_config file {value} is not valid JSON: {exc}") from exc


def make_parser() -> transformers.HfArgumentParser:
    return transformers.HfArgumentParser((ModelArguments, DataArguments, FuseTrainingArguments))


def parse_args(argv: list[str] | None = None):
    """``(model_args, data_args, training_args)`` from the command line, legacy flags translated."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    argv, notices = translate_legacy_flags(argv)
    if os.environ.get("RANK", "0") == "0":  # once per run, not once per process
        for notice in notices:
            logger.warning(notice)
    *parsed, unknown = make_parser().parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise InputError(f"unrecognized arguments: {' '.join(unknown)}")
    model_args, data_args, training_args = parsed
    if not model_args.model_name_or_path:
        raise InputError("--model_name_or_path is required")
    if not data_args.data_path:
        raise InputError("--data_path is required")
    return model_args, data_args, training_args
