"""Model loading (local folder, GGUF, hub id, embedded default) and architecture adapters."""

from kebench.models.adapter import ARCH_SPECS, ArchAdapter, ArchSpec
from kebench.models.load import default_encoder_path, load_model
from kebench.models.loaded import LoadedModel

__all__ = ["ARCH_SPECS", "ArchAdapter", "ArchSpec", "LoadedModel", "default_encoder_path", "load_model"]
