"""One code path on every device: each editor runs end to end through the runner
(`kebench run --model FOLDER --device D --dtype T`) on a tiny random LLaMA saved as an HF folder,
its edits raise P(new) - P(true), and `restore()` is bit-exact.

CI has no GPU, so there only the cpu cases run; on a GPU machine the cuda cases (float32 and
bfloat16) run as well (`benchmarks/gpu_runs.sh` does so before its reference runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from kebench.runner import Run, RunConfig
from tests.conftest import make_tiny_llama

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOCATE = ("layers=[1, 2]", "v_lr=0.5", "clamp_norm_factor=4.0", "n_context_prefixes=2", "context_prefix_tokens=4",
          "stats_n_tokens=2000", "stats_seq_len=64")
OVERRIDES = {
    "none": (),
    "ft": ("layers=[2]", "lr=0.01", "steps=20", "norm_constraint=0.05"),
    "memit": LOCATE + ("mom2_update_weight=1.0",),
    "alphaedit": LOCATE + ("L2=0.0001",),
    "meg": ("layer=2", "context_prefixes=[]", "encoder_pooling=mean", "encoder_pairs=64", "encoder_steps=3",
            "encoder_batch_size=16", "familiarity_steps=400", "familiarity_negatives=200", "familiarity_hidden=128",
            "familiarity_lr=0.003", "diffusion_steps=40", "denoiser_width=32", "denoiser_depth=1",
            "fit_max_steps=150", "generator=knn", "familiarity_alpha=0.0"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, smol_tokenizer):
    """The tiny LLaMA (embeddings scaled so that d=32 can single out a token) and a tiny BERT encoder."""
    root = tmp_path_factory.mktemp("models")
    model = make_tiny_llama()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(30.0)
    model.save_pretrained(root / "llama")
    smol_tokenizer.save_pretrained(root / "llama")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(smol_tokenizer), hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(root / "bert")
    smol_tokenizer.save_pretrained(root / "bert")
    return root


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("editor", ["none", "ft", "memit", "alphaedit", "meg"])
def test_editor_runs_on_device(editor, device, dtype, folders, tmp_path, monkeypatch):
    if device == "cpu" and dtype == "bfloat16" and editor != "memit":
        pytest.skip("bf16 on CPU per editor: tests/editors/test_bfloat16.py")
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path / "cache"))
    overrides = OVERRIDES[editor] + ((f"encoder={folders / 'bert'}",) if editor == "meg" else ())
    # a model kebench has no settings file for: its settings come from one of the test's own (--hparams-file),
    # which starts from the default model's and --hparam overrides single ones
    own = None
    if editor != "none":  # `none` has no settings
        own = tmp_path / "settings.yaml"
        own.write_text((Path(__file__).resolve().parents[1] / "editors" / editor / "configs" / "smollm2-135m.yaml").read_text())
    cfg = RunConfig(editor=editor, dataset="counterfact", scale=4, general=False, model=str(folders / "llama"), device=device,
                    dtype=dtype, hparam_overrides=overrides, hparams_file=own and str(own))
    out = tmp_path / "r.json"
    Run(cfg, out).execute()
    saved = json.loads(out.read_text())
    assert saved["provenance"]["hardware"]["device"].startswith(device)
    pre, post = saved["metrics"]["pre"], saved["metrics"]["post"]
    assert all(v == v for v in post.values() if isinstance(v, float)), post  # no NaN reached the metrics
    if editor in ("memit", "alphaedit", "meg"):
        assert post["efficacy_magnitude"] > pre["efficacy_magnitude"], (pre, post)  # P(new) - P(true) rose
    if editor == "none":
        assert {k: post[k] for k in pre} == pre
