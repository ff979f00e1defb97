"""VaRM statistics: how far each target moved from the pivot, per tensor, module and layer, and overall.

For every target, the reference's analysis JSON (its key names, typo included, so reference tooling
reads it): ``aveage_var_degree`` (summed change over all parameters / number of parameters),
``total_diff_num`` (parameters that changed), ``total_param_num``, ``diff_rate`` (percent changed),
``key_to_params`` (per tensor: summed change / numel), ``module_to_params`` and ``layer_to_params``
(sums of the per-tensor values over each module / layer; tensors outside the decoder layers are
their own module and layer). The change is ``square`` (squared difference, what VaRM uses),
``abs`` or ``default`` (signed difference). Models are read one tensor at a time.

    python -m fusechat.merge.varm_analysis --base_model models/openchat_3.5 \\
        --target_models models/OpenChat-3.5-7B-Starling-v2.0,models/OpenChat-3.5-7B-SOLAR-v2.0 \\
        --save_dir analysis/
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from ..errors import InputError, run_cli
from ..modeling import check_model_path
from ..storage import check_output_file, split_paths, write_json
from .inputs import aligned_tensors, chunks
from .varm import group_key

MERGE_TYPES = ("square", "abs", "default")
logger = logging.getLogger(__name__)


def tensor_change(base: torch.Tensor, target: torch.Tensor, merge_type: str = "square") -> tuple[float, int]:
    """Summed change of one tensor (double precision) and the number of elements that changed."""
    if merge_type not in MERGE_TYPES:
        raise InputError(f"--merge_type must be one of {', '.join(MERGE_TYPES)}, got {merge_type!r}")
    flat_base, flat_target = base.reshape(-1), target.reshape(-1)
    change, changed = 0.0, 0
    for part in chunks(flat_base.numel()):
        delta = flat_target[part].to(torch.float64) - flat_base[part].to(torch.float64)
        changed += int(torch.count_nonzero(delta))
        if merge_type == "square":
            delta.square_()
        elif merge_type == "abs":
            delta.abs_()
        change += float(delta.sum())
    return change, changed


def group_sums(key_to_params: dict[str, float], granularity: str) -> dict[str, float]:
    """Per-tensor values summed over the groups of ``granularity`` (see ``varm.group_key``)."""
    sums: dict[str, float] = defaultdict(float)
    for name, value in key_to_params.items():
        sums[group_key(name, granularity)] += value
    return dict(sums)


class _Totals:
    def __init__(self):
        self.change = 0.0
        self.changed = 0
        self.params = 0
        self.key_to_params: dict[str, float] = {}

    def add(self, name: str, base: torch.Tensor, target: torch.Tensor, merge_type: str) -> None:
        change, changed = tensor_change(base, target, merge_type)
        self.change += change
        self.changed += changed
        self.params += base.numel()
        self.key_to_params[name] = change / base.numel() if base.numel() else 0.0

    def as_json(self) -> dict:
        return {
            "aveage_var_degree": self.change / self.params if self.params else 0.0,
            "total_diff_num": self.changed,
            "total_param_num": self.params,
            "diff_rate": self.changed / self.params * 100 if self.params else 0.0,
            "layer_to_params": group_sums(self.key_to_params, "layer"),
            "key_to_params": self.key_to_params,
            "module_to_params": group_sums(self.key_to_params, "module"),
        }


def _loader(model: str, cache_dir: str | None = None):
    from mergekit.common import ModelReference

    check_model_path(model, flag="model")
    return ModelReference.model_validate(model).lazy_loader(cache_dir=cache_dir, lazy_unpickle=False)


def variation_statistics(base_model: str, target_models: Sequence[str], merge_type: str = "square",
                         cache_dir: str | None = None, quiet: bool = False,
                         dtype: torch.dtype | None = None) -> list[dict]:
    """One statistics dict per target; each base tensor is read once, then each target's in turn.

    With ``dtype`` the tensors are first cast to it, as a merge in that dtype sees them.

    Shape rules as in the merge: a larger embedding/lm_head contributes its leading block; any other
    mismatch (or a missing tensor) leaves that tensor out of that target's statistics, with a warning.
    """
    if merge_type not in MERGE_TYPES:
        raise InputError(f"--merge_type must be one of {', '.join(MERGE_TYPES)}, got {merge_type!r}")
    base_loader = _loader(base_model, cache_dir)
    loaders = [_loader(target, cache_dir) for target in target_models]
    totals = [_Totals() for _ in target_models]
    names = list(base_loader.index.tensor_paths)
    for name in tqdm(names, desc="VaRM statistics", disable=quiet):
        base = base_loader.get_tensor(name)
        if not base.is_floating_point():
            continue
        base = base.to(dtype or base.dtype)
        for target_model, loader, total in zip(target_models, loaders, totals):
            target = loader.get_tensor(name, raise_on_missing=False)
            if target is None:
                logger.warning("%s: not in %s; left out of its statistics", name, target_model)
                continue
            for _, aligned in aligned_tensors(base, [target.to(base.dtype)], name, [target_model]):
                total.add(name, base, aligned, merge_type)
    return [total.as_json() | {"base_model": base_model, "target_model": target, "merge_type": merge_type}
            for target, total in zip(target_models, totals)]


def output_paths(target_models: Sequence[str], save_dir: str | None, save_path: str | None) -> list[Path]:
    if save_path:
        if len(target_models) != 1:
            raise InputError("--save_path names one file: give one target model, or use --save_dir")
        return [Path(save_path)]
    if not save_dir:
        raise InputError("give --save_dir (one JSON per target) or --save_path (one target)")
    paths = [Path(save_dir) / f"{Path(target.rstrip('/')).name}.json" for target in target_models]
    if len(set(paths)) != len(paths):
        raise InputError(f"--target_models: two targets share a folder name, their JSON files would collide: "
                         f"{', '.join(map(str, paths))}")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", "--model1_path", required=True, help="the pivot (model folder or hub id)")
    parser.add_argument("--target_models", "--model2_path", required=True,
                        help="comma-separated target models (pairwise-fused copies of the pivot)")
    parser.add_argument("--save_dir", help="folder receiving <target folder name>.json per target")
    parser.add_argument("--save_path", help="the JSON file, when there is one target")
    parser.add_argument("--merge_type", default="square", choices=MERGE_TYPES)
    parser.add_argument("--cache_dir", default=None, help="hub cache for models given by name")
    args = parser.parse_args(argv)
    targets = split_paths(args.target_models)
    if not targets:
        raise InputError("--target_models: no model given")
    paths = output_paths(targets, args.save_dir, args.save_path)
    for path in paths:
        check_output_file(path, "--save_path" if args.save_path else "--save_dir", [args.base_model, *targets])
    stats = variation_statistics(args.base_model, targets, args.merge_type, args.cache_dir)
    for path, stat in zip(paths, stats):
        write_json(path, stat)
        print(f"{stat['target_model']}: average variation degree {stat['aveage_var_degree']:.6g}, "
              f"diff rate {stat['diff_rate']:.4f}% -> {path}")


def cli(argv: list[str] | None = None) -> int:
    """Entry point of fusechat-varm-analysis: bad input is one line on stderr and exit status 2."""
    return run_cli(main, argv, prog="fusechat-varm-analysis")


if __name__ == "__main__":
    raise SystemExit(cli())
