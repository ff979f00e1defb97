"""``fusechat-merge CONFIG OUT [options]``: ``mergekit-yaml`` with FuseChat's merge methods.

Every ``mergekit-yaml`` option works (they come from mergekit's own option set); on top of it the
config is checked before anything is written, the output folder appears only when complete, and
it carries the pivot's tokenizer and chat template.

    fusechat-merge mergekit/fusechat_configs/fusechat-sce.yml models/FuseChat-7B-SCE --cuda
"""

from __future__ import annotations

import click
from mergekit.options import MergeOptions, PrettyPrintHelp, add_merge_options

from ..errors import run_cli
from .pipeline import merge_from_config


@click.command("fusechat-merge", cls=PrettyPrintHelp)
@click.argument("config_file")
@click.argument("out_path")
@add_merge_options
def fusechat_merge(merge_options: MergeOptions, config_file: str, out_path: str):
    """Merge the models of CONFIG_FILE into OUT_PATH (mergekit-yaml plus fusechat_sce and fusechat_varm)."""
    merge_options.apply_global_options()
    merge_from_config(config_file, out_path, merge_options)


def main(argv: list[str] | None = None) -> None:
    """Parse (mergekit's option set) and merge; click's own usage errors end the run as click does."""
    try:
        code = fusechat_merge.main(args=argv, prog_name="fusechat-merge", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code)
    except click.exceptions.Abort:
        raise SystemExit(1)
    if code:
        raise SystemExit(code)


def cli(argv: list[str] | None = None) -> int:
    """Entry point of fusechat-merge."""
    return run_cli(main, argv, prog="fusechat-merge")


if __name__ == "__main__":
    raise SystemExit(cli())
