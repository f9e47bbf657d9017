"""The loaded model bundle editors and metrics receive."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn

from kebench.models.adapter import ArchAdapter


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, its architecture adapter and its provenance.

    `name` is what the user asked for (hub id, folder or "default"); `weights_sha256` is a
    checksum of the weights as loaded, used to key caches (covariance statistics) and
    recorded in results.
    """

    model: nn.Module
    tokenizer: object
    name: str
    weights_sha256: str
    adapter: ArchAdapter = field(init=False)
    source: str = ""  # where it was loaded from (path or hub id)

    def __post_init__(self) -> None:
        self.adapter = ArchAdapter.for_model(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def exact_checksum(model: torch.nn.Module) -> str:
    """sha256 of every parameter's raw bytes: any change, however small, changes it."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()
