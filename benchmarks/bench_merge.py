"""Peak memory and time of merging six random models: fusechat-merge vs loading every model fully.

fusechat-merge (mergekit underneath) streams one tensor at a time through the merge method; the
straightforward way, which the reference VaRM script follows, loads every model completely and
merges them in memory. Both run the same kernel (``fusechat_sce`` by default) in a child process
each, single-threaded by default (``--threads``: on a shared machine more threads mostly measure
contention). Reported per child, sampled from /proc every 20 ms: peak RSS (VmHWM) and peak
anonymous RSS. The difference matters: mergekit reads the inputs through memory-mapped safetensors
files, whose pages count in RSS while they stay cached but are the kernel's to drop; anonymous
memory is what the process really has to hold. The straightforward merge copies every tensor out
of its file, as loading the models with transformers (the reference script) does. mergekit also buffers the output until a
shard is full (``--out-shard-size``, 5B by default), so a second streaming run uses small shards.
The models (pivot + five targets, random weights, bfloat16, Mistral-shaped) are built once under
a temporary folder.

    python benchmarks/bench_merge.py                      # six models of about 200M parameters
    python benchmarks/bench_merge.py --params 50M --method fusechat_varm
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 32002
IN_MEMORY_IMPORTS = "import fusechat.merge, safetensors.torch, yaml"


def parse_count(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}
    return int(float(text[:-1]) * scale[text[-1].upper()]) if text[-1].upper() in scale else int(text)


def shape_for(params: int) -> tuple[int, int]:
    """(hidden size, layers) of a Mistral-like model of about ``params`` parameters."""
    hidden = next((h for h in (1024, 512, 256, 128) if 2 * VOCAB * h <= params / 2), 64)
    per_layer = 2 * hidden * hidden + 2 * hidden * hidden // 4 + 3 * hidden * int(3.5 * hidden) + 2 * hidden
    return hidden, max(1, round((params - 2 * VOCAB * hidden - hidden) / per_layer))


def build_models(root: Path, params: int, count: int) -> list[Path]:
    import torch
    from safetensors.torch import save_file
    from transformers import MistralConfig

    from fusechat import fixtures

    hidden, layers = shape_for(params)
    config = MistralConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=int(3.5 * hidden),
                           num_hidden_layers=layers, num_attention_heads=hidden // 64 or 1,
                           num_key_value_heads=max(1, hidden // 256), tie_word_embeddings=False, dtype="bfloat16",
                           architectures=["MistralForCausalLM"])
    tokenizer = fixtures.build_tokenizer("openchat")
    g = torch.Generator().manual_seed(0)
    shapes = {"model.embed_tokens.weight": (VOCAB, hidden), "lm_head.weight": (VOCAB, hidden), "model.norm.weight": (hidden,)}
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
                       p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (config.intermediate_size, hidden),
                       p + "mlp.up_proj.weight": (config.intermediate_size, hidden),
                       p + "mlp.down_proj.weight": (hidden, config.intermediate_size),
                       p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)})
    paths = []
    for index in range(count):
        path = root / ("pivot" if index == 0 else f"target{index}")
        paths.append(path)
        if (path / "model.safetensors").exists():
            continue
        path.mkdir(parents=True, exist_ok=True)
        state = {}
        for name, shape in shapes.items():
            pivot = torch.randn(shape, generator=torch.Generator().manual_seed(hash(name) % 2**31)) * 0.02
            noise = torch.randn(shape, generator=g) * 0.002 if index else 0
            state[name] = (pivot + noise).to(torch.bfloat16)
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(str(path))
        for file in Path(tokenizer).iterdir():
            shutil.copy(file, path / file.name)
    total = sum(_numel(shape) for shape in shapes.values())
    print(f"models: {count} x {total / 1e6:.0f}M parameters (hidden {hidden}, {layers} layers, bfloat16) in {root}")
    return paths


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def write_config(root: Path, paths: list[Path], method: str) -> Path:
    import yaml

    parameters = {"select_topk": 0.1} if method == "fusechat_sce" else {"granularity": "tensor"}
    config = {"models": [{"model": str(p)} for p in paths], "merge_method": method, "base_model": str(paths[0]),
              "parameters": parameters, "dtype": "bfloat16"}
    path = root / f"{method}.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def in_memory_merge(config_file: str, out: str) -> None:
    """The straightforward implementation: every model fully in memory, then merge tensor by tensor."""
    import torch
    import yaml
    from safetensors.torch import load_file, save_file

    from fusechat.merge import fusechat_sce, fusechat_varm  # the imports of IN_MEMORY_IMPORTS

    config = yaml.safe_load(Path(config_file).read_text())
    paths = [entry["model"] for entry in config["models"]]
    # All models, all tensors, in memory (copied out of the memory-mapped files).
    states = [{k: v.clone() for k, v in load_file(str(Path(p) / "model.safetensors")).items()} for p in paths]
    base, targets = states[0], states[1:]
    merged = {}
    for name, tensor in base.items():
        inputs = [t[name].to(torch.bfloat16) for t in targets]
        if config["merge_method"] == "fusechat_sce":
            merged[name] = fusechat_sce(tensor, inputs, config["parameters"]["select_topk"], name=name)
        else:
            merged[name] = fusechat_varm(tensor, inputs, name=name)
    Path(out).mkdir(parents=True, exist_ok=True)
    save_file(merged, str(Path(out) / "model.safetensors"), metadata={"format": "pt"})


def memory_status(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS since exec) and RssAnon of a live process, in KiB (empty once it is gone).

    ``ru_maxrss`` would do for the peak if the child did not inherit, across fork and exec, the
    high-water mark of this (large) parent.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmHWM", "RssAnon") if key in fields}


def measure(command: list[str], threads: int) -> tuple[float, float, float]:
    """Wall seconds, peak RSS and peak anonymous RSS (MiB) of one child process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    peak_rss = peak_anon = 0
    while True:
        pid, status, _ = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        sample = memory_status(child.pid)
        peak_rss = max(peak_rss, sample.get("VmHWM", 0))
        peak_anon = max(peak_anon, sample.get("RssAnon", 0))
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return elapsed, peak_rss / 1024, peak_anon / 1024


def max_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="200M", help="parameters per model (e.g. 200M, 50M)")
    parser.add_argument("--models", type=int, default=6, help="pivot + targets")
    parser.add_argument("--method", default="fusechat_sce", choices=["fusechat_sce", "fusechat_varm"])
    parser.add_argument("--workdir", default=None, help="keep the models here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each child process")
    parser.add_argument("--in-memory", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_memory:
        in_memory_merge(*args.in_memory)
        return
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_merge-"))
    try:
        paths = build_models(root, parse_count(args.params), args.models)
        config = write_config(root, paths, args.method)
        sizes = {p.name: (p / "model.safetensors").stat().st_size / 2**20 for p in paths}
        largest = max(_largest_tensor(paths[0]).values())
        merge = [sys.executable, "-m", "fusechat.merge.cli", str(config)]
        runs = {
            "imports of fusechat-merge": [sys.executable, "-c", "import fusechat.merge.cli"],
            "imports of the in-memory merge": [sys.executable, "-c", IN_MEMORY_IMPORTS],
            "fusechat-merge, default options": merge + [str(root / "out-stream"), "--quiet"],
            "fusechat-merge --out-shard-size 50M": merge + [str(root / "out-shards"), "--quiet", "--out-shard-size", "50M"],
            "all models in memory (straightforward)": [sys.executable, __file__, "--in-memory", str(config),
                                                       str(root / "out-full")],
        }
        results = {label: measure(command, args.threads) for label, command in runs.items()}
        diff = max_difference(root / "out-stream", root / "out-full")
        print(f"method {args.method}, {args.threads} thread(s); models on disk {sum(sizes.values()):.0f} MiB in all, "
              f"{sizes['pivot']:.0f} MiB each; largest tensor {largest:.0f} MiB (bfloat16)")
        print(f"{'':40s} {'peak RSS':>10s} {'peak anon':>10s} {'wall':>8s}")
        for label, (seconds, rss, anon) in results.items():
            print(f"{label:40s} {rss:7.0f} MiB {anon:6.0f} MiB {seconds:7.1f} s")
        full = results["all models in memory (straightforward)"]
        full_work = full[2] - results["imports of the in-memory merge"][2]
        for label in ("fusechat-merge, default options", "fusechat-merge --out-shard-size 50M"):
            stream = results[label]
            work = stream[2] - results["imports of fusechat-merge"][2]
            print(f"{label}: anonymous memory above its imports {work:.0f} MiB vs {full_work:.0f} MiB in memory "
                  f"({full_work / max(work, 1):.1f}x less); peak anonymous ratio {full[2] / stream[2]:.2f}x; "
                  f"peak RSS ratio {full[1] / stream[1]:.2f}x; time ratio in-memory/streaming {full[0] / stream[0]:.2f}x")
        print(f"outputs agree: max |difference| = {diff}")
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


def _largest_tensor(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: _numel(f.get_slice(k).get_shape()) * 2 / 2**20 for k in f.keys()}


if __name__ == "__main__":
    main()
