"""The align_token_and_vocab stage (docs/design.md 6): the token pass over every split, then the
distribution pass over one split, from the building blocks of :mod:`.aligned_sets`. The command
line (``fusechat.cli.align_token_and_vocab``) only parses and checks its flags and calls
:func:`align_stage`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..kernels.align_methods import align_method
from ..provenance import check_made_from
from ..schema import INDICES, LOGITS, METRIC_CE, PER_STEP_METRIC_CE, index_dtype_for
from ..storage import save_train_split, scratch_dir, split_paths
from .aligned_sets import (MapSettings, TokenizerSpec, distribution_pass, load_aligner, load_pairs, save_token_pass,
                           separator_pair, token_pass, token_pass_done)
from .vocab_mapping import vocabulary_of

logger = logging.getLogger("align_token_and_vocab")


@dataclass(frozen=True)
class AlignStage:
    """What one run does; the fields are the released script's flags of the same names."""

    base: TokenizerSpec
    blending: TokenizerSpec
    base_dataset_dir: str
    blending_dataset_dir: str
    align_type: str = "default"
    do_token_alignment: bool = False
    do_distribution_alignment: bool = False
    token_alignment_matrix_file: str | None = None
    blending_to_base_file: str | None = None
    aligned_dataset_tknz_save_dir: str | None = None
    aligned_dataset_save_dir: str | None = None
    metric_level: str = "sequence"
    use_token_alignment_matrix: bool = False
    not_align: bool = False
    dataset_sample_prop: float | None = None
    batch_size: int = 100
    preprocessing_num_workers: int = 1
    accept_sets_without_provenance: bool = False


def check_token_files(stage: AlignStage, record: dict, keys: tuple[str, ...]) -> None:
    """The token pass's existing files were made for this run (``keys`` of its record)."""
    accept = stage.accept_sets_without_provenance
    for flag in ("token_alignment_matrix_file", "aligned_dataset_tknz_save_dir"):
        path = getattr(stage, flag)
        if path and Path(path).exists():
            check_made_from(path, record, f"--{flag}", accept, keys)
    mapping = stage.blending_to_base_file
    if mapping and Path(mapping).exists() and align_method(stage.align_type).mapping is not None:
        check_made_from(mapping, dict(record, align_type=stage.align_type), "--blending_to_base_file", accept,
                        keys + ("align_type",))


def align_stage(stage: AlignStage, record: dict) -> float | None:
    """Run the passes ``stage`` asks for; return the distribution pass's share of pivot positions that
    keep the source's distribution (None without that pass). ``record``: the token pass's provenance
    (``provenance.token_pass_record``), written with its outputs and checked when they are reused."""
    base_vocab, blending_vocab = vocabulary_of(stage.base.load()), vocabulary_of(stage.blending.load())
    token_files = (stage.token_alignment_matrix_file, stage.blending_to_base_file, stage.aligned_dataset_tknz_save_dir)
    first_output = (stage.aligned_dataset_save_dir or stage.blending_to_base_file
                    or stage.token_alignment_matrix_file or stage.aligned_dataset_tknz_save_dir or ".")
    share = None
    with scratch_dir(first_output) as scratch:
        settings = MapSettings(stage.batch_size, stage.preprocessing_num_workers, scratch)
        if stage.do_token_alignment and token_pass_done(*token_files):
            check_token_files(stage, record, ("base_tokenizer", "blending_tokenizer", "sets"))
            logger.info("reusing %s", ", ".join(f for f in token_files if f))
        elif stage.do_token_alignment:
            pairs = load_pairs(stage.base_dataset_dir, stage.blending_dataset_dir, ["input_ids"], ["input_ids"],
                               "dataset", stage.dataset_sample_prop)
            matrix, tokenized = token_pass(pairs, stage.base, stage.blending, base_vocab, blending_vocab, settings)
            separators = separator_pair(stage.base_dataset_dir, stage.blending_dataset_dir, base_vocab,
                                        blending_vocab)
            save_token_pass(stage.align_type, matrix, tokenized, base_vocab, blending_vocab, *token_files, record,
                            separators)
        if stage.do_distribution_alignment:
            check_token_files(stage, record, ("base_tokenizer", "blending_tokenizer"))
            share = distribution_stage(stage, base_vocab, blending_vocab, settings)
    return share


def distribution_stage(stage: AlignStage, base_vocab, blending_vocab, settings: MapSettings) -> float:
    aligner = None if stage.not_align else load_aligner(
        stage.align_type, base_vocab, blending_vocab, stage.blending_to_base_file,
        stage.use_token_alignment_matrix, stage.token_alignment_matrix_file)
    columns = ["input_ids", LOGITS, INDICES, METRIC_CE]
    pairs = load_pairs(stage.base_dataset_dir, stage.blending_dataset_dir, columns,
                       columns + [PER_STEP_METRIC_CE] * (stage.metric_level == "token"),
                       "representation set", stage.dataset_sample_prop)
    if len(pairs) != 1:
        raise InputError(f"--do_distribution_alignment aligns one split at a time; got {len(pairs)} sets")
    index_dtype = index_dtype_for(blending_vocab.size if stage.not_align else base_vocab.size)
    aligned, share = distribution_pass(pairs[0], aligner, stage.base, stage.blending, stage.metric_level, index_dtype,
                                       settings, stage.aligned_dataset_tknz_save_dir)
    save_train_split(aligned, stage.aligned_dataset_save_dir, ids_from=split_paths(stage.base_dataset_dir),
                     kind="aligned")
    return share
