"""MeG (Massive Editing via dynamic weight Generation) as a kebench editor.

apply(): fit one neuron per edit (batched) -> tune the query encoder (cached) -> train the
familiarity gate and calibrate τ on held-out unrelated queries -> train the generator ->
a handle that, per prompt, gates, generates and writes the neuron. See MEG.md for the
original pipeline and §10 for the weaknesses addressed here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kebench.config import from_dict
from kebench.data.case import EditRequest, unique_requests
from kebench.editor import EditHandle, Editor, register_editor
from kebench.errors import ConfigError, DataError
from kebench.fit_cache import FitCache
from kebench.io import atomic_save_safetensors, atomic_write_json
from kebench.models.loaded import LoadedModel, exact_checksum
from kebench.provenance import peak_memory_mb
from kebench.timing import Timer

from editors.meg.config import MeGHParams
from editors.meg.code import NeuronCode, relative_error
from editors.meg.denoiser import DenoiserConfig, count_parameters, mlp_width
from editors.meg.diffusion import DiffusionGenerator, DiffusionSettings
from editors.meg.encoder import ContrastiveSettings, QueryEncoder, tuned_encoder
from editors.meg.familiarity import FamiliarityNet, SimilarityGate, calibrate_tau, fake_classes, tradeoff, train_familiarity
from editors.meg.fitting import FitResult, evaluate_neurons, fit_neurons
from editors.meg.generators import DiffusionNeurons, KnnGenerator, SubjectOracle
from editors.meg.handle import MeGHandle, NeuronGenerator
from editors.meg.neuron import DynamicNeuron, NeuronSpec
from editors.meg.pool import contrastive_pairs, disjoint_pool, split_records, unrelated_queries

if TYPE_CHECKING:
    from kebench.suites import Suite

FORMAT = "kebench-meg/1"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _threads(n: int, device: torch.device) -> Iterator[None]:
    """Cap intra-op threads for the small nets on CPU (they are latency-bound)."""
    if device.type != "cpu" or n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rate(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if len(mask) else float("nan")


@register_editor
class MeGEditor(Editor):
    """Query-conditioned neuron generation gated by familiarity; never changes weights."""

    name = "meg"
    hparams_cls = MeGHParams
    config_dir = Path(__file__).resolve().parent / "configs"

    hparams: MeGHParams

    @classmethod
    def default_hparams(cls, model_name: str, suite: Suite | None = None, settings_file: str | None = None) -> MeGHParams:
        """The model's defaults, training on the pool of the suite the run edits (`Suite.pool`; `--hparam pool=`
        names another suite's). Without a suite, or for a suite without a pool, `pool` keeps its default."""
        hp = super().default_hparams(model_name, settings_file=settings_file)
        if suite is not None and suite.pool is not None:
            hp = dataclasses.replace(hp, pool=suite.pool.name)
        return hp

    # ---------------------------------------------------------------------------------------
    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> MeGHandle:
        hp = self.hparams
        requests = unique_requests(requests)
        if not requests:
            raise DataError("MeG got no edit requests; give at least one case")
        layer = hp.layer_for(lm.adapter.num_layers)
        phase = Timer()
        spec = NeuronSpec(lm.adapter.hidden_size, hp.activation)
        stats: dict[str, Any] = {
            "n_edits": len(requests), "layer": layer, "neuron_size": spec.size, "generator": hp.generator.kind,
        }

        with phase("fit"):
            fit, code = self._fit(lm, requests, spec, layer, stats)
        stats.update(fit.summary())
        failed = [r.case_id for r, ok in zip(requests, fit.converged.tolist(), strict=True) if not ok]
        stats["fit_failed_case_ids"] = failed[:50]

        with phase("pool"):
            pool, scope = disjoint_pool(hp.pool, requests)
            train_recs, held_recs = split_records(pool, 0.5, hp.seed)
        stats["pool_records"], stats["pool_exclusion"] = len(pool), scope

        with phase("encoder"):
            encoder = QueryEncoder.from_pretrained(hp.encoder.model, hp.encoder.pooling, device=lm.device)
            settings = ContrastiveSettings(
                steps=hp.encoder.steps, batch_size=hp.encoder.batch_size, lr=hp.encoder.lr,
                temperature=hp.encoder.temperature, seed=hp.seed,
            )
            pairs = contrastive_pairs(pool, hp.encoder.pairs, hp.seed)
            stats.update(tuned_encoder(encoder, pairs, settings, hp.encoder.cache))

        with phase("conditions"):
            queries = [r.text for r in requests]
            aug_texts = [p + q for q in queries for p in hp.generator.augment_prefixes]
            aug_edit = [e for e in range(len(queries)) for _ in hp.generator.augment_prefixes]
            emb_q = encoder.encode(queries, hp.encode_batch_size)
            emb_aug = encoder.encode(aug_texts, hp.encode_batch_size)
            cond = torch.cat([emb_q, emb_aug])
            cond_edit = torch.tensor(list(range(len(queries))) + aug_edit, dtype=torch.long)
            # how far a paraphrase's embedding sits from its prompt's (held-out pool pairs): the scale of the
            # generator's condition noise, so that the neighbourhood it trains on is where paraphrases land
            held_pairs = contrastive_pairs(held_recs, 500, hp.seed + 2)
            e_prompt = encoder.encode([a for a, _ in held_pairs], hp.encode_batch_size)
            e_para = encoder.encode([b for _, b in held_pairs], hp.encode_batch_size)
            para_dist = float(((e_para - e_prompt).norm(dim=-1) / e_prompt.norm(dim=-1).clamp(min=1e-12)).median())
        stats["paraphrase_distance_median"] = para_dist

        familiarity, tau = None, None
        if hp.gate.enabled:
            with phase("familiarity"):
                negatives = unrelated_queries(train_recs, requests, hp.gate.negatives, hp.seed)
                heldout = unrelated_queries(held_recs, requests, hp.gate.negatives, hp.seed + 1)
                emb_neg = encoder.encode(negatives, hp.encode_batch_size)
                emb_held = encoder.encode(heldout, hp.encode_batch_size)
                with _threads(hp.small_net_threads, lm.device):
                    familiarity, tau, fam_stats = self._familiarity(
                        hp.gate_for(len(requests)), encoder.dim, len(requests), emb_q, emb_aug, cond, cond_edit, emb_neg, emb_held, lm.device
                    )
            stats.update(fam_stats)

        with phase("generator"), _threads(hp.small_net_threads, lm.device):
            keep = torch.ones(len(requests), dtype=torch.bool) if hp.generator.train_on_failed else fit.converged
            if not keep.any():
                raise ConfigError("no neuron converged and generator.train_on_failed is off; raise fitting.max_steps or fitting.lr")
            rows = keep[cond_edit]
            generator, gen_stats = self._generator(
                fit.vectors, code, cond[rows], cond_edit[rows], requests, lm.device, hp.generator.cond_noise * para_dist
            )
            stats.update(gen_stats)

        neuron = DynamicNeuron(lm.adapter.mlp(layer), spec)
        handle = MeGHandle(neuron, encoder, familiarity, tau, generator, stats, hp.encode_batch_size)
        if hp.self_check:
            with phase("self_check"):
                stats.update(self._self_check(lm, requests, spec, layer, handle, emb_q, fit))
        stats["seconds"] = {k: round(v, 3) for k, v in phase.timings.items()}
        stats.update(peak_memory_mb(lm.device))
        return handle

    # ---------------------------------------------------------------------------------------
    def _fit(
        self, lm: LoadedModel, requests: Sequence[EditRequest], spec: NeuronSpec, layer: int, stats: dict[str, Any]
    ) -> tuple[FitResult, NeuronCode]:
        """Fit one neuron per edit. With a code (code_size > 0): the first `code_pilot` edits freely, the leading
        directions of their standardised neurons as the code, then every edit inside that subspace."""
        hp = self.hparams
        cache = FitCache("meg_neurons", exact_checksum(lm.model), lm.device.type) if hp.fitting.cache else None
        options = dict(max_steps=hp.fitting.max_steps, nll_threshold=hp.fitting.nll_threshold, batch_size=hp.fitting.batch_size,
                       context_prefixes=hp.fitting.context_prefixes, seed=hp.fitting.seed, cache=cache)
        if hp.fitting.code_size == 0:
            fit = fit_neurons(lm, requests, spec, layer, lr=hp.fitting.lr, **options)
            code = NeuronCode.pca(fit.vectors, spec.size)
        else:
            pilot = fit_neurons(lm, requests[: hp.fitting.code_pilot], spec, layer, lr=hp.fitting.lr, **options)
            code = NeuronCode.pca(pilot.vectors, hp.fitting.code_size)
            if len(requests) == len(pilot.vectors) and code.size == len(pilot.vectors) - 1:
                fit = pilot  # the code spans these neurons exactly: fitting them again inside it changes nothing
            else:
                fit = fit_neurons(lm, requests, spec, layer, lr=hp.fitting.code_lr, code=code, **options)
                fit.seconds += pilot.seconds
            stats.update({
                "code_pilot_edits": len(pilot.vectors), "code_pilot_energy": code.energy(pilot.vectors),
                "code_pilot_oracle_efficacy": float(pilot.efficacy.float().mean()),
            })
        stats["code_size"] = code.size
        stats["code_energy"] = code.energy(fit.vectors)  # 1.0 when fitted inside the code's subspace
        return fit, code

    def _familiarity(
        self,
        kind: str,
        dim: int,
        n_edits: int,
        emb_q: torch.Tensor,
        emb_aug: torch.Tensor,
        cond: torch.Tensor,
        cond_edit: torch.Tensor,
        emb_neg: torch.Tensor,
        emb_held: torch.Tensor,
        device: torch.device,
    ) -> tuple[FamiliarityNet | SimilarityGate, float, dict[str, Any]]:
        """Train the gate on edit queries (+ augmentations) vs unrelated queries (the net; the similarity
        gate needs no training); calibrate τ on held-out ones.

        `emb_held` comes from `unrelated_queries`: plain pool prompts first, then neighbourhood-like ones.
        """
        hp = self.hparams
        gate: FamiliarityNet | SimilarityGate
        if kind == "similarity":
            gate, stats = SimilarityGate(cond).to(device), {}
        else:
            gate = FamiliarityNet(dim, hp.gate.classes, hp.gate.hidden, hp.gate.blocks).to(device)
            torch.manual_seed(hp.seed)
            labels = fake_classes(n_edits, hp.gate.classes, hp.seed)[cond_edit]
            stats = train_familiarity(
                gate, cond, labels, emb_neg, steps=hp.gate.steps, lr=hp.gate.lr,
                negative_weight=hp.gate.negative_weight, noise=hp.gate.noise, seed=hp.seed,
            )
        h_held = gate.score(emb_held)
        tau = hp.gate.tau if hp.gate.tau is not None else calibrate_tau(h_held, hp.gate.alpha)
        h_q, h_aug = gate.score(emb_q), gate.score(emb_aug)
        half = len(emb_held) // 2
        stats.update({
            "tau": tau,
            "tau_calibrated": hp.gate.tau is None,
            "fire_rate_requests": _rate(h_q < tau),
            "fire_rate_augmented": _rate(h_aug < tau),
            "false_fire_heldout": _rate(h_held < tau),
            "false_fire_heldout_pool": _rate(h_held[:half] < tau),
            "false_fire_heldout_neighbourlike": _rate(h_held[half:] < tau),
            "false_fire_train_negatives": _rate(gate.score(emb_neg) < tau),
            "gate": kind,
            "tradeoff": tradeoff(torch.cat([h_q, h_aug]), h_held),
        })
        if kind == "net":
            stats["entropy_max"] = float(torch.log(torch.tensor(float(hp.gate.classes))))
        return gate, tau, stats

    def _generator(
        self,
        vectors: torch.Tensor,
        code: NeuronCode,
        cond: torch.Tensor,
        cond_edit: torch.Tensor,
        requests: Sequence[EditRequest],
        device: torch.device,
        cond_noise: float = 0.0,
    ) -> tuple[NeuronGenerator, dict[str, Any]]:
        """Diffusion over the neuron code (trained here), or the lookup / subject-oracle upper bounds."""
        hp = self.hparams
        if hp.generator.kind == "knn":
            return KnnGenerator(cond, cond_edit, vectors), {}
        if hp.generator.kind == "oracle":
            return SubjectOracle(cond, cond_edit, vectors, [r.subject for r in requests]), {}
        n = len(requests)
        width = hp.generator.width or (
            mlp_width(n, code.size, cond.shape[1], hp.generator.depth, hp.generator.ratio) if hp.generator.denoiser == "mlp" else 768
        )
        cfg = DenoiserConfig(hp.generator.denoiser, code.size, cond.shape[1], width=width, depth=hp.generator.depth,
                             patch=hp.generator.patch, heads=hp.generator.heads)
        steps = hp.diffusion_schedule(n)
        settings = DiffusionSettings(
            steps=steps, batch_size=hp.generator.batch_size, lr=hp.generator.lr, ema=hp.generator.ema,
            prediction=hp.generator.prediction, sample_steps=hp.generator.sample_steps, seed=hp.seed,
            cond_noise=cond_noise, select_every=hp.generator.select_every or max(1, steps // 5),
        )
        model = DiffusionGenerator(cfg, settings, code).to(device)
        cache = FitCache("meg_generator", "any-model", device.type) if hp.fitting.cache else None
        key = found = None
        if cache is not None:  # the training pairs, the code and the settings determine the trained denoiser
            tensors = {"vectors": vectors, "conditions": cond, "condition_edit": cond_edit,
                       **{f"code.{k}": v for k, v in code.state_dict().items()}}
            key = cache.key(model.config(), tensors)
            found = cache.load(key)
        if found is not None:
            meta = found.pop("meta")
            model = DiffusionGenerator.from_state(meta["config"], found).to(device)
            stats = {**meta["stats"], "diffusion_from_cache": True}
        else:
            t0 = time.perf_counter()
            # beside the cache entry: a long training checkpoints there and an interrupted run resumes it
            partial = cache.path(key).with_suffix(".partial.pt") if cache is not None else None
            stats = model.fit(vectors, cond, cond_edit, checkpoint=partial)
            stats["diffusion_train_seconds"] = time.perf_counter() - t0  # kept with a cached generator
            if cache is not None:
                cache.save(key, model.state_dict(), {"config": model.config(), "stats": stats})
        stats["diffusion_params"] = count_parameters(model.model)
        stats["diffusion_params_per_number"] = stats["diffusion_params"] / (n * code.size)
        stats["diffusion_visits_per_edit"] = steps * hp.generator.batch_size / n
        return DiffusionNeurons(model), stats

    def _self_check(
        self, lm: LoadedModel, requests: Sequence[EditRequest], spec: NeuronSpec, layer: int, handle: MeGHandle,
        emb_q: torch.Tensor, fit: FitResult,
    ) -> dict[str, Any]:
        """How well the generated neurons stand in for the fitted ones on the edit prompts: efficacy through the
        gate and without it, relative error, the share of the fitted neuron's NLL drop, and efficacy by how many
        edits share the target."""
        queries = [r.text for r in requests]
        through_gate = handle.vectors_for(queries)
        handle.prompts_seen = handle.prompts_fired = 0
        # one scoring pass over every edit: where the gate fires, its neuron is the generated one already; only the
        # closed rows need a generated neuron (ungated) and a second, zero-neuron score (gated)
        closed = ~handle.fires(emb_q)[0]
        raw = through_gate.clone()
        if closed.any():
            raw[closed] = handle.generator.generate(emb_q[closed], [q for q, c in zip(queries, closed.tolist()) if c]).float().cpu()
        ok_raw, nll_raw = evaluate_neurons(lm, requests, spec, layer, raw)
        ok_gate = ok_raw.clone()
        if closed.any():
            shut = [r for r, c in zip(requests, closed.tolist()) if c]
            ok_gate[closed] = evaluate_neurons(lm, shut, spec, layer, torch.zeros(len(shut), spec.size))[0]
        drop = (fit.baseline_nll - nll_raw) / (fit.baseline_nll - fit.nll).clamp(min=1e-6)
        share = Counter(r.target_new for r in requests)
        by_share = {}
        for name, lo, hi in (("1", 1, 1), ("2-9", 2, 9), ("10-99", 10, 99), ("100+", 100, None)):
            rows = torch.tensor([lo <= share[r.target_new] and (hi is None or share[r.target_new] <= hi) for r in requests])
            if rows.any():
                by_share[name] = {"edits": int(rows.sum()), "efficacy": _rate(ok_raw[rows])}
        return {
            "generated_efficacy": _rate(ok_gate),
            "generator_efficacy_ungated": _rate(ok_raw),
            "generator_relative_error_median": float(relative_error(raw, fit.vectors).median()),
            "generator_nll_drop_share_median": float(drop.median()),
            "generator_efficacy_by_target_share": by_share,
        }

    # persistence -----------------------------------------------------------------------------
    def save_edits(self, handle: EditHandle, path: Path) -> None:
        """encoder head, familiarity net, generator (+ normaliser), τ and hparams: safetensors + json."""
        if not isinstance(handle, MeGHandle):
            raise ConfigError(f"MeG cannot save a {type(handle).__name__}; pass the handle MeG's apply() returned")
        path = Path(path)
        enc, fam, gen = handle.encoder, handle.familiarity, handle.generator
        meta: dict[str, Any] = {
            "format": FORMAT,
            "hparams": dataclasses.asdict(self.hparams),
            "layer": handle.stats["layer"],
            "neuron": dataclasses.asdict(handle.neuron.spec),
            "tau": handle.tau,
            "encoder": {"name": enc.name, "pooling": enc.pooling, "max_length": enc.max_length},
            "familiarity": None if fam is None else (
                {"kind": "similarity", "dim": fam.dim} if isinstance(fam, SimilarityGate) else
                {"kind": "net", "dim": fam.dim, "classes": fam.classes, "hidden": fam.hidden, "blocks": fam.n_blocks}
            ),
            "generator": self.hparams.generator.kind,
            "stats": handle.stats,
        }
        atomic_save_safetensors(path / "encoder_head.safetensors", enc.head_state())
        if fam is not None:
            atomic_save_safetensors(path / "familiarity.safetensors", fam.state_dict())
        if isinstance(gen, DiffusionNeurons):
            meta["diffusion"] = gen.model.config()
            state = gen.model.state_dict()
        else:
            state = gen.state_dict()
            if isinstance(gen, SubjectOracle):
                meta["subjects"] = gen.subjects
        atomic_save_safetensors(path / "generator.safetensors", state)
        atomic_write_json(path / "meg.json", meta)  # last: its presence marks a complete save

    def load_edits(self, lm: LoadedModel, path: Path) -> MeGHandle:
        """Rebuild the handle saved by save_edits, without refitting anything."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_path = path / "meg.json"
        if not meta_path.exists():
            raise DataError(f"{path} holds no MeG edits (meg.json missing); pass a folder written by MeG's save_edits")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise DataError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}; re-save the edits")
        hp = from_dict(MeGHParams, meta["hparams"], str(meta_path))
        self.hparams = hp
        spec = NeuronSpec(**meta["neuron"])
        e = meta["encoder"]
        encoder = QueryEncoder.from_pretrained(e["name"], e["pooling"], device=lm.device)
        encoder.max_length = e["max_length"]
        encoder.load_head(load_file(str(path / "encoder_head.safetensors")))
        fam = None
        if meta["familiarity"] is not None:
            f = meta["familiarity"]
            fam_state = load_file(str(path / "familiarity.safetensors"))
            if f.get("kind", "net") == "similarity":
                fam = SimilarityGate(fam_state["bank"])
            else:
                fam = FamiliarityNet(f["dim"], f["classes"], f["hidden"], f["blocks"])
                fam.load_state_dict(fam_state)
            fam.to(lm.device).eval()
        state = load_file(str(path / "generator.safetensors"))
        kind = meta["generator"]
        if kind == "diffusion":
            generator: Any = DiffusionNeurons(DiffusionGenerator.from_state(meta["diffusion"], state).to(lm.device))
        elif kind == "knn":
            generator = KnnGenerator(state["bank"], state["bank_edit"], state["vectors"])
        else:
            generator = SubjectOracle(state["bank"], state["bank_edit"], state["vectors"], meta["subjects"])
        neuron = DynamicNeuron(lm.adapter.mlp(meta["layer"]), spec)
        return MeGHandle(neuron, encoder, fam, meta["tau"], generator, meta["stats"], hp.encode_batch_size)
