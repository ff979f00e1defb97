"""train.py's published command line on CPU and an aligned fixture set, shared by the training run tests."""

from __future__ import annotations

import pytest

from train_fixtures import aligned_rows, save_set
from train_flags import PUBLISHED, cpu_subset


def command(model, data, output_dir, **overrides) -> list[str]:
    """The published flags on CPU, with this test's paths and a small batch (12 rows: 3 steps an epoch)."""
    argv = cpu_subset(PUBLISHED)
    values = {**dict(model_name_or_path=model, data_path=data, output_dir=output_dir, num_train_epochs=1,
                     per_device_train_batch_size=2, gradient_accumulation_steps=2, save_total_limit=1,
                     dataloader_num_workers=0), **overrides}
    for flag, value in values.items():
        if f"--{flag}" not in argv:
            argv += [f"--{flag}", str(value)]
            continue
        at = argv.index(f"--{flag}") + 1
        if at < len(argv) and not argv[at].startswith("--"):
            argv[at] = str(value)
        else:  # a bare boolean flag
            argv.insert(at, str(value))
    return argv


@pytest.fixture(scope="module")
def aligned_set(tmp_path_factory, openchat_tokenizer):
    return save_set(aligned_rows(openchat_tokenizer, count=12), tmp_path_factory.mktemp("aligned") / "set",
                    tokenizer=openchat_tokenizer)
