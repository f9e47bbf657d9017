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
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
from editors.meg.experts import ExpertMixture, continue_experts, train_experts
from editors.meg.encoder import ContrastiveSettings, QueryEncoder, tuned_encoder
from editors.meg.familiarity import FamiliarityNet, SimilarityGate, calibrate_tau, fake_classes, tradeoff, train_familiarity
from editors.meg.fitting import FitResult, concat_fits, evaluate_neurons, fit_neurons
from editors.meg.generators import DiffusionNeurons, KnnGenerator, SubjectOracle
from editors.meg.handle import MeGHandle, NeuronGenerator
from editors.meg.neuron import DynamicNeuron, NeuronSpec
from editors.meg.pool import contrastive_pairs, disjoint_pool, split_records, unrelated_queries

if TYPE_CHECKING:
    from kebench.suites import Suite

FORMAT = "kebench-meg/1"
log = logging.getLogger(__name__)
# A growing sequential MeG draws this share of each training batch from the step's new edits, the rest from all
# edits so far (replay), and trains until each new edit has had `generator.visits` samples.
GROWTH_FOCUS = 0.5


@dataclass
class _Grown:
    """What a sequential MeG carries from step to step: every edit so far, with one gate and one generator over
    all of them (the live `handle`; the neuron code of the first step's pilot stays fixed)."""

    requests: list[EditRequest]
    fit: FitResult
    code: NeuronCode
    cond: torch.Tensor
    cond_edit: torch.Tensor
    emb_q: torch.Tensor
    emb_aug: torch.Tensor
    para_dist: float
    handle: MeGHandle

    def state(self) -> dict[str, Any]:
        return {"requests": self.requests, "fit": dataclasses.asdict(self.fit), "code": self.code.state_dict(),
                "cond": self.cond, "cond_edit": self.cond_edit, "emb_q": self.emb_q, "emb_aug": self.emb_aug,
                "para_dist": self.para_dist}

    @classmethod
    def from_state(cls, state: dict[str, Any], handle: MeGHandle) -> _Grown:
        return cls(requests=list(state["requests"]), fit=FitResult(**state["fit"]), code=NeuronCode.from_state(state["code"]),
                   cond=state["cond"], cond_edit=state["cond_edit"], emb_q=state["emb_q"], emb_aug=state["emb_aug"],
                   para_dist=state["para_dist"], handle=handle)


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

    def __init__(self, hparams: MeGHParams | None = None) -> None:
        super().__init__(hparams)
        self._planned: list[EditRequest] = []  # the distinct edits the run makes over all its steps (plan())
        self._grown: _Grown | None = None  # sequential runs: the edits so far and their live handle
        self._live: MeGHandle | None = None  # the handle that serves every edit so far (retired when the next one does)

    def plan(self, requests: Sequence[EditRequest]) -> None:
        """A growing sequence sizes its generator and picks its gate for the whole sequence (the width cannot grow
        step by step), and every step's training pool leaves out all of the sequence's edits, not only its own."""
        self._planned = list(requests)

    def _sized_for(self, n: int) -> int:
        """The number of edits the generator and the gate are chosen for: a growing sequence's total."""
        return max(n, len(self._planned)) if self._grows() else n

    def _grows(self) -> bool:
        """Whether steps after the first extend one gate and generator (needs the fixed code of the first step)."""
        return self.hparams.fitting.code_size > 0

    def _retire_live(self) -> None:
        if self._live is not None:
            self._live.restore()  # detach its hook: the new handle serves its edits too
            self._live = None

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
        """One step's edits. In a sequential run every step after the first grows the previous step's MeG: the new
        edits are fitted inside the first step's neuron code, the gate is rebuilt over every edit so far, the
        generator continues training on all of them (half of each batch the new edits), and the new handle
        replaces the previous one (whose hook is retired), so one gate and one generator serve the sequence."""
        hp = self.hparams
        grown = self._grown if self._grows() else None
        prior = grown.requests if grown is not None else []
        known = {r.key for r in prior}
        requests = [r for r in unique_requests(requests) if r.key not in known]
        if not requests:
            raise DataError("MeG got no new edit requests; give at least one case")
        every = [*prior, *requests]
        if grown is None and self._grows() and len(self._planned) > len(requests) and len(requests) <= hp.fitting.code_size:
            raise ConfigError(
                f"sequential MeG grows every step inside the first step's neuron code of {hp.fitting.code_size} "
                f"directions, which needs more than {hp.fitting.code_size} edits in the first step (got {len(requests)}); "
                f"use --batch-size {hp.fitting.code_size + 1} or more, or --hparam fitting.code_size=0 to stack independent steps")
        layer = hp.layer_for(lm.adapter.num_layers)
        phase = Timer()
        spec = NeuronSpec(lm.adapter.hidden_size, hp.activation)
        stats: dict[str, Any] = {
            "n_edits": len(requests), "n_edits_so_far": len(every), "layer": layer, "neuron_size": spec.size,
            "generator": hp.generator.kind,
        }

        with phase("fit"):
            fit, code = self._fit(lm, requests, spec, layer, stats, grown.code if grown is not None else None)
        stats.update(fit.summary())
        failed = [r.case_id for r, ok in zip(requests, fit.converged.tolist(), strict=True) if not ok]
        stats["fit_failed_case_ids"] = failed[:50]
        fit_all = concat_fits(grown.fit, fit) if grown is not None else fit

        with phase("pool"):
            # a sequence's later edits stay out of the pool too (the encoder is tuned once, at the first step)
            pool, scope = disjoint_pool(hp.pool, self._planned if len(self._planned) > len(every) else every)
            train_recs, held_recs = split_records(pool, 0.5, hp.seed)
        stats["pool_records"], stats["pool_exclusion"] = len(pool), scope

        with phase("encoder"):
            if grown is not None:
                encoder = grown.handle.encoder  # tuned once, at the first step, on the pool alone
            else:
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
            aug_edit = [len(prior) + e for e in range(len(queries)) for _ in hp.generator.augment_prefixes]
            emb_q = encoder.encode(queries, hp.encode_batch_size)
            emb_aug = encoder.encode(aug_texts, hp.encode_batch_size, label="MeG: encoding conditions")
            cond = torch.cat([emb_q, emb_aug])
            cond_edit = torch.tensor([len(prior) + e for e in range(len(queries))] + aug_edit, dtype=torch.long)
            held_pair_emb = None  # (prompts, paraphrases) of held-out pool pairs, first step only
            if grown is not None:
                para_dist = grown.para_dist
            else:
                # how far a paraphrase's embedding sits from its prompt's (held-out pool pairs): the scale of the
                # generator's condition noise, so that the neighbourhood it trains on is where paraphrases land
                held_pairs = contrastive_pairs(held_recs, 500, hp.seed + 2)
                e_prompt = encoder.encode([a for a, _ in held_pairs], hp.encode_batch_size)
                e_para = encoder.encode([b for _, b in held_pairs], hp.encode_batch_size)
                para_dist = float(((e_para - e_prompt).norm(dim=-1) / e_prompt.norm(dim=-1).clamp(min=1e-12)).median())
                held_pair_emb = (e_prompt, e_para)
        stats["paraphrase_distance_median"] = para_dist
        if grown is not None:
            cond_all, cond_edit_all = torch.cat([grown.cond, cond]), torch.cat([grown.cond_edit, cond_edit])
            emb_q_all, emb_aug_all = torch.cat([grown.emb_q, emb_q]), torch.cat([grown.emb_aug, emb_aug])
        else:
            cond_all, cond_edit_all, emb_q_all, emb_aug_all = cond, cond_edit, emb_q, emb_aug

        familiarity, tau = None, None
        if hp.gate.enabled:
            with phase("familiarity"):
                negatives = unrelated_queries(train_recs, every, hp.gate.negatives, hp.seed)
                heldout = unrelated_queries(held_recs, every, hp.gate.negatives, hp.seed + 1)
                emb_neg = encoder.encode(negatives, hp.encode_batch_size)
                emb_held = encoder.encode(heldout, hp.encode_batch_size)
                with _threads(hp.small_net_threads, lm.device):
                    familiarity, tau, fam_stats = self._familiarity(
                        hp.gate_for(self._sized_for(len(every))), encoder.dim, len(every), emb_q_all, emb_aug_all,
                        cond_all, cond_edit_all, emb_neg, emb_held, lm.device,
                    )
            stats.update(fam_stats)

        with phase("generator"), _threads(hp.small_net_threads, lm.device):
            keep = torch.ones(len(every), dtype=torch.bool) if hp.generator.train_on_failed else fit_all.converged
            if not keep.any():
                raise ConfigError("no neuron converged and generator.train_on_failed is off; raise fitting.max_steps or fitting.lr")
            rows = keep[cond_edit_all]
            if grown is not None and isinstance(grown.handle.generator, DiffusionNeurons):
                generator, gen_stats = self._grow_generator(
                    grown.handle.generator, fit_all.vectors, cond_all[rows], cond_edit_all[rows],
                    (cond_edit_all >= len(prior))[rows],
                )
            else:
                generator, gen_stats = self._generator(
                    fit_all.vectors, code, cond_all[rows], cond_edit_all[rows], every, lm.device,
                    hp.generator.cond_noise * para_dist,
                )
            if isinstance(generator, DiffusionNeurons) and len(generator.mixture.experts) > 1 and held_pair_emb is not None:
                # how often a paraphrase crosses a router boundary: held-out pool prompts and their paraphrases sent
                # to the same expert (a crossing paraphrase of an edit gets another expert's neuron)
                mixture = generator.mixture
                gen_stats["diffusion_router_paraphrase_agreement"] = _rate(
                    mixture.route(held_pair_emb[0]) == mixture.route(held_pair_emb[1]))
            stats.update(gen_stats)

        if grown is not None:
            self._retire_live()
        neuron = DynamicNeuron(lm.adapter.mlp(layer), spec)
        handle = MeGHandle(neuron, encoder, familiarity, tau, generator, stats, hp.encode_batch_size)
        handle.covers_previous_steps = grown is not None
        if hp.self_check:
            with phase("self_check"):  # the step's own edits: its cost stays flat along a sequence
                stats.update(self._self_check(lm, requests, spec, layer, handle, emb_q, fit))
        stats["seconds"] = {k: round(v, 3) for k, v in phase.timings.items()}
        stats.update(peak_memory_mb(lm.device))
        if self._grows():
            self._grown = _Grown(every, fit_all, code, cond_all, cond_edit_all, emb_q_all, emb_aug_all, para_dist, handle)
            self._live = handle
        return handle

    def _grow_generator(
        self, previous: DiffusionNeurons, vectors: torch.Tensor, cond: torch.Tensor, cond_edit: torch.Tensor,
        focus: torch.Tensor,
    ) -> tuple[NeuronGenerator, dict[str, Any]]:
        """Continue the previous step's denoisers on every edit so far, `GROWTH_FOCUS` of each batch on the new ones
        (editors.meg.experts.continue_experts)."""
        stats = continue_experts(self.hparams, previous.mixture, vectors, cond, cond_edit, focus, GROWTH_FOCUS)
        return DiffusionNeurons(previous.mixture), stats

    # ---------------------------------------------------------------------------------------
    def _fit(
        self, lm: LoadedModel, requests: Sequence[EditRequest], spec: NeuronSpec, layer: int, stats: dict[str, Any],
        code: NeuronCode | None = None,
    ) -> tuple[FitResult, NeuronCode]:
        """Fit one neuron per edit. With a code (code_size > 0): the first `code_pilot` edits freely, the leading
        directions of their standardised neurons as the code, then every edit inside that subspace; with `code`
        given (a growing sequence's, from its first step), every edit inside it."""
        hp = self.hparams
        cache = FitCache("meg_neurons", exact_checksum(lm.model), lm.device.type) if hp.fitting.cache else None
        options = dict(max_steps=hp.fitting.max_steps, nll_threshold=hp.fitting.nll_threshold, batch_size=hp.fitting.batch_size,
                       context_prefixes=hp.fitting.context_prefixes, seed=hp.fitting.seed, cache=cache)
        if code is not None:
            fit = fit_neurons(lm, requests, spec, layer, lr=hp.fitting.code_lr, code=code, **options)
        elif hp.fitting.code_size == 0:
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
            torch.manual_seed(hp.seed)  # before the net is built: its initial weights follow the seed too
            gate = FamiliarityNet(dim, hp.gate.classes, hp.gate.hidden, hp.gate.blocks).to(device)
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
        cache = FitCache("meg_generator", "any-model", device.type) if hp.fitting.cache else None
        # a growing sequence's first step sizes the denoisers and the experts for the whole sequence
        mixture, stats = train_experts(hp, vectors, code, cond, cond_edit, self._sized_for(len(requests)), device,
                                       cond_noise, cache)
        return DiffusionNeurons(mixture), stats

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
            # a growing sequence's later step: this handle serves the earlier steps' edits too (load_edits retires theirs)
            "covers_previous_steps": handle.covers_previous_steps,
            "stats": handle.stats,
        }
        atomic_save_safetensors(path / "encoder_head.safetensors", enc.head_state())
        if fam is not None:
            atomic_save_safetensors(path / "familiarity.safetensors", fam.state_dict())
        if isinstance(gen, DiffusionNeurons):
            meta["diffusion"] = gen.mixture.config()
            state = gen.mixture.state_dict()
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
            generator: Any = DiffusionNeurons(ExpertMixture.from_state(meta["diffusion"], state).to(lm.device))
        elif kind == "knn":
            generator = KnnGenerator(state["bank"], state["bank_edit"], state["vectors"])
        else:
            generator = SubjectOracle(state["bank"], state["bank_edit"], state["vectors"], meta["subjects"])
        if meta.get("covers_previous_steps"):
            self._retire_live()
        neuron = DynamicNeuron(lm.adapter.mlp(meta["layer"]), spec)
        handle = MeGHandle(neuron, encoder, fam, meta["tau"], generator, meta["stats"], hp.encode_batch_size)
        handle.covers_previous_steps = bool(meta.get("covers_previous_steps"))
        self._live = handle
        return handle

    def state_dict(self) -> dict[str, Any]:
        """A growing sequence's edits so far (requests, fitted neurons, code, conditions), for a resumed run's next
        step; the live handle itself is saved by save_edits and read back by load_edits."""
        return {"grown": self._grown.state()} if self._grown is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self._live is None:
            raise DataError("MeG's sequence state arrived without its step's edits; load_edits comes first")
        self._grown = _Grown.from_state(state["grown"], self._live)
