"""align_token_and_vocab: bring a different-vocabulary source's distributions into the pivot's
vocabulary (DESIGN.md 6): token alignment and the vocabulary mapping, then distribution alignment."""

from __future__ import annotations

import argparse
import logging
import uuid
from pathlib import Path


from ..alignment.corpus import (ALIGNMENT_COLUMN, CARRIED, TokenizerSpec, aligned_features,
                                distribution_alignment_batch, paired, share_carried, token_alignment_batch)
from ..alignment.distribution_alignment import DistributionAligner
from ..alignment.vocab_mapping import (AlignmentCounts, blending_to_base_mapping, check_align_type,
                                       load_blending_to_base, load_count_matrix, matched_blending_ids,
                                       save_blending_to_base, save_count_matrix, vocabulary_of)
from ..data import sample_indices
from ..errors import InputError
from ..schema import INDICES, LOGITS, METRIC_CE, PER_STEP_METRIC_CE, index_dtype_for, require_columns
from ..storage import scratch_dir
from .common import check_set_output, load_sets, save_set, setup_logging

logger = logging.getLogger("align_token_and_vocab")


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--base_dataset_dir", required=True, help="pivot set(s), comma-separated")
    p.add_argument("--blending_dataset_dir", required=True, help="source set(s), comma-separated")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--do_token_alignment", action="store_true")
    p.add_argument("--align_type", default="default", help="hard (EM), soft (MinED) or default (MS)")
    p.add_argument("--token_alignment_matrix_file", default=None, help="scipy sparse .npz of the count matrix")
    p.add_argument("--blending_to_base_file", default=None, help="JSON list: blending id -> base id")
    p.add_argument("--do_distribution_alignment", action="store_true")
    p.add_argument("--metric_level", default="sequence", choices=["sequence", "token"])
    p.add_argument("--use_token_alignment_matrix", action="store_true")
    p.add_argument("--not_align", action="store_true", help="copy the source's lists unmapped")
    p.add_argument("--aligned_dataset_tknz_save_dir", default=None)
    p.add_argument("--aligned_dataset_save_dir", default=None)
    p.add_argument("--temperature", type=float, default=1.0,
                   help="accepted for compatibility; the fuse temperature is train.py's --fuse_temperature")
    p.add_argument("--dataset_sample_prop", type=float, default=None)
    for side in ("base", "blending"):
        p.add_argument(f"--{side}_use_fast", type=str2bool, default=True)
        p.add_argument(f"--{side}_trust_remote_code", type=str2bool, default=False)
    return p


def map_kwargs(args, scratch: Path, name: str) -> dict:
    """Cache files of ``map`` go to a scratch folder, never next to the input sets; the results are
    never reused from a cache, so a fixed fingerprint spares hashing the arguments."""
    workers = args.preprocessing_num_workers if args.preprocessing_num_workers > 1 else None
    return dict(batched=True, batch_size=max(1, args.batch_size), num_proc=workers,
                cache_file_name=str(scratch / f"{name}.arrow"), load_from_cache_file=False,
                new_fingerprint=uuid.uuid4().hex[:24])


def tokenizer_specs(args) -> tuple[TokenizerSpec, TokenizerSpec]:
    return (TokenizerSpec(args.base_model_name_or_path, args.base_use_fast, args.base_trust_remote_code,
                          args.cache_dir),
            TokenizerSpec(args.blending_model_name_or_path, args.blending_use_fast, args.blending_trust_remote_code,
                          args.cache_dir))


def sampled(dataset, proportion):
    if proportion is None:
        return dataset
    return dataset.select(sample_indices(len(dataset), proportion))


def token_alignment(args, base_vocab, blending_vocab, scratch: Path) -> None:
    """Align every row of every split pair, count C, build and save the matrix and the mapping."""
    bases, base_names = load_sets(args.base_dataset_dir, "base dataset")
    blendings, blending_names = load_sets(args.blending_dataset_dir, "blending dataset")
    if len(bases) != len(blendings):
        raise InputError(f"--base_dataset_dir lists {len(bases)} sets but --blending_dataset_dir {len(blendings)}")
    counts = AlignmentCounts(base_vocab.size, blending_vocab.size)
    aligned_parts = []
    for n, (base, blending, base_name, blending_name) in enumerate(zip(bases, blendings, base_names, blending_names)):
        pairs = paired(sampled(base, args.dataset_sample_prop), sampled(blending, args.dataset_sample_prop),
                       base_name, blending_name, ["input_ids"])
        base_spec, blending_spec = tokenizer_specs(args)
        aligned = pairs.map(token_alignment_batch, fn_kwargs=dict(
            base=base_spec, blending=blending_spec, base_marker=base_vocab.marker,
            blending_marker=blending_vocab.marker), desc=f"Token alignment {Path(base_name).name}",
            **map_kwargs(args, scratch, f"token_alignment_{n}"))
        for batch in aligned.select_columns(["input_ids", "blending_input_ids", ALIGNMENT_COLUMN]).iter(1000):
            for base_ids, blending_ids, alignment in zip(batch["input_ids"], batch["blending_input_ids"],
                                                         batch[ALIGNMENT_COLUMN]):
                counts.add(base_ids, matched_blending_ids(blending_ids, alignment))
        aligned_parts.append(aligned.remove_columns(["blending_input_ids"]))
    matrix = counts.to_csr()
    logger.info("token alignment count matrix: %d nonzeros in %s", matrix.nnz, matrix.shape)
    if args.token_alignment_matrix_file:
        save_count_matrix(args.token_alignment_matrix_file, matrix)
    mapping = blending_to_base_mapping(args.align_type, blending_vocab, base_vocab, counts=matrix)
    if mapping is not None:
        if not args.blending_to_base_file:
            raise InputError(f"--align_type {args.align_type} writes its mapping to --blending_to_base_file; give one")
        save_blending_to_base(args.blending_to_base_file, mapping)
    if args.aligned_dataset_tknz_save_dir:
        from datasets import concatenate_datasets

        save_set(concatenate_datasets(aligned_parts), args.aligned_dataset_tknz_save_dir, ids_from=base_names,
                 kind="token-aligned")


def distribution_alignment(args, base_vocab, blending_vocab, scratch: Path) -> None:
    bases, base_names = load_sets(args.base_dataset_dir, "base representation set")
    blendings, blending_names = load_sets(args.blending_dataset_dir, "blending representation set")
    if len(bases) != 1 or len(blendings) != 1:
        raise InputError(f"--do_distribution_alignment takes one set in --base_dataset_dir and one in "
                         f"--blending_dataset_dir; got {len(bases)} and {len(blendings)} (run it once per split)")
    (base,), (base_name,), (blending,), (blending_name,) = bases, base_names, blendings, blending_names
    for ds, name in ((base, base_name), (blending, blending_name)):
        require_columns(ds, ("input_ids", LOGITS, INDICES, METRIC_CE), name)
    aligner = None
    if not args.not_align:
        mapping = None
        if args.align_type != "hard":
            if not args.blending_to_base_file:
                raise InputError(f"--align_type {args.align_type} needs --blending_to_base_file")
            mapping = load_blending_to_base(args.blending_to_base_file, blending_vocab.size, base_vocab.size)
        if args.use_token_alignment_matrix:
            if not args.token_alignment_matrix_file:
                raise InputError("--use_token_alignment_matrix needs --token_alignment_matrix_file")
            load_count_matrix(args.token_alignment_matrix_file, base_vocab.size, blending_vocab.size)
        aligner = DistributionAligner.create(args.align_type, blending_vocab, base_vocab, mapping,
                                             args.use_token_alignment_matrix)
    blending_columns = ["input_ids", LOGITS, INDICES, METRIC_CE]
    if args.metric_level == "token":
        require_columns(blending, (PER_STEP_METRIC_CE,), blending_name)
        blending_columns.append(PER_STEP_METRIC_CE)
    pairs = paired(sampled(base, args.dataset_sample_prop), sampled(blending, args.dataset_sample_prop),
                   base_name, blending_name, blending_columns)
    index_dtype = index_dtype_for(blending_vocab.size if args.not_align else base_vocab.size)
    features = aligned_features(pairs.features, args.metric_level, index_dtype)
    base_spec, blending_spec = tokenizer_specs(args)
    aligned = pairs.map(distribution_alignment_batch, fn_kwargs=dict(
        aligner=aligner, base=base_spec, blending=blending_spec, metric_level=args.metric_level),
        remove_columns=[c for c in pairs.column_names if c not in features], features=features,
        desc="Distribution alignment", **map_kwargs(args, scratch, "distribution_alignment"))
    share = share_carried(aligned)
    print(f"align_token_and_vocab: the source's distribution is kept at {100 * share:.1f}% of pivot positions "
          f"(the rest ONE-HOT or EMPTY), align type {args.align_type}")
    save_set(aligned.remove_columns([CARRIED]), args.aligned_dataset_save_dir, ids_from=base_names, kind="aligned")


def main(argv=None) -> None:
    setup_logging()
    args = build_parser().parse_args(argv)
    check_align_type(args.align_type)
    if not (args.do_token_alignment or args.do_distribution_alignment):
        raise InputError("nothing to do: give --do_token_alignment and/or --do_distribution_alignment")
    if args.do_distribution_alignment and not args.aligned_dataset_save_dir:
        raise InputError("--do_distribution_alignment needs --aligned_dataset_save_dir")
    if args.temperature != 1.0:
        logger.warning("--temperature %s has no effect here; set the fuse temperature with train.py's "
                       "--fuse_temperature", args.temperature)
    base_spec, blending_spec = tokenizer_specs(args)
    base_vocab, blending_vocab = vocabulary_of(base_spec.load()), vocabulary_of(blending_spec.load())
    anchor = Path(args.aligned_dataset_save_dir or args.blending_to_base_file or args.token_alignment_matrix_file
                  or ".").resolve().parent
    for flag in ("aligned_dataset_save_dir", "aligned_dataset_tknz_save_dir"):
        check_set_output(getattr(args, flag), f"--{flag}", args.base_dataset_dir, args.blending_dataset_dir)
    with scratch_dir(anchor / "align") as scratch:
        if args.do_token_alignment:
            reuse = [f for f in (args.token_alignment_matrix_file, args.blending_to_base_file) if f]
            if reuse and all(Path(f).exists() for f in reuse) and not args.aligned_dataset_tknz_save_dir:
                logger.info("reusing %s", ", ".join(reuse))
            else:
                token_alignment(args, base_vocab, blending_vocab, scratch)
        if args.do_distribution_alignment:
            distribution_alignment(args, base_vocab, blending_vocab, scratch)
