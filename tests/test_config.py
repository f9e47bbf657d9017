from dataclasses import dataclass

import pytest

from kebench.config import from_dict, load_hparams, model_key, parse_override, with_overrides
from kebench.errors import ConfigError


@dataclass(frozen=True)
class HP:
    layers: tuple[int, ...] = (1,)
    lr: float = 0.1


def test_model_key():
    assert model_key("default") == "smollm2-135m"
    assert model_key("EleutherAI/gpt-j-6B") == "gpt-j-6b"
    assert model_key("meta-llama/Meta-Llama-3-8B-Instruct") == "llama3-8b"
    assert model_key("openai-community/gpt2-xl") == "gpt2-xl"
    assert model_key("something/else") == "default"


def test_unknown_key_is_named(tmp_path):
    (tmp_path / "default.yaml").write_text("layers: [3, 4]\nlrr: 0.2\n")
    with pytest.raises(ConfigError, match="lrr"):
        load_hparams(HP, tmp_path, "x")


def test_yaml_lists_become_tuples_and_overrides(tmp_path):
    (tmp_path / "smollm2-135m.yaml").write_text("layers: [3, 4]\n")
    hp = load_hparams(HP, tmp_path, "default")
    assert hp.layers == (3, 4) and hp.lr == 0.1
    hp2 = with_overrides(hp, dict([parse_override("lr=0.5"), parse_override("layers=[7]")]))
    assert hp2 == HP(layers=(7,), lr=0.5)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lr")
    assert from_dict(HP, {}) == HP()
