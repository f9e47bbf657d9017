"""`python -m kebench.models`: fetch and convert the embedded default model and encoder into the cache."""

from kebench.models.embedded import default_encoder_path, default_model_dir, notice

notice(f"default model ready at {default_model_dir()}")
notice(f"default encoder ready at {default_encoder_path()}")
