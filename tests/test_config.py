from dataclasses import dataclass, field

import pytest

from kebench.config import config_file, from_dict, load_hparams, parse_override, with_overrides
from kebench.errors import ConfigError


@dataclass(frozen=True)
class HP:
    layers: tuple[int, ...] = (1,)
    lr: float = 0.1


def test_a_model_finds_its_file_by_name_without_a_table_in_code(tmp_path):
    from pathlib import Path

    memit = Path(__file__).resolve().parents[1] / "editors" / "memit" / "configs"
    for model, stem in (("default", "smollm2-135m"), ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"),
                        ("EleutherAI/gpt-j-6B", "gpt-j-6b"), ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3-8b"),
                        ("meta-llama/Llama-3.1-8B", "llama3-8b"),  # by the file's `models:` patterns
                        ("openai-community/gpt2-xl", "gpt2-xl")):
        assert config_file(memit, model).stem == stem, model
    # a local folder: the name its config.json records, then its architecture
    folder = tmp_path / "my-finetune"
    folder.mkdir()
    (folder / "config.json").write_text('{"_name_or_path": "EleutherAI/gpt-j-6B", "model_type": "gptj"}')
    assert config_file(memit, str(folder)).stem == "gpt-j-6b"
    own = tmp_path / "configs"
    own.mkdir()
    (own / "gptj.yaml").write_text("layers: [1]\n")
    (folder / "config.json").write_text('{"model_type": "gptj"}')
    assert config_file(own, str(folder)).stem == "gptj"


def test_a_model_without_settings_is_one_line_listing_the_files(tmp_path):
    from pathlib import Path

    editors = Path(__file__).resolve().parents[1] / "editors"
    with pytest.raises(ConfigError, match=r"no settings for model 'mistralai/Mistral-7B'.*gpt-j-6b.yaml.*smollm2-135m.yaml"):
        config_file(editors / "memit" / "configs", "mistralai/Mistral-7B")
    assert config_file(editors / "ft" / "configs", "mistralai/Mistral-7B").name == "default.yaml"  # settings for any model
    assert config_file(editors / "meg" / "configs", "mistralai/Mistral-7B").name == "default.yaml"
    assert config_file(tmp_path, "anything") is None  # an editor without files: its dataclass defaults


@dataclass(frozen=True)
class Inner:
    alpha: float = 0.05
    kind: str = "auto"


@dataclass(frozen=True)
class Outer:
    layer: int = 1
    gate: Inner = field(default_factory=Inner)

    @classmethod
    def renamed(cls, key):
        return {"familiarity": "gate.kind"}.get(key) or ("gate." + key[6:] if key.startswith("fam_a_") else None)


def test_sections_nest_in_yaml_take_dotted_overrides_and_former_names(tmp_path):
    (tmp_path / "smollm2-135m.yaml").write_text("layer: 3\ngate:\n  alpha: 0.1\n")
    hp = load_hparams(Outer, tmp_path, "default")
    assert hp == Outer(layer=3, gate=Inner(alpha=0.1))
    assert with_overrides(hp, dict([parse_override("gate.kind=net")])) == Outer(layer=3, gate=Inner(alpha=0.1, kind="net"))
    assert with_overrides(hp, {"familiarity": "net"}).gate.kind == "net"  # a former flat name
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) gate.beta in overrides; valid: gate.alpha, gate.kind"):
        with_overrides(hp, {"gate.beta": 1})
    with pytest.raises(ConfigError, match="gate is a section"):
        with_overrides(hp, {"gate": 3})


def test_meg_settings_are_grouped_and_former_names_still_work():
    from editors.meg import MeGEditor

    hp = MeGEditor.default_hparams("default")
    assert hp.layer == 20 and hp.fitting.batch_size == 64 and hp.gate.alpha == 0.05 and hp.generator.kind == "diffusion"
    old = with_overrides(hp, {"familiarity": "similarity", "diffusion_cond_noise": 1.0, "fit_cache": False})
    new = with_overrides(hp, {"gate.kind": "similarity", "generator.cond_noise": 1.0, "fitting.cache": False})
    assert old == new and new.gate_for(10) == "similarity"


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


def test_names_of_earlier_schemas_and_misplaced_settings(tmp_path):
    from editors.meg.config import EncoderSettings, MeGHParams

    assert MeGHParams.renamed("diffusion_lr") == "generator.lr" and MeGHParams.renamed("familiarity") == "gate.kind"
    assert MeGHParams.renamed("diffusion_depth") is None and MeGHParams.renamed("diffusion_hidden") is None  # the old DiT's
    hp = from_dict(MeGHParams, {"encoder": EncoderSettings(steps=0)})  # a section given as its settings object
    assert hp.encoder.steps == 0 and hp.encoder.model == "default"
    with pytest.raises(ConfigError, match="layer is a single setting"):
        from_dict(MeGHParams, {"layer.x": 1})
    # a local folder is matched by its own name, not by the folders it sits in
    folder = tmp_path / "llama3-8b-sweep" / "gpt2-xl-ft"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    from pathlib import Path

    memit = Path(__file__).resolve().parents[1] / "editors" / "memit" / "configs"
    assert config_file(memit, str(folder)).stem == "gpt2-xl"
