"""Command lines of the FuseLLM data stages (DESIGN.md 12.1-12.5), with the released flags.

The scripts ``FuseLLM/src/utils/<stage>.py`` run these through ``fusechat.errors.run_cli``. Flags
the released scripts take but that change nothing here are accepted and say so in their help.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError
from ..storage import save_dataset_atomic, write_json

logger = logging.getLogger("fusellm")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _num_proc(value: int | None) -> int | None:
    return value if value and value > 1 else None


class _Scratch:
    """A temporary folder next to the output, removed at the end whatever happens."""

    def __init__(self, out: str):
        self.out = Path(out)

    def __enter__(self) -> str:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix=f".{self.out.name}.scratch-", dir=self.out.parent)
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --- 12.1 split_long_text ---------------------------------------------------------------------

def split_long_text_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="split_long_text.py", description="Split texts longer than block_size - 48 "
                                "tokens for any of the three tokenizers (DESIGN.md 12.1).")
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--another_blending_model_name_or_path", required=True)
    p.add_argument("--dataset", required=True, help="a DatasetDict saved with save_to_disk, column 'text'")
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--block_size", type=int, default=2048)
    p.add_argument("--preprocessing_num_workers", type=int, default=80)
    p.add_argument("--dataset_sample_prop", type=float, default=None, help="debug: keep the first int(len*p) rows")
    return p


def split_long_text_main(argv=None) -> None:
    from datasets import DatasetDict

    from .common import TEXT, first_rows, load_dataset_dict, load_stage_tokenizer, require
    from .split_long_text import split_dataset

    _setup_logging()
    args = split_long_text_parser().parse_args(argv)
    if args.block_size <= 48:
        raise InputError(f"--block_size must exceed 48 (the threshold is block_size - 48), got {args.block_size}")
    dataset_dict = load_dataset_dict(args.dataset, "--dataset")
    for split, dataset in dataset_dict.items():
        require(dataset, [TEXT], f"--dataset {args.dataset} split {split!r}")
    tokenizers = [load_stage_tokenizer(path, None, args.cache_dir) for path in (
        args.base_model_name_or_path, args.blending_model_name_or_path, args.another_blending_model_name_or_path)]
    result = DatasetDict({
        split: split_dataset(first_rows(dataset, args.dataset_sample_prop), tokenizers, args.block_size,
                             _num_proc(args.preprocessing_num_workers))
        for split, dataset in dataset_dict.items()})
    for split in result:
        logger.info("split %s: %d rows -> %d rows", split, len(first_rows(dataset_dict[split], args.dataset_sample_prop)),
                    len(result[split]))
    save_dataset_atomic(result, args.dataset_save_dir)


# --- 12.2 forward_for_logits ------------------------------------------------------------------

def forward_for_logits_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forward_for_logits.py", description="Top-k logits and metric_ce of one "
                                "model over plain texts (DESIGN.md 12.2).")
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--dataset", required=True, help="output of split_long_text.py")
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--dataset_sample_prop", type=float, default=None, help="debug: keep the first int(len*p) rows")
    p.add_argument("--dataset_split_num", type=int, default=None)
    p.add_argument("--dataset_index", type=int, default=None)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--training_mode", default="full", help="full (qlora is not offered)")
    p.add_argument("--load_in_half", default="none", choices=["none", "fp16", "bf16"])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--preprocessing_num_workers", type=int, default=80, help="tokenization only")
    p.add_argument("--top_k_logits", type=int, default=10)
    p.add_argument("--save_per_token_metric", action="store_true")
    p.add_argument("--no_assert", action="store_true", help="keep NaN rows (packing.py --fiter_nan drops them)")
    return p


def forward_for_logits_main(argv=None) -> None:
    import torch

    from ..modeling import load_causal_lm, output_vocab_size
    from ..representation import CaptureOptions
    from .common import load_dataset_dict, load_stage_tokenizer
    from .representation import represent_dataset_dict

    _setup_logging()
    args = forward_for_logits_parser().parse_args(argv)
    if args.training_mode != "full":
        raise InputError(f"--training_mode {args.training_mode!r}: only 'full' is offered (the release uses it)")
    if args.top_k_logits < 1:
        raise InputError(f"--top_k_logits must be at least 1 (full logits are refused), got {args.top_k_logits}")
    if args.model_max_length < 2:
        raise InputError(f"--model_max_length must be at least 2, got {args.model_max_length}")
    dataset_dict = load_dataset_dict(args.dataset, "--dataset")
    tokenizer = load_stage_tokenizer(args.model_name_or_path, args.model_max_length, args.cache_dir)
    model = load_causal_lm(args.model_name_or_path, None, args.load_in_half, cache_dir=args.cache_dir)
    model.eval()
    model.config.use_cache = False
    if torch.cuda.is_available():
        model.to("cuda")
    if len(tokenizer) > output_vocab_size(model):
        raise InputError(f"{args.model_name_or_path}: tokenizer has {len(tokenizer)} tokens but the model's "
                         f"output layer only {output_vocab_size(model)}")
    options = CaptureOptions(top_k=args.top_k_logits, batch_size=args.batch_size,
                             per_token_metric=args.save_per_token_metric, no_assert=args.no_assert)
    with _Scratch(args.dataset_save_dir) as scratch:
        result = represent_dataset_dict(dataset_dict, tokenizer, model, args.model_max_length, options, scratch,
                                        args.dataset_sample_prop, args.dataset_split_num, args.dataset_index,
                                        _num_proc(args.preprocessing_num_workers))
        save_dataset_atomic(result, args.dataset_save_dir)
    logger.info("saved %s rows to %s", {s: len(d) for s, d in result.items()}, args.dataset_save_dir)


# --- 12.3 vocab_mapping -----------------------------------------------------------------------

def vocab_mapping_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vocab_mapping.py", description="Map every source vocabulary piece to a "
                                "pivot piece by minimum edit distance (DESIGN.md 12.3).")
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--dataset_dir", default=None, help="co_occurrence: counted on its validation split")
    p.add_argument("--vocab_mapping_save_dir", required=True, help="path of the JSON file written")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--vocab_mapping_type", default="default", help="default (MinED) or co_occurrence")
    p.add_argument("--window_size", type=int, default=5)
    p.add_argument("--num_process", type=int, default=1,
                   help="worker threads of the distance search (the reference ignores it and uses 64 processes)")
    return p


def vocab_mapping_main(argv=None) -> None:
    from ..alignment.vocab_mapping import word_start_marker
    from .common import load_stage_tokenizer
    from .vocab_mapping import MAPPING_TYPES, default_vocab_mapping, ordered_pieces

    _setup_logging()
    args = vocab_mapping_parser().parse_args(argv)
    if args.vocab_mapping_type not in MAPPING_TYPES:
        raise InputError(f"--vocab_mapping_type {args.vocab_mapping_type!r} is unknown; choose from "
                         f"{', '.join(MAPPING_TYPES)}")
    if args.num_process < 1:
        raise InputError(f"--num_process must be at least 1, got {args.num_process}")
    if not args.vocab_mapping_save_dir.endswith(".json"):
        raise InputError(f"--vocab_mapping_save_dir {args.vocab_mapping_save_dir}: the path of a .json file")
    co_occurrence = args.vocab_mapping_type == "co_occurrence"
    texts = _validation_texts(args.dataset_dir) if co_occurrence else None
    base = load_stage_tokenizer(args.base_model_name_or_path, args.model_max_length, args.cache_dir)
    blending = load_stage_tokenizer(args.blending_model_name_or_path, args.model_max_length, args.cache_dir)
    base_pieces, blending_pieces = ordered_pieces(base), ordered_pieces(blending)
    base_marker, blending_marker = word_start_marker(base), word_start_marker(blending)
    result = default_vocab_mapping(blending_pieces, base_pieces, blending_marker, base_marker,
                                   workers=args.num_process, with_minima=co_occurrence)
    if co_occurrence:
        from .vocab_mapping import cooccurrence_counts, cooccurrence_mapping

        mapping, minima = result
        counts = [cooccurrence_counts(tokenizer(texts, add_special_tokens=False, truncation=True,
                                                max_length=args.model_max_length)["input_ids"],
                                      len(pieces), args.window_size)
                  for tokenizer, pieces in ((base, base_pieces), (blending, blending_pieces))]
        mapping, changes = cooccurrence_mapping(
            mapping, minima, {p: i for i, p in enumerate(base_pieces)}, {p: i for i, p in enumerate(blending_pieces)},
            counts[0], counts[1], base_marker, blending_marker)
        log_path = args.vocab_mapping_save_dir[: -len(".json")] + "_updated_log.json"
        write_json(log_path, changes, indent=None)
        logger.info("co_occurrence changed %d entries (listed in %s)", len(changes), log_path)
    else:
        mapping = result
    write_json(args.vocab_mapping_save_dir, mapping, indent=None)
    exact = sum(key == value for key, value in mapping.items())
    logger.info("%d entries (%d exact, %d by minimum edit distance) written to %s", len(mapping), exact,
                len(mapping) - exact, args.vocab_mapping_save_dir)


def _validation_texts(dataset_dir: str | None) -> list[str]:
    from .common import TEXT, load_dataset_dict, require

    if not dataset_dir:
        raise InputError("--vocab_mapping_type co_occurrence needs --dataset_dir (its validation split is counted)")
    dataset_dict = load_dataset_dict(dataset_dir, "--dataset_dir")
    if "validation" not in dataset_dict:
        raise InputError(f"--dataset_dir {dataset_dir}: no 'validation' split (found {list(dataset_dict)})")
    require(dataset_dict["validation"], [TEXT], f"--dataset_dir {dataset_dir} split 'validation'")
    return list(dataset_dict["validation"][TEXT])


# --- 12.4 token_alignment ---------------------------------------------------------------------

def token_alignment_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="token_alignment.py", description="Align one source's distributions to the "
                                "pivot's tokens and add them as *_<index> columns (DESIGN.md 12.4).")
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--base_dataset_dir", required=True)
    p.add_argument("--blending_dataset_dir", required=True)
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048,
                   help="as given to forward_for_logits.py (used to check that rows hold the same documents)")
    p.add_argument("--preprocessing_num_workers", type=int, default=80)
    p.add_argument("--batch_size", type=int, default=1000)
    p.add_argument("--blending_model_index", type=int, default=0)
    p.add_argument("--vocab_align_type", default="hard")
    p.add_argument("--vocab_mapping_save_dir", default=None, help="the JSON file of vocab_mapping.py (soft)")
    p.add_argument("--metric_level", default="sequence")
    p.add_argument("--onehot_next_token", action="store_true",
                   help="ONE-HOT fallback on the next pivot token (FuseChat's fix) instead of the current one")
    return p


def token_alignment_main(argv=None) -> None:
    from datasets import DatasetDict

    from .common import load_dataset_dict
    from .token_alignment import PairSpec, align_split, check_align_type, check_metric_level

    _setup_logging()
    args = token_alignment_parser().parse_args(argv)
    check_metric_level(args.metric_level)
    check_align_type(args.vocab_align_type)
    if args.blending_model_index < 0:
        raise InputError(f"--blending_model_index must be 0 or more, got {args.blending_model_index}")
    if args.vocab_align_type == "soft" and not args.vocab_mapping_save_dir:
        raise InputError("--vocab_align_type soft needs --vocab_mapping_save_dir (the JSON file of vocab_mapping.py)")
    base = load_dataset_dict(args.base_dataset_dir, "--base_dataset_dir")
    blending = load_dataset_dict(args.blending_dataset_dir, "--blending_dataset_dir")
    if set(base) != set(blending):
        raise InputError(f"--base_dataset_dir has splits {sorted(base)} but --blending_dataset_dir has {sorted(blending)}")
    spec = PairSpec(args.base_model_name_or_path, args.blending_model_name_or_path, args.vocab_align_type,
                    args.vocab_mapping_save_dir, args.cache_dir)
    spec.tables()  # a bad model or mapping fails before any work
    result, skipped = {}, 0
    with _Scratch(args.dataset_save_dir) as scratch:
        for split in base:
            result[split], count = align_split(
                base[split], blending[split], spec, args.blending_model_index, args.model_max_length,
                args.onehot_next_token, args.batch_size, _num_proc(args.preprocessing_num_workers),
                base_name=f"{args.base_dataset_dir} split {split!r}",
                blending_name=f"{args.blending_dataset_dir} split {split!r}", scratch_dir=scratch)
            skipped += count
        if skipped:
            logger.warning("skipped %d source candidate(s) with no pivot mapping or no piece (the reference "
                           "crashes on them, DESIGN.md 12.8 #6)", skipped)
        save_dataset_atomic(DatasetDict(result), args.dataset_save_dir)
    logger.info("saved %s rows to %s", {s: len(d) for s, d in result.items()}, args.dataset_save_dir)


# --- 12.5 packing -----------------------------------------------------------------------------

def packing_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="packing.py", description="Pack every column into model_max_length-token "
                                "rows with token-weighted metrics (DESIGN.md 12.5).")
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--cache_dir", default=None, help="unused")
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--preprocessing_num_workers", type=int, default=None,
                   help="number of contiguous shards: with --batch_size it decides the packed-row boundaries")
    p.add_argument("--batch_size", type=int, default=1000)
    p.add_argument("--metric_level", default="sequence")
    p.add_argument("--fiter_nan", action="store_true", help="drop rows with a NaN metric (the released spelling)")
    return p


def packing_main(argv=None) -> None:
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    from .common import load_dataset_dict
    from .packing import is_metric_column, nan_rows, packed_tables
    from .token_alignment import check_metric_level

    _setup_logging()
    args = packing_parser().parse_args(argv)
    check_metric_level(args.metric_level)
    dataset_dict = load_dataset_dict(args.dataset_dir, "--dataset_dir")
    with _Scratch(args.dataset_save_dir) as scratch:
        result = {}
        for split, dataset in dataset_dict.items():
            where = f"{args.dataset_dir} split {split!r}"
            if args.fiter_nan:
                bad = nan_rows(dataset)
                logger.info("split %s: dropping %d row(s) with a NaN metric", split, bad.size)
                if bad.size:
                    keep = sorted(set(range(len(dataset))) - set(bad.tolist()))
                    dataset = dataset.select(keep)
            features = Features({name: Value("float64") if is_metric_column(name) else feature
                                 for name, feature in dataset.features.items()})
            path = str(Path(scratch) / f"{split}.arrow")
            with ArrowWriter(features=features, path=path) as writer:
                for table in tqdm(packed_tables(dataset, args.model_max_length, args.preprocessing_num_workers,
                                                args.batch_size, where), desc=f"Packing {split}", unit="batch"):
                    writer.write_table(table.cast(features.arrow_schema))
                writer.finalize()
            result[split] = Dataset.from_file(path)
            logger.info("split %s: %d rows -> %d packed rows", split, len(dataset), len(result[split]))
        save_dataset_atomic(DatasetDict(result), args.dataset_save_dir)
