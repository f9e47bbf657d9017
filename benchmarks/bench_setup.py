"""What the model benchmarks share: their command-line model options, loading, and the machine record."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from kebench.models.load import load_model
from kebench.models.loaded import LoadedModel


def model_arguments(ap: argparse.ArgumentParser) -> None:
    """The output path, model, edit count, threads and device options every model benchmark takes."""
    ap.add_argument("out", type=Path, help="where to write the JSON results")
    ap.add_argument("--model", default=None, help="model name/path (default: the embedded SmolLM2-135M)")
    ap.add_argument("--edits", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy shared CPU)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (kebench run's --device)")


def load_bench_model(args: argparse.Namespace) -> LoadedModel:
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(args.model, device=args.device)


def machine_record(lm: LoadedModel) -> dict:
    """Which weights ran where: the header of every benchmark's JSON."""
    return {
        "model": lm.name,
        "weights_sha256": lm.weights_sha256,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else "cpu",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version()},
    }
