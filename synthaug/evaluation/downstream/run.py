"""Run (or resume) the benchmark: split and check the cohorts, generate what the arms need, train, score, collect."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.grid import Grid
from ...core.io import Cohort, atomic_write_json, case_identity, remove_stale_temporaries
from ...core.progress import progress_bar
from .cohorts import (
    check_cohort,
    check_disjoint,
    generator_training_cases,
    has_organ_labels,
    make_phantom_cohort,
    make_synthetic_cache,
    match_cases,
    open_cohort,
)
from .config import SYNTH_RATIO, SYNTHETIC_ARMS, DownstreamConfig, Run, parse_subgroup, plan_runs, real_subset
from .report import RESULTS_FILE, summarise, write_report
from .train import lesion_insertion_transform, prepare_case, score, train_model

SETTINGS_FILE = "downstream_settings.json"
#: Settings a re-run may change (finished runs stay valid); every other setting must match.
_FREE_SETTINGS = ("arms", "n_real", "seeds", "threads", "progress", "out")
#: What a benchmark writes into its output folder (a folder holding only these may be resumed).
_OWN_ENTRIES = ("synthetic", "phantom", "runs")


@dataclass
class BenchmarkData:
    """The cohorts of one benchmark, prepared on the working grid (filled by :func:`_load_data`)."""

    cfg: DownstreamConfig
    real: Cohort
    test: Cohort
    pool: list[str]
    val: list[str]
    test_ids: list[str]
    shift_test: list[str]
    shift_pool: list[str]
    cache: dict[tuple[str, str], dict] = field(default_factory=dict)

    def item(self, source: str, cohort: Cohort, cid: str) -> dict:
        key = (source, cid)
        if key not in self.cache:
            self.cache[key] = prepare_case(cohort.load(cid), self.cfg.spacing_mm)
        return self.cache[key]


def _split(cfg: DownstreamConfig) -> tuple[Cohort, Cohort, list[str], list[str], list[str]]:
    real = open_cohort(cfg.real, "real")
    check_cohort(real, "real", cfg.tasks)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.synth_seed, 0x7E5]))
    ids = list(real.case_ids)
    order = [ids[i] for i in rng.permutation(len(ids))]
    if cfg.test is None:
        n_test = max(1, int(round(cfg.test_fraction * len(ids))))
        test, test_ids, order = real, sorted(order[:n_test]), order[n_test:]
    else:
        test = open_cohort(cfg.test, "test")
        check_cohort(test, "test", cfg.tasks)
        test_ids = list(test.case_ids)
    val, pool = sorted(order[: cfg.n_val]), order[cfg.n_val:]
    if max(cfg.n_real) > len(pool):
        raise ValueError(f"`n_real`={max(cfg.n_real)} exceeds the {len(pool)} real training cases left "
                         f"after {len(ids) - len(pool)} test/validation cases")
    train_keys = {c: case_identity(real, c) for c in pool + val}
    check_disjoint({c: case_identity(test, c) for c in test_ids}, train_keys)
    return real, test, sorted(pool), val, test_ids


def _load_data(cfg: DownstreamConfig) -> BenchmarkData:
    real, test, pool, val, test_ids = _split(cfg)
    member = parse_subgroup(cfg.shift_group)
    shift_test = [c for c in test_ids if member(test.demographics.get(c))]
    shift_pool = [c for c in pool if not member(real.demographics.get(c))]
    if "shift" in cfg.arms:
        if not shift_test:
            raise ValueError(f"`shift_group`={cfg.shift_group!r}: no test case is in this subgroup")
        if not any(member(real.demographics.get(c)) for c in pool):
            raise ValueError(f"`shift_group`={cfg.shift_group!r}: no real training case is in this subgroup")
        if not shift_pool:
            raise ValueError(f"`shift_group`={cfg.shift_group!r}: every real training case is in this subgroup")
    return BenchmarkData(cfg, real, test, pool, val, test_ids, shift_test, shift_pool)


def _shift_sizes(cfg: DownstreamConfig, data: BenchmarkData) -> tuple[int, int]:
    """Real cases of the shift arms (the largest n_real that the cases outside the subgroup allow) and synthetic ones."""
    n = min(max(cfg.n_real), len(data.shift_pool))
    return n, max(1, n // 2)


def weights_info(cfg: DownstreamConfig) -> dict[str, dict]:
    """The JSON of each stage of the weights the synthetic cases are sampled from (none for a given source)."""
    from ...sampling.cascade import DEMO_WEIGHTS

    if cfg.synthetic is not None:
        return {}
    folder = Path(cfg.weights) if cfg.weights else DEMO_WEIGHTS
    folder = folder.parent if folder.is_file() else folder
    return {stage: json.loads((folder / f"{stage}.json").read_text())
            for stage in ("global", "sr") if (folder / f"{stage}.json").is_file()}


def check_generator_overlap(cfg: DownstreamConfig, data: BenchmarkData) -> None:
    """Refuse test cases that the generator was trained on, where its weights JSON records its training cases
    (compared by :func:`case_identity`: a phantom by its seed, so cohorts whose ids repeat are told apart)."""
    test = {c: case_identity(data.test, c) for c in data.test_ids}
    for stage, raw in weights_info(cfg).items():
        cases = generator_training_cases(raw)
        if cases:
            check_disjoint(test, cases, f"generator ({stage} stage) training")


def _synthetic_sources(cfg: DownstreamConfig, data: BenchmarkData) -> tuple[Cohort | None, Cohort | None, dict]:
    """The synthetic cohorts (like the real cohort; like its subgroup) and the generator's record."""
    wants_like = any(a in cfg.arms for a in ("real_synth_1to1", "real_synth_1to2", "synth_only"))
    wants_shift = "shift" in cfg.arms
    if not (wants_like or wants_shift):
        return None, None, {}
    n_like = max(cfg.n_real) * max([SYNTH_RATIO.get(a, 1) for a in cfg.arms if a in SYNTH_RATIO or a == "synth_only"]
                                   or [1])
    n_shift = _shift_sizes(cfg, data)[1] if wants_shift else 0
    member = parse_subgroup(cfg.shift_group)
    real_demos = {c: data.real.demographics[c] for c in data.pool if c in data.real.demographics}
    if cfg.synthetic is not None:
        source = open_cohort(cfg.synthetic, "synthetic")
        check_cohort(source, "synthetic", cfg.tasks)
        header = getattr(source, "manifest", {})
        record = {"source": f"cohort:{Path(cfg.synthetic).resolve()}",
                  "sha256": header.get("generator_sha256"), "settings": header.get("settings")}
        in_group = [c for c in source.case_ids if member(source.demographics.get(c))]
        if wants_shift and len(in_group) < n_shift:
            raise ValueError(f"`synthetic`: {len(in_group)} case(s) in `shift_group` {cfg.shift_group!r}, "
                             f"the shift arm needs {n_shift}")
        return source, source, record
    from ...sampling.cascade import CascadedSampler

    generator = CascadedSampler.from_pretrained(cfg.weights)
    generator.configure(steps=cfg.sampler_steps)
    info = weights_info(cfg)
    record = {"source": f"weights:{cfg.weights or 'shipped demo weights'}", "sha256": generator.sha256,
              "settings": dict(generator.settings),
              "weights_sha256": {s: v.get("sha256") for s, v in info.items()},
              "training_cohort": {s: list(generator_training_cases(v) or []) or None for s, v in info.items()},
              "training_population": {s: v.get("training_population") for s, v in info.items()}}
    root = Path(cfg.out) / "synthetic"
    like = make_synthetic_cache(root / "like_real", generator, real_demos, n_like, cfg.synth_seed,
                                cfg.progress) if wants_like else None
    group = {c: d for c, d in real_demos.items() if member(d)}
    shift = make_synthetic_cache(root / "shift", generator, group, n_shift, cfg.synth_seed + 1,
                                 cfg.progress) if wants_shift else None
    return like, shift, record


def _settings(cfg: DownstreamConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in _FREE_SETTINGS}


def _check_settings(out: Path, cfg: DownstreamConfig) -> None:
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(_settings(cfg)) if old.get(k) != _settings(cfg).get(k))
        if diff:
            raise ValueError(f"`out`: {out} holds a downstream run with other settings ({', '.join(diff)}); "
                             "use a new output folder or the same settings to resume")
    elif out.is_dir() and any(p.name not in _OWN_ENTRIES for p in out.iterdir()):
        raise FileExistsError(f"`out`: {out} is a non-empty folder that holds no downstream run; choose another")


def run_downstream(config: DownstreamConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) every arm x n_real x seed of ``config``; return and write ``results.json``.

    Everything is checked before any training: cohorts (cases, SUV, labels), disjoint test ids
    (also from the generator's training cohort where its weights JSON records it), arms, sizes.
    Finished runs (``<out>/runs/<arm>__n<N>__s<seed>.json``) are not redone.
    """
    import torch

    cfg = config
    out = Path(cfg.out)
    data = _load_data(cfg)
    unavailable = []
    sources: dict = {}

    def synthetic() -> tuple[Cohort | None, Cohort | None]:
        """The synthetic sources, opened (or sampled) when the first run needs them."""
        if not sources:
            like, shift, record = _synthetic_sources(cfg, data)
            sources.update(like=like, shift=shift, record=record)
        return sources["like"], sources["shift"]

    if any(a in cfg.arms for a in SYNTHETIC_ARMS + ("shift",)):
        check_generator_overlap(cfg, data)
    if cfg.synthetic is not None:
        synthetic()  # a given source is checked before anything is written; sampling waits for the first run needing it
    _check_settings(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SETTINGS_FILE, _settings(cfg))
    n_shift, k_shift = _shift_sizes(cfg, data)

    phantom = None
    if "real_phantom" in cfg.arms:
        first = data.real.load(data.pool[0])
        grid = Grid(first.ct.shape, first.spacing)
        like = {c: data.real.demographics[c] for c in data.pool}
        phantom = make_phantom_cohort(out / "phantom", like, max(cfg.n_real), grid, cfg.synth_seed + 2, cfg.progress)
    runs = plan_runs(cfg, n_shift)
    (out / "runs").mkdir(exist_ok=True)
    remove_stale_temporaries(out / "runs")
    todo = [r for r in runs if not (out / "runs" / f"{r.key}.json").is_file()]
    log(f"downstream: {len(runs)} runs, {len(runs) - len(todo)} already finished -> {out}")
    bar = progress_bar(total=len(runs), initial=len(runs) - len(todo), desc="downstream", unit="run",
                       disable=not cfg.progress)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        for run in todo:
            start = time.time()
            synth_like, synth_shift = synthetic() if run.arm in SYNTHETIC_ARMS else (None, None)
            record = _one_run(run, cfg, data, phantom, synth_like, synth_shift, k_shift)
            record["seconds"] = round(time.time() - start, 1)
            if record["status"] == "done":
                atomic_write_json(out / "runs" / f"{run.key}.json", record)
            else:  # not written: a later re-run tries again (e.g. once RandLesionInsertd exists)
                unavailable.append(record)
            bar.update(1)
            log(_run_line(run, record))
            _write_results(out, cfg, data, sources.get("record") or _cache_record(out), runs, unavailable)
    finally:
        bar.close()
        torch.set_num_threads(threads)  # the caller's setting again (a library call leaves no global change)
    if any(r.arm in SYNTHETIC_ARMS for r in runs):
        synthetic()
    return _write_results(out, cfg, data, sources.get("record", {}), runs, unavailable)


def _run_line(run: Run, record: Mapping) -> str:
    """One log line per finished run (a log without a terminal gets these instead of a bar)."""
    if record["status"] != "done":
        return f"{run.key}: {record['status']}"
    agg = record["test"]["aggregate"]
    return (f"{run.key}: done, lesion Dice {agg.get('lesion_dice', math.nan):.3f}, "
            f"organ Dice {agg.get('organ_dice_mean', math.nan):.3f} ({record['seconds']:.0f} s)")


def _write_results(out: Path, cfg: DownstreamConfig, data: BenchmarkData, generator: Mapping, runs: Sequence[Run],
                   unavailable: Sequence[Mapping] = ()) -> dict:
    """``results.json``, ``report.md`` and the plot from the finished runs (after every run: interim results)."""
    results = collect_results(out, cfg, data, generator, runs, unavailable)
    atomic_write_json(out / RESULTS_FILE, results)
    write_report(out)
    return results


def _cache_record(out: Path) -> dict:
    """The generator's record as the caches sampled into ``<out>/synthetic/`` state it (before they are reopened)."""
    for name in ("like_real", "shift"):
        path = out / "synthetic" / name / "manifest.json"
        if path.is_file():
            header = json.loads(path.read_text())
            return {"source": "weights (cache in <out>/synthetic)", "sha256": header.get("generator_sha256"),
                    "settings": header.get("settings")}
    return {}


def refresh_results(config: DownstreamConfig) -> dict:
    """Rewrite ``results.json`` and the report from the runs finished so far, without training (``--report-only``
    with the run's arguments); the benchmark itself may still be running."""
    data = _load_data(config)
    out = Path(config.out)
    _check_settings(out, config)
    runs = plan_runs(config, _shift_sizes(config, data)[0])
    return _write_results(out, config, data, _cache_record(out), runs)


def _one_run(run: Run, cfg: DownstreamConfig, data: BenchmarkData, phantom: Cohort | None, synth_like: Cohort | None,
             synth_shift: Cohort | None, k_shift: int) -> dict:
    """Train and score one run; the record that goes to ``runs/<key>.json``."""
    record = {"arm": run.arm, "n_real": run.n_real, "seed": run.seed, "iterations": cfg.iterations,
              "batch_size": cfg.batch_size}
    if run.arm == "real_lesion_insertion":
        insertion, why_not = lesion_insertion_transform(run.seed, cfg.spacing_mm)
        if insertion is not None and not has_organ_labels(data.real):
            insertion, why_not = None, "the real cohort has no organ labels (ORGANS.nii.gz) to place lesions on"
        if insertion is None:
            return {**record, "status": "not available", "reason": why_not}
    shift = run.arm.startswith("shift_")
    pool = data.shift_pool if shift else data.pool
    real_ids = [] if run.arm == "synth_only" else real_subset(pool, run.n_real, run.seed)
    items = [data.item("real", data.real, c) for c in real_ids]
    extra: dict[str, list[str]] = {}
    targets = [data.real.demographics.get(c) for c in real_ids]
    if run.arm == "real_phantom":
        extra["phantom"] = match_cases(targets, phantom.demographics, 1)
        items += [data.item("phantom", phantom, c) for c in extra["phantom"]]
    elif run.arm in SYNTH_RATIO:
        extra["synthetic"] = match_cases(targets, synth_like.demographics, SYNTH_RATIO[run.arm])
    elif run.arm == "synth_only":
        ids = list(synth_like.case_ids)
        order = np.random.default_rng(np.random.SeedSequence([run.seed, 0x5E7])).permutation(len(ids))
        extra["synthetic"] = sorted(ids[i] for i in order[: max(cfg.n_real)])
    elif run.arm == "shift_synth":
        member = parse_subgroup(cfg.shift_group)
        group = {c: d for c, d in synth_shift.demographics.items() if member(d)}
        real_group = [data.real.demographics[c] for c in data.pool if member(data.real.demographics.get(c))]
        order = np.random.default_rng(np.random.SeedSequence([run.seed, 0x5F1])).permutation(len(real_group))
        targets = [real_group[order[i % len(order)]] for i in range(k_shift)]
        extra["synthetic"] = match_cases(targets, group, 1)
    if "synthetic" in extra:
        source = synth_shift if run.arm == "shift_synth" else synth_like
        items += [data.item(f"synthetic:{source.root}", source, c) for c in extra["synthetic"]]

    hook = None
    if run.arm == "real_copypaste":
        from ...data.copypaste import LesionBank, random_paste

        bank = LesionBank({c: {"ct": it["image"][0], "pet": it["image"][1], "lesions": it["lesions"]}
                           for c, it in zip(real_ids, items)})
        donor_of = {id(it): c for c, it in zip(real_ids, items)}

        def hook(patch: dict, item: Mapping, rng: np.random.Generator) -> dict:
            flat = {"ct": patch["image"][0], "pet": patch["image"][1], "lesions": patch["lesions"],
                    "organs": patch["organs"]}
            pasted = random_paste(flat, bank, rng, prob=cfg.copypaste_prob, exclude=(donor_of.get(id(item)),))
            return {"image": np.stack([pasted["ct"], pasted["pet"]]), "lesions": pasted["lesions"],
                    "organs": pasted["organs"]}

    if run.arm == "real_lesion_insertion":
        hook = insertion
    model, losses = train_model(items, cfg, run.seed, patch_hook=hook)
    test_ids = data.shift_test if shift else data.test_ids
    test = score(model, {c: data.item("test", data.test, c) for c in test_ids}, cfg)
    val = score(model, {c: data.item("real", data.real, c) for c in data.val}, cfg) if data.val else None
    return {**record, "status": "done", "train_real": real_ids, "train_extra": extra,
            "n_train": len(items), "test_ids": list(test_ids), "test": test,
            "val": None if val is None else val["aggregate"],
            "loss_first": float(np.mean(losses[: max(1, len(losses) // 10)])),
            "loss_last": float(np.mean(losses[-max(1, len(losses) // 10):]))}


def collect_results(out: Path, cfg: DownstreamConfig, data: BenchmarkData, generator: Mapping, runs: Sequence[Run],
                    unavailable: Sequence[Mapping] = ()) -> dict:
    """``results.json``: the arguments, cohort ids, the generator, every run and the summary."""
    from ... import __version__

    records = []
    for run in runs:
        path = out / "runs" / f"{run.key}.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
    iterations = sorted({r["iterations"] for r in records})
    n_done = len(records)
    records += list(unavailable)
    return {
        "synthaug_version": __version__,
        "arguments": cfg.to_dict(),
        "cohorts": {"real": str(Path(cfg.real).resolve()), "test": str(Path(cfg.test or cfg.real).resolve()),
                    "train_pool_ids": data.pool, "val_ids": data.val, "test_ids": data.test_ids,
                    "shift_test_ids": data.shift_test, "shift_pool_ids": data.shift_pool,
                    "test_disjoint_from_training": True},
        "generator": dict(generator),
        "working_grid": {"spacing_mm": cfg.spacing_mm, "crop": "body bounding box (CT > -500 HU) + 2 voxels"},
        "iterations": iterations,
        "runs": records,
        "summary": summarise(records),
        "complete": n_done == len(runs) - len(unavailable),
    }
