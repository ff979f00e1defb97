"""The Python side of the stage drivers (scripts/pipeline.sh, scripts/merge.sh; docs/design.md 11):
which sources share the pivot's vocabulary, and merge recipes rewritten for local model folders.

    python -m fusechat.drivers vocab PIVOT_DIR SOURCE_DIR...         # "same" or "different", one line each
    python -m fusechat.drivers recipe RECIPE.yml OUT.yml --pivot DIR --targets DIR,DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import InputError, run_cli
from .storage import atomic_file, split_paths


def same_vocabulary(pivot_dir: str, source_dirs: list[str]) -> list[bool]:
    """Per source: its tokenizer's own vocabulary maps the same pieces to the same ids as the pivot's,
    added tokens aside (so replace_model applies, else align_token_and_vocab)."""
    from .modeling import load_tokenizer, shares_vocabulary

    pivot = load_tokenizer(pivot_dir)
    return [shares_vocabulary(pivot, load_tokenizer(source)) for source in source_dirs]


def local_recipe(recipe: dict, pivot: str, targets: list[str], where: str = "recipe") -> dict:
    """A copy of a mergekit recipe whose models are local folders.

    The entry naming ``base_model`` (the pivot) becomes ``pivot``; the other entries are the
    recipe's targets, and local target k takes the parameters of recipe target k (the last one's
    when the recipe lists fewer). A recipe without ``base_model`` lists targets only.
    """
    if not isinstance(recipe, dict) or not isinstance(recipe.get("models"), list) or not recipe["models"]:
        raise InputError(f"{where}: expected a mergekit config with a 'models:' list")
    if not targets:
        raise InputError(f"{where}: no target models to merge")
    base = recipe.get("base_model")
    entries = recipe["models"]
    pivot_entries = [e for e in entries if base is not None and e.get("model") == base]
    target_entries = [e for e in entries if not (base is not None and e.get("model") == base)]
    if not target_entries:
        raise InputError(f"{where}: lists no target model besides the base model")
    models = [dict(e, model=pivot) for e in pivot_entries]
    for k, target in enumerate(targets):
        models.append(dict(target_entries[min(k, len(target_entries) - 1)], model=target))
    local = dict(recipe, models=models)
    if base is not None:
        local["base_model"] = pivot
    return local


def write_local_recipe(recipe_path: str, out_path: str, pivot: str, targets: list[str]) -> dict:
    import yaml

    path = Path(recipe_path)
    if not path.is_file():
        raise InputError(f"merge recipe not found: {recipe_path}")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{recipe_path}: not valid YAML: {exc}") from exc
    local = local_recipe(recipe, pivot, targets, recipe_path)
    with_header = f"# {recipe_path} with local model folders\n" + yaml.safe_dump(local, sort_keys=False)
    with atomic_file(out_path) as handle:
        handle.write(with_header)
    return local


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusechat.drivers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    vocab = sub.add_parser("vocab", help="per source, print 'same' when it shares the pivot's vocabulary, "
                                         "else 'different'")
    vocab.add_argument("pivot")
    vocab.add_argument("sources", nargs="+")
    recipe = sub.add_parser("recipe", help="write a copy of a merge recipe with local model folders")
    recipe.add_argument("recipe")
    recipe.add_argument("out")
    recipe.add_argument("--pivot", required=True)
    recipe.add_argument("--targets", required=True, help="comma-separated target model folders")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "vocab":
        for same in same_vocabulary(args.pivot, args.sources):
            print("same" if same else "different")
    else:
        write_local_recipe(args.recipe, args.out, args.pivot, split_paths(args.targets))


def cli(argv: list[str] | None = None) -> int:
    """Entry point of python -m fusechat.drivers (the drivers' helper)."""
    return run_cli(main, argv, prog="python -m fusechat.drivers")


if __name__ == "__main__":
    raise SystemExit(cli())
