"""``fusechat-merge``'s work: check the config, run mergekit's ``run_merge`` into a staging folder,
give the result the pivot's tokenizer, then move it into place.

Two rules of docs/design.md 9 need more than a per-tensor kernel inside mergekit:

* leading block: mergekit refuses inputs of unequal shapes before any method sees them. When a
  FuseChat method's targets have more vocabulary rows than the pivot (and the config does not
  align vocabularies by token with a ``tokenizer:`` section), the run turns on mergekit's
  ``unsafe_truncate_embeddings``, which keeps the common leading rows, that is the pivot's block.
  A target with fewer rows than the pivot has no such block: that is an input error.
* a method may need a pass over the models before merging (VaRM at module/layer/model
  granularity needs every tensor's variation first): its entry's ``prepare`` hook
  (``registry.METHODS``) runs after the checks.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Iterator

from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions

from ..errors import InputError
from ..storage import disk_full_is_input_error, finish_output, replace_path, scratch_dir
from .checks import check_config, check_output, listed_models, load_merge_config, local_config, pivot_model
from .registry import METHODS, register_methods

logger = logging.getLogger(__name__)

# Files that make up a tokenizer and its chat template, plus the generation config (eos ids).
TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
                   "merges.txt", "*.tiktoken", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")


def merge_from_config(config_file: str, out_path: str, options: MergeOptions | None = None) -> Path:
    """Run the merge of ``config_file`` into ``out_path``, exactly as ``mergekit-yaml`` would, with
    FuseChat's methods registered; every check runs before anything is written."""
    options = options or MergeOptions()
    register_methods()
    source, config = load_merge_config(config_file)
    check_config(config, config_file, options)
    pivot = pivot_model(config)
    options = options_for_vocabulary(config, config_file, options)
    check_output(config, out_path)
    entry = METHODS.get(config.merge_method)
    if entry is not None and entry.prepare is not None:
        entry.prepare(config, config_file, options)
    with staged_output(out_path) as work:
        run_merge(config, str(work), options=options, config_source=source)
        if options.copy_tokenizer and not (config.tokenizer or config.tokenizer_source or config.chat_template):
            carry_pivot_tokenizer(pivot, work, options)
    return Path(out_path)


def options_for_vocabulary(config: MergeConfiguration, config_file: str, options: MergeOptions) -> MergeOptions:
    """Turn on the leading-block rule for embeddings when a FuseChat method needs it."""
    if config.merge_method not in METHODS or config.tokenizer or config.tokenizer_source:
        return options
    pivot = pivot_model(config)
    pivot_cfg = local_config(pivot)
    rows = pivot_cfg.get("vocab_size") if pivot_cfg else None
    if rows is None:
        return options
    larger = []
    for ref in listed_models(config)[1:]:
        cfg = local_config(ref)
        target_rows = cfg.get("vocab_size") if cfg else None
        if target_rows is None or target_rows == rows:
            continue
        if target_rows < rows:
            raise InputError(
                f"{config_file}: {ref} has {target_rows} vocabulary rows, fewer than the pivot's {rows}: its "
                f"embeddings have no leading block of the pivot's shape (add a tokenizer: section to align "
                f"vocabularies by token instead)")
        larger.append(f"{ref} ({target_rows})")
    if larger and not options.unsafe_truncate_embeddings:
        logger.warning("%s: using the leading %d embedding/lm_head rows of %s", config.merge_method, rows,
                       ", ".join(larger))
        return options.model_copy(update={"unsafe_truncate_embeddings": True})
    return options


def tokenizer_files(folder: Path) -> list[Path]:
    return sorted({path for pattern in TOKENIZER_FILES for path in folder.glob(pattern) if path.is_file()})


def carry_pivot_tokenizer(pivot: ModelReference, out_dir: Path, options: MergeOptions) -> None:
    """Replace whatever tokenizer mergekit copied with the pivot's files, chat template included.

    mergekit copies from the base model or, without one, from an arbitrary model of the config (its
    model list is a set), and its hub download fetches only ``*.json`` and ``tokenizer.model``, so a
    ``chat_template.jinja`` or ``merges.txt`` would be missing.
    """
    folder = Path(pivot.model.path).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(pivot.model.path), revision=pivot.model.revision,
                                        cache_dir=options.transformers_cache, allow_patterns=list(TOKENIZER_FILES)))
    files = tokenizer_files(folder)
    if not any(path.name.startswith("tokenizer") for path in files):
        logger.warning("the pivot %s has no tokenizer files; the merged model keeps mergekit's", pivot)
        return
    for path in tokenizer_files(out_dir):
        path.unlink()
    for path in files:
        shutil.copy(path, out_dir / path.name)


@contextlib.contextmanager
def staged_output(out_path: str) -> Iterator[Path]:
    """A staging folder with the final folder's name (mergekit titles the model card with it);
    on success it replaces ``out_path``, on failure it is removed."""
    final = Path(out_path)
    with scratch_dir(final, "tmp") as holder:
        work = holder / final.name
        work.mkdir()
        with disk_full_is_input_error(final):
            yield work
        finish_output(work)
        replace_path(work, final)
