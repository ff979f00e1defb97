"""Model folders for the merge tests: copies of a tiny model with seeded noise on every tensor."""

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def perturbed_copy(pivot: Path, out: Path, seed: int, scale: float, edit=None) -> Path:
    shutil.copytree(pivot, out)
    state = load_file(pivot / "model.safetensors")
    g = torch.Generator().manual_seed(seed)
    state = {name: tensor + scale * torch.randn(tensor.shape, generator=g) for name, tensor in state.items()}
    if edit:
        edit(state, g)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
