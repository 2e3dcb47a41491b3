"""Training: the objective can be fitted, runs resume exactly after a kill, torchrun DDP
works, bad input fails early, the conditioning is learned; and the preprocessing that
feeds training keeps world positions, integer labels and organ volumes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_GLOBAL_GRID, body_extent_voxels, body_length_mm, write_tiny_cohort, write_train_config

from synthaug import cli
from synthaug.core.case import Case
from synthaug.core.checkpoint import load_checkpoint
from synthaug.core.grid import Grid
from synthaug.model.diffusion import DiffusionConfig, append_dims, make_precond
from synthaug.model.nets import NetConfig, build_net
from synthaug.model.preprocess import TOP_MARGIN_MM, to_grid
from synthaug.model.stages import load_stage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    write_tiny_cohort(root, heights=(150.0, 190.0))
    return root


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """Tiny stage overrides + fast training settings, as a ``--config`` file."""
    return write_train_config(tmp_path_factory.mktemp("config") / "tiny.json", batch_size=1, lr_warmup=2,
                              checkpoint_every=2)


def _train(cohort: Path, out: Path, config: Path, *extra: str, stage: str = "global") -> int:
    return cli.main(["train", "--stage", stage, "--data", str(cohort), "--out", str(out), "--config", str(config),
                     "--no-progress", *extra])


# --- the objective can be fitted -----------------------------------------------------------------


@pytest.mark.parametrize("objective", ["edm", "x0"])
def test_tiny_network_overfits_a_fixed_batch(objective):
    """The objective's loss at fixed noise levels and fixed noise on one fixed batch: must fall > 5x."""
    torch.manual_seed(0)
    net = build_net(NetConfig(in_channels=2, out_channels=2, cond_dim=4, channels=(8, 16),
                              attention_levels=(False, False), norm_num_groups=8, num_head_channels=8))
    model = make_precond(net, DiffusionConfig(objective=objective))
    g = torch.Generator().manual_seed(0)
    r = torch.linspace(-1, 1, 8)
    x, y, z = torch.meshgrid(r, r, r, indexing="ij")
    x0 = 0.5 * torch.stack([torch.stack([torch.sin(3 * x + y), torch.where(x**2 + y**2 + z**2 < 0.5, 1.0, -1.0)]),
                            torch.stack([torch.cos(2 * z) * y, torch.where(z > 0, 1.0, -1.0)])])
    sigma = torch.tensor([0.3, 1.5])
    noisy = x0 + append_dims(sigma, 5) * torch.randn(x0.shape, generator=g)
    cond = torch.randn(2, 4, generator=g)
    weight = append_dims(model.loss_weight(sigma), 5)

    def loss() -> torch.Tensor:
        return (weight * (model(noisy, sigma, cond) - x0).pow(2)).mean()

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(loss().detach())
    for _ in range(80):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    last = float(loss().detach())
    assert last < first / 5, (first, last)


# --- resume, DDP, bad input -----------------------------------------------------------------------


def _subprocess_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the same arithmetic as this process
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_resume_after_kill_gives_identical_weights(cohort, config_file, tmp_path):
    steps = 8
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _train(cohort, straight, config_file, "--steps", str(steps)) == 0
    # A run that would go on for long is killed (SIGKILL: no clean-up) after its first checkpoint.
    proc = subprocess.Popen([sys.executable, "-m", "synthaug.cli", "train", "--stage", "global", "--data", str(cohort),
                             "--out", str(killed), "--config", str(config_file), "--steps", "1000", "--no-progress"],
                            env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = killed / "state_global" / "latest.json"
    deadline = time.time() + 120
    try:
        while not latest.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert latest.is_file(), err.decode()[-2000:]
    reached = json.loads(latest.read_text())["step"]
    assert 0 < reached < steps
    # Continue the killed run to the same total step count.
    assert _train(cohort, killed, config_file, "--steps", str(steps), "--resume") == 0
    for name in ("global", f"state_global/state_{steps:08d}"):
        a, _ = load_checkpoint(straight / name)
        b, _ = load_checkpoint(killed / name)
        assert a.keys() == b.keys() and len(a) > 10
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
    assert any(k.startswith("opt.") for k in a)  # the optimizer state was compared too
    log = [json.loads(line)["step"] for line in (killed / "log_global.jsonl").read_text().splitlines()]
    assert log[-1] == steps


def test_the_exported_weights_never_lag_the_step_a_run_records(cohort, config_file, tmp_path, monkeypatch):
    """A run stopped between writing its weights and its ``latest.json`` must not record a step
    its exported weights have not reached (a recipe would then ship older weights as finished)."""
    import synthaug.model.train as train_module

    out = tmp_path / "run"
    real = train_module.save_stage

    def stop_at_step_4(path, *args, extra=None, **kwargs):
        if extra and extra.get("step") == 4:
            raise OSError("stopped while the step-4 weights were being written")
        return real(path, *args, extra=extra, **kwargs)

    monkeypatch.setattr(train_module, "save_stage", stop_at_step_4)
    assert _train(cohort, out, config_file, "--steps", "6") != 0
    recorded = json.loads((out / "state_global" / "latest.json").read_text())["step"]
    exported = json.loads((out / "global.json").read_text())["info"]["step"]
    assert recorded == 2 and exported >= recorded


def test_train_into_an_existing_run_needs_resume(cohort, config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(cohort, out, config_file, "--steps", "1") == 0
    before = (out / "global.safetensors").read_bytes()
    capsys.readouterr()
    assert _train(cohort, out, config_file, "--steps", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("synthaug: error:") and "--resume" in err[0], err
    assert (out / "global.safetensors").read_bytes() == before


def test_resume_refuses_a_different_stage_setting(cohort, config_file, tmp_path, capsys):
    """--objective and --config stage settings cannot change on resume; they were once ignored."""
    out = tmp_path / "run"
    assert _train(cohort, out, config_file, "--steps", "1") == 0
    before = (out / "global.safetensors").read_bytes()
    other_noise = write_train_config(tmp_path / "noise.json", {"diffusion": {"p_mean": -1.0}})
    for config, args, match in ((config_file, ["--objective", "edm"], "diffusion.objective='x0'"),
                                (other_noise, [], "diffusion.p_mean=0.4")):
        capsys.readouterr()
        assert _train(cohort, out, config, *args, "--steps", "2", "--resume") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0] and "--init-from" in err[0], err
    assert (out / "global.safetensors").read_bytes() == before
    # The same settings (explicit or left out) resume as before.
    assert _train(cohort, out, config_file, "--objective", "x0", "--steps", "2", "--resume") == 0


def test_resume_refuses_settings_of_fields_the_run_file_predates(cohort, config_file, tmp_path, capsys):
    """A run file written before a field existed has that field's old default (lesion_rule
    'majority', upsample 'trilinear'): another value on resume is refused, not ignored."""
    out = tmp_path / "run"
    assert _train(cohort, out, config_file, "--steps", "1") == 0
    run = json.loads((out / "run_global.json").read_text())
    for key in ("lesion_rule", "upsample", "format_version"):  # a format-1 run file
        del run["stage"][key]
    (out / "run_global.json").write_text(json.dumps(run))
    for override, match in (({"lesion_rule": "every"}, "lesion_rule='majority'"),
                            ({"upsample": "label"}, "upsample='trilinear'")):
        config = write_train_config(tmp_path / "new_field.json", override)
        capsys.readouterr()
        assert _train(cohort, out, config, "--steps", "2", "--resume") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


@pytest.mark.parametrize(("args", "match"), [
    (["--steps", "0"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--balance", "-1"], "--balance=-1"),
])
def test_train_rejects_bad_settings_before_work(cohort, config_file, tmp_path, capsys, args, match):
    out = tmp_path / "run"
    assert _train(cohort, out, config_file, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not out.exists()


def test_a_config_file_with_an_unknown_training_field_is_refused_before_work(cohort, tmp_path, capsys):
    config = write_train_config(tmp_path / "typo.json", balanse=3)
    out = tmp_path / "run"
    assert _train(cohort, out, config, "--steps", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown training field(s) 'balanse'" in err[0], err
    assert not out.exists()


def test_a_balanced_run_records_its_balance_and_keeps_it_on_resume(cohort, config_file, tmp_path):
    out = tmp_path / "balanced"
    assert _train(cohort, out, config_file, "--steps", "1", "--balance", "2") == 0
    assert json.loads((out / "run_global.json").read_text())["train"]["balance"] == 2
    assert _train(cohort, out, config_file, "--steps", "2", "--resume") == 0
    assert json.loads((out / "run_global.json").read_text())["train"]["balance"] == 2
    assert len((out / "log_global.jsonl").read_text().splitlines()) >= 1


def test_compute_dtype_choices():
    from synthaug.model.train import compute_dtype

    assert compute_dtype("cpu", "fp32") is None
    assert compute_dtype("cpu", "bf16") is torch.bfloat16
    assert compute_dtype("cuda", "auto") is torch.bfloat16
    assert compute_dtype("cpu", "auto") is (torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None)
    with pytest.raises(ValueError, match="precision='fp16' must be one of auto, bf16, fp32"):
        compute_dtype("cpu", "fp16")


def test_bf16_training_is_mixed_precision_and_logged(cohort, config_file, tmp_path):
    """bf16 autocast must change the arithmetic (else the option does nothing) but keep fp32
    weights close to an fp32 run's, and each log line must say which precision ran."""
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert _train(cohort, out, config_file, "--steps", "2", "--precision", precision) == 0
        log = [json.loads(line) for line in (out / "log_global.jsonl").read_text().splitlines()]
        assert log and all(row["precision"] == precision and np.isfinite(row["loss"]) for row in log)
        runs[precision], _ = load_checkpoint(out / "state_global" / "state_00000002")
    a, b = runs["fp32"], runs["bf16"]
    assert all(v.dtype == torch.float32 for k, v in b.items() if k.startswith("model."))
    diffs = [float((a[k] - b[k]).abs().max()) for k in a if k.startswith("model.")]
    assert max(diffs) > 0
    # Two Adam steps move a weight by at most ~2 lr; bf16 may change the direction, not the size.
    from synthaug.model.train import TrainConfig

    lr = json.loads(config_file.read_text()).get("lr", TrainConfig().lr)
    assert max(diffs) < 4 * lr


def test_init_from_starts_a_new_run_from_other_weights(cohort, config_file, tmp_path):
    """A run started from another run's weights (trained with another objective) begins at
    those weights, says so in its run file, and a mismatched network or a missing folder
    is refused before anything is written."""
    source = tmp_path / "source"
    assert _train(cohort, source, config_file, "--steps", "2", "--objective", "edm") == 0
    src, _ = load_checkpoint(source / "global")
    out = tmp_path / "x0"
    assert _train(cohort, out, config_file, "--steps", "1", "--seed", "1", "--objective", "x0",
                  "--init-from", str(source)) == 0
    new, cfg = load_checkpoint(out / "state_global" / "state_00000001")
    run = json.loads((out / "run_global.json").read_text())
    assert run["stage"]["diffusion"]["objective"] == "x0"
    assert run["init_from"]["objective"] == "edm" and run["init_from"]["step"] == 2
    # One Adam step from the source weights (each moves by about lr): far closer than a fresh start.
    lr = json.loads(config_file.read_text()).get("lr", 2e-4)
    diffs = [float((new[f"model.{k}"] - v).abs().max()) for k, v in src.items()]
    assert max(diffs) < 4 * lr
    fresh = tmp_path / "fresh"  # the same seed without --init-from: its own random start
    assert _train(cohort, fresh, config_file, "--steps", "1", "--seed", "1", "--objective", "x0") == 0
    other, _ = load_checkpoint(fresh / "state_global" / "state_00000001")
    assert max(float((other[f"model.{k}"] - v).abs().max()) for k, v in src.items()) > 100 * lr


def test_exported_weights_name_their_training_cases_and_population(cohort, config_file, tmp_path):
    """The weights a run exports record the cohort it trained on (folder, case ids and their
    digest) and the demographics it spans, so the cascade warns outside them; the resumable state
    keeps the run's own settings."""
    out = tmp_path / "run"
    assert _train(cohort, out, config_file, "--steps", "2") == 0
    _, weights = load_checkpoint(out / "global")
    ids = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    data = weights["info"]["training_data"]
    assert data["path"] == str(cohort) and data["cases"] == len(ids) and sorted(data["case_ids"]) == ids
    assert data["case_ids_sha256"] == hashlib.sha256("\n".join(data["case_ids"]).encode()).hexdigest()
    assert data["case_identities"] == data["case_ids"]  # not phantoms: a case is its id (downstream's overlap check)
    population = weights["training_population"]
    assert population["height_cm"] == [150.0, 190.0] and str(cohort) in population["source"]
    _, state = load_checkpoint(out / "state_global" / "state_00000002")
    assert "training_population" not in state["stage"]
    assert _train(cohort, out, config_file, "--steps", "3", "--resume") == 0  # resumes against its own settings


@pytest.mark.parametrize("problem", ["network", "missing"])
def test_init_from_refuses_bad_weights_before_writing(cohort, config_file, tmp_path, capsys, problem):
    source = tmp_path / "source"
    if problem == "network":
        wide = write_train_config(tmp_path / "wide.json", {"net": {**json.loads(config_file.read_text())["stage"]["net"],
                                                                   "channels": [16, 16]}}, batch_size=1)
        assert _train(cohort, source, wide, "--steps", "1") == 0
    out = tmp_path / "run"
    capsys.readouterr()
    assert _train(cohort, out, config_file, "--steps", "1", "--init-from", str(source)) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(source) in err[0], err
    assert ("differs from this run's" in err[0]) if problem == "network" else True
    assert not out.exists()


def test_wrong_mixed_precision_gradients_fall_back_or_stop(cohort, config_file, tmp_path, capsys, monkeypatch):
    """Where bf16 gradients disagree with fp32 ones (some CPU kernels are wrong for small
    volumes), ``auto`` trains in fp32 with a warning and ``bf16`` stops before writing a run."""
    import synthaug.model.train as train_mod

    monkeypatch.setattr(train_mod, "compute_dtype", lambda device, precision="auto": None if precision == "fp32" else torch.bfloat16)
    monkeypatch.setattr(train_mod, "mixed_precision_error", lambda *a, **k: (float("inf"), "net.some.conv.weight"))
    out = tmp_path / "auto"
    with pytest.warns(RuntimeWarning, match="net.some.conv.weight.*training in fp32"):
        assert _train(cohort, out, config_file, "--steps", "1") == 0
    assert json.loads((out / "log_global.jsonl").read_text().splitlines()[-1])["precision"] == "fp32"
    out = tmp_path / "bf16"
    capsys.readouterr()
    assert _train(cohort, out, config_file, "--steps", "1", "--precision", "bf16") != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("synthaug")]
    assert len(err) == 1 and "--precision fp32" in err[0] and "net.some.conv.weight" in err[0], err
    assert not (out / "run_global.json").exists() and not (out / "state_global").exists()


def test_mixed_precision_check_accepts_a_sound_network(cohort):
    from helpers import tiny_stage_config

    from synthaug.model.train import MIXED_PRECISION_TOLERANCE, _step_generators, load_stage_data, mixed_precision_error

    cfg = tiny_stage_config("global")
    data = load_stage_data(cfg, cohort, cohort.parent / "cache-mp")
    torch.manual_seed(0)
    model = make_precond(build_net(cfg.net), cfg.diffusion)
    rng, gen = _step_generators(0, 0, 0)
    err, where = mixed_precision_error(model, data.batch(rng, gen, 2), torch.float32, torch.device("cpu"))
    assert err == 0.0  # "mixed" precision in fp32 is fp32: no difference at all
    err, where = mixed_precision_error(model, data.batch(rng, gen, 2), torch.bfloat16, torch.device("cpu"))
    assert 0 < err < MIXED_PRECISION_TOLERANCE or not torch.ops.mkldnn._is_mkldnn_bf16_supported(), (err, where)


def test_sr_stage_trains_with_network_overrides(cohort, config_file, tmp_path):
    """``--config`` with a 'net' object must merge over the SR stage's defaults (its
    conditioning channels), not the global stage's."""
    out = tmp_path / "run"
    assert _train(cohort, out, config_file, "--steps", "1", stage="sr") == 0
    model, config, _ = load_stage(out / "sr")
    assert config.stage == "sr" and config.net.cond_channels > 0 and config.net.channels == (8, 16)


def test_two_process_ddp_run(cohort, config_file, tmp_path):
    out = tmp_path / "ddp"
    env = {**_subprocess_env(), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "synthaug.cli", "train", "--stage", "global", "--data", str(cohort), "--out", str(out),
                          "--config", str(config_file), "--steps", "3", "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    model, config, raw = load_stage(out / "global")
    assert raw["info"]["world_size"] == 2 and raw["info"]["step"] == 3
    assert config.global_grid == TINY_GLOBAL_GRID
    assert json.loads(res.stdout[res.stdout.index("{"):])["step"] == 3  # one summary, from rank 0 only


# --- the conditioning is learned -------------------------------------------------------------------


@pytest.mark.slow
def test_taller_demographics_give_a_longer_body(tmp_path):
    """Train the global stage briefly (800 steps, ~2 CPU minutes) on a cohort where body length
    follows height, then sample short and tall people: the tall ones must come out longer."""
    from synthaug.core.demographics import Demographics
    from synthaug.sampling.cascade import CascadedSampler

    cohort = tmp_path / "cohort"
    write_tiny_cohort(cohort, heights=(140.0, 145.0, 200.0, 205.0))
    grid = Grid((4, 4, 16), (128.0, 128.0, 64.0))  # the same field of view as the tiny output grid
    config = write_train_config(tmp_path / "cfg.json", stage_overrides={"global_grid": grid.to_dict()},
                                batch_size=8, lr=2e-3, lr_warmup=20, ema_decay=0.99, checkpoint_every=10_000)
    assert _train(cohort, tmp_path / "run", config, "--steps", "800") == 0
    sampler = CascadedSampler.from_pretrained(tmp_path / "run", stages="global")
    extents = {}
    for height in (145.0, 200.0):
        cases = sampler.sample([Demographics(55, "M", height, 75, "NEGATIVE")] * 8, seed=0, batch_size=8)
        extents[height] = [body_extent_voxels(c.ct[1:3, 1:3]) for c in cases]  # the central columns
    short, tall = np.mean(extents[145.0]), np.mean(extents[200.0])
    expected = (body_length_mm(200.0) - body_length_mm(145.0)) / grid.spacing[2]  # 8.6 slices
    assert tall - short > 0.5 * expected, extents


# --- preprocessing keeps geometry, labels and volumes ------------------------------------------------


def _ball_case(affine: np.ndarray, shape, centre, radius: float, inner: float) -> Case:
    """A ball of soft tissue (label 2) around ``centre`` (world mm) with an inner ball of liver
    (label 7) and a small lesion, on a grid with any affine."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)
    dist = np.linalg.norm(world - np.asarray(centre), axis=-1)
    body, liver = dist < radius, dist < inner
    lesion = np.linalg.norm(world - (np.asarray(centre) + [0, 0, inner / 2]), axis=-1) < inner / 2
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    organs = np.where(liver, 7, np.where(body, 2, 0)).astype(np.uint8)
    pet = np.where(body, 1.0, 0.0).astype(np.float32)
    return Case(ct, pet, organs, lesion.astype(np.uint8), affine)


def _centroid_world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(0) @ affine[:3, :3].T + affine[:3, 3]


# Source: X axis flipped (L->R), anisotropic spacing, off-centre origin.
SRC_AFFINE = np.array([[-3.0, 0, 0, 100.0], [0, 2.0, 0, -40.0], [0, 0, 5.0, -60.0], [0, 0, 0, 1]])
SRC_SHAPE = (40, 30, 24)
CENTRE = (20.0, -10.0, 0.0)


def test_to_grid_keeps_world_positions():
    case = _ball_case(SRC_AFFINE, SRC_SHAPE, CENTRE, radius=25.0, inner=12.0)
    grid = Grid((32, 32, 32), (4.0, 4.0, 4.0))
    out = to_grid(case, grid, align=False)
    assert out.shape == grid.shape and np.allclose(out.affine, grid.affine)
    np.testing.assert_allclose(_centroid_world(out.ct > -500, out.affine), CENTRE, atol=1.0)
    np.testing.assert_allclose(_centroid_world(out.organs == 7, out.affine), CENTRE, atol=1.0)
    np.testing.assert_allclose(_centroid_world(out.pet > 0.5, out.affine), CENTRE, atol=1.0)
    assert out.meta["alignment_shift_mm"] == [0.0, 0.0, 0.0]


def test_to_grid_aligns_the_body_as_documented():
    """Body centred in X and Y, its top (highest body voxel centre) TOP_MARGIN_MM below the top of
    the field of view; the shift may be rounded to whole source voxels (at most half a voxel)."""
    case = _ball_case(SRC_AFFINE, SRC_SHAPE, CENTRE, radius=25.0, inner=12.0)
    grid = Grid((32, 32, 48), (4.0, 4.0, 4.0))
    out = to_grid(case, grid)
    shift = np.asarray(out.meta["alignment_shift_mm"])
    src_body = _centroid_world(case.ct > -500, case.affine)
    src_top = (np.argwhere(case.ct > -500) @ case.affine[:3, :3].T + case.affine[:3, 3])[:, 2].max()
    top_target = grid.fov_mm[2] / 2 - TOP_MARGIN_MM
    exact = np.array([-src_body[0], -src_body[1], top_target - src_top])
    half_voxel = np.abs(np.diag(SRC_AFFINE)[:3]) / 2
    assert np.all(np.abs(shift - exact) <= half_voxel + 1e-6), (shift, exact)
    # The resampled body moved by exactly that translation: centred in X/Y, its top at the target.
    centroid = _centroid_world(out.ct > -500, out.affine)
    np.testing.assert_allclose(centroid, np.asarray(CENTRE) + shift, atol=1.0)
    assert np.all(np.abs(centroid[:2]) <= half_voxel[:2] + 1.0), centroid
    top_voxel = np.argwhere(out.ct > -500)[:, 2].max()
    assert abs(out.affine[2, 2] * top_voxel + out.affine[2, 3] - top_target) <= grid.spacing[2] + half_voxel[2]


@pytest.mark.parametrize("flipped", [False, True])
def test_to_grid_labels_stay_integer_and_volumes_are_preserved(flipped):
    """2 mm source -> 8 mm target (block-aligned, or with a flipped X axis): organ volumes within
    10 %, labels only from the source's label set."""
    if flipped:
        affine = np.array([[-2.0, 0, 0, 63.0], [0, 2.0, 0, -63.0], [0, 0, 2.0, -63.0], [0, 0, 0, 1]])
    else:
        affine = np.array([[2.0, 0, 0, -79.0], [0, 2.0, 0, -79.0], [0, 0, 2.0, -79.0], [0, 0, 0, 1]])
    case = _ball_case(affine, (64, 64, 64), (-10.0, -12.0, -14.0), radius=40.0, inner=24.0)
    out = to_grid(case, Grid((20, 20, 20), (8.0, 8.0, 8.0)), align=False)
    assert out.organs.dtype == np.uint8 and out.lesions.dtype == np.uint8
    assert set(np.unique(out.organs)) == {0, 2, 7} and set(np.unique(out.lesions)) <= {0, 1}
    for label in (2, 7):
        before = (case.organs == label).sum() * case.voxel_volume_ml
        after = (out.organs == label).sum() * out.voxel_volume_ml
        assert abs(after / before - 1) < 0.1, (label, before, after)
    before, after = case.lesions.sum() * case.voxel_volume_ml, out.lesions.sum() * out.voxel_volume_ml
    assert abs(after / before - 1) < 0.25, (before, after)  # a ~7 ml lesion: ~14 voxels at 8 mm
    np.testing.assert_allclose(_centroid_world(out.organs == 7, out.affine), (-10.0, -12.0, -14.0), atol=1.0)


@pytest.mark.parametrize("affine", [np.array([[2.0, 0, 0, -48.0], [0, 2.0, 0, -48.0], [0, 0, 2.0, -48.0], [0, 0, 0, 1]]),
                                    np.array([[-2.0, 0, 0, 63.0], [0, 3.0, 0, -40.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1]])])
def test_every_lesion_reaches_a_coarse_grid_with_the_every_rule(affine):
    """Small lesions (one and eight source voxels) vanish at 16 mm by majority; "every" keeps
    each as one voxel where most of it lies, and leaves a lesion the majority keeps alone."""
    shape = (48, 48, 48)
    ct = np.full(shape, 40.0, np.float32)
    lesions = np.zeros(shape, np.uint8)
    lesions[10, 10, 10] = 1                # one 0.008 ml voxel: 0.2 % of a 16 mm voxel
    lesions[30:32, 36:38, 5:7] = 1         # 8 voxels
    lesions[20:36, 14:30, 14:30] = 1       # a big one: kept by majority
    case = Case(ct, np.ones(shape, np.float32), np.full(shape, 2, np.uint8), lesions, affine)
    grid = Grid((10, 10, 10), (16.0, 16.0, 16.0))
    majority = to_grid(case, grid, align=False).lesions
    every = to_grid(case, grid, align=False, lesion_rule="every").lesions
    world = lambda vox, aff: np.asarray(vox, float) @ aff[:3, :3].T + aff[:3, 3]  # noqa: E731
    to_target = lambda vox: tuple(np.rint(np.linalg.solve(grid.affine[:3, :3], world(vox, affine) - grid.affine[:3, 3])).astype(int))  # noqa: E731
    small = [to_target((10, 10, 10)), to_target((30.5, 36.5, 5.5))]
    assert not any(majority[v] for v in small)
    assert all(every[v] for v in small)
    assert majority.sum() > 0 and (every & ~majority).sum() == 2  # nothing else added
    assert np.array_equal(every & majority, majority)


def test_lesion_rule_is_recorded_and_checked():
    from synthaug.model.preprocess import _cache_key
    from synthaug.model.stages import StageConfig, default_stage_config

    cfg = default_stage_config("global")
    assert cfg.lesion_rule == "every"
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("lesion_rule", "format_version")}
    assert StageConfig.from_dict(old).lesion_rule == "majority"  # weights trained before the rule existed
    with pytest.raises(ValueError, match="lesion_rule='any'"):
        default_stage_config("sr", lesion_rule="any")
    case = _ball_case(SRC_AFFINE, SRC_SHAPE, CENTRE, radius=25.0, inner=12.0)
    with pytest.raises(ValueError, match="lesion_rule='max'"):
        to_grid(case, Grid((8, 8, 8), (16.0, 16.0, 16.0)), lesion_rule="max")

    class _Cohort:
        root, case_ids = Path("."), ["a"]

    grid = Grid((8, 8, 8), (16.0, 16.0, 16.0))
    assert _cache_key(_Cohort, grid) == _cache_key(_Cohort, grid, "majority") != _cache_key(_Cohort, grid, "every")
    assert _cache_key(_Cohort, grid) == _cache_key(_Cohort, grid, "majority", "argmax") != _cache_key(
        _Cohort, grid, "majority", "thin")


def test_thin_organ_rule_keeps_a_thin_aorta_whole_on_a_coarse_grid():
    """A 16 mm tube crossing 16 mm voxels off their centres falls apart by argmax; "thin"
    keeps it one piece, and changes nothing on a grid as fine as the source."""
    from synthaug.core.labels import ORGAN_IDS
    from synthaug.evaluation.metrics import main_part_pct

    shape = (64, 64, 128)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -63.0
    organs = np.full(shape, ORGAN_IDS["soft_tissue"], np.uint8)
    x, y, _ = np.meshgrid(*(np.arange(n) * 2.0 - 63.0 for n in shape), indexing="ij")
    z = np.arange(shape[2]) * 2.0 - 63.0
    centre_x = -4.0 + 14.0 * np.sin(z / 40.0)  # a wandering tube, radius 8 mm
    tube = (x - centre_x) ** 2 + (y - 4.0) ** 2 <= 8.0**2
    organs[tube] = ORGAN_IDS["aorta"]
    case = Case(np.full(shape, 40.0, np.float32), np.ones(shape, np.float32), organs, np.zeros(shape, np.uint8), affine)
    grid = Grid((8, 8, 16), (16.0, 16.0, 16.0))
    aorta = ORGAN_IDS["aorta"]
    argmax = to_grid(case, grid, align=False).organs == aorta
    thin = to_grid(case, grid, align=False, organ_rule="thin").organs == aorta
    assert main_part_pct(argmax) < 90.0 and main_part_pct(thin) == 100.0
    assert np.array_equal(thin & argmax, argmax) and thin.sum() < 3 * argmax.sum()
    same = Grid(shape, (2.0, 2.0, 2.0))
    np.testing.assert_array_equal(to_grid(case, same, align=False, organ_rule="thin").organs,
                                  to_grid(case, same, align=False).organs)
    with pytest.raises(ValueError, match="organ_rule='fat'"):
        to_grid(case, grid, organ_rule="fat")


def test_organ_rule_is_recorded_and_applies_to_the_global_grid_only():
    from synthaug.model.stages import StageConfig, default_stage_config

    cfg = default_stage_config("sr", organ_rule="thin")
    assert StageConfig.from_dict(cfg.to_dict()).organ_rule == "thin"
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("organ_rule", "format_version")}
    assert StageConfig.from_dict(old).organ_rule == "argmax"  # weights trained before the rule existed
    assert cfg.resampling(cfg.global_grid) == {"lesion_rule": "every", "organ_rule": "thin"}
    assert cfg.resampling(cfg.output_grid) == {"lesion_rule": "every", "organ_rule": "argmax"}
    with pytest.raises(ValueError, match="organ_rule='any'"):
        default_stage_config("global", organ_rule="any")


@pytest.mark.parametrize("objective", ["edm", "x0"])
def test_global_stage_trains_where_its_sampler_places_the_anatomy(objective):
    """The default global stage draws enough training noise levels across its sampler's
    schedule: its first quarter of steps (sigma above ~17) places the body's layout, and
    EDM's image setting (log-sigma mean -1.2, std 1.2) put 0.04 % of examples there."""
    from synthaug.model.diffusion import get_sigmas, training_share_above
    from synthaug.model.stages import default_stage_config

    d = default_stage_config("global", "demo", objective).diffusion
    steps = get_sigmas(d, d.steps)[:-1]
    assert training_share_above(d, float(steps[len(steps) // 4])) >= 0.05
    assert training_share_above(d, float(steps[len(steps) // 2])) >= 0.2
    assert training_share_above(d, float(steps[-1])) >= 0.95  # and the last steps stay trained


@pytest.mark.parametrize("objective", ["edm", "x0"])
def test_sr_stage_trains_at_its_few_step_samplers_start(objective):
    """One Euler step evaluates the SR network at sigma_max alone; the default SR stage
    draws a tenth of its training examples above it (EDM's image setting: 0.2 %)."""
    from synthaug.model.diffusion import training_share_above
    from synthaug.model.stages import default_stage_config

    d = default_stage_config("sr", "demo", objective).diffusion
    assert training_share_above(d, d.sigma_max) >= 0.1
    assert training_share_above(d, 0.05) >= 0.95  # multi-step sampling's last levels stay trained


def test_channel_weights_scale_each_channels_share_of_the_loss():
    from synthaug.model.diffusion import channel_mse

    err = torch.zeros(2, 3, 2, 2, 2)
    err[:, 1] = 1.0
    assert torch.allclose(channel_mse(err, None), torch.full((2,), 1 / 3))
    assert torch.allclose(channel_mse(err, (1.0, 6.0, 1.0)), torch.full((2,), 2.0))
    assert torch.allclose(channel_mse(err, (1.0, 0.0, 1.0)), torch.zeros(2))
    with pytest.raises(ValueError, match="2 entries for 3 channels"):
        channel_mse(err, (1.0, 1.0))


@pytest.mark.parametrize("weights", [(), (1.0, -1.0), (0.0, 0.0), (1.0, float("nan"))])
def test_bad_channel_weights_are_refused(weights):
    with pytest.raises(ValueError, match="channel_weights"):
        DiffusionConfig(channel_weights=weights)


def test_channel_weights_round_trip_and_must_match_the_network():
    from synthaug.model.stages import StageConfig, default_stage_config

    cfg = default_stage_config("sr", diffusion=DiffusionConfig(channel_weights=(8.0, 32.0) + (1.0,) * 13))
    assert StageConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert "channel_weights" not in default_stage_config("sr").diffusion.to_dict()  # older configs still match
    with pytest.raises(ValueError, match="channel_weights has 3 entries"):
        default_stage_config("sr", diffusion=DiffusionConfig(channel_weights=(1.0, 1.0, 1.0)))


class _ConstantNet(torch.nn.Module):
    """A raw network whose output is a fixed field, to check the preconditioning around it."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x, t, cond, concat=None):
        return self.value.expand_as(x)


def test_skip_channels_keep_the_input_at_low_noise_and_leave_the_others_alone():
    from synthaug.model.diffusion import X0Precond

    x = torch.randn(2, 3, 4, 4, 4)
    plain = X0Precond(_ConstantNet(-2.0), DiffusionConfig(objective="x0"))
    skip = X0Precond(_ConstantNet(-2.0), DiffusionConfig(objective="x0", skip_channels=(2,)))
    for sigma in (1e-3, 0.5, 80.0):
        a, b = plain(x, torch.tensor(sigma), None), skip(x, torch.tensor(sigma), None)
        assert torch.equal(a[:, :2], b[:, :2])  # x0 estimate = sigma_data * F there
        sd = 0.5
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2) ** 0.5
        assert torch.allclose(b[:, 2], c_skip * x[:, 2] - 2.0 * c_out, atol=1e-6)
    assert torch.allclose(skip(x, torch.tensor(1e-3), None)[:, 2], x[:, 2], atol=5e-3)  # carried through
    assert torch.allclose(skip(x, torch.tensor(80.0), None)[:, 2], plain(x, torch.tensor(80.0), None)[:, 2], atol=0.02)


@pytest.mark.parametrize("kw, match", [({"skip_channels": (1, 1), "objective": "x0"}, "distinct"),
                                       ({"skip_channels": (-1,), "objective": "x0"}, "distinct"),
                                       ({"skip_channels": (14,), "objective": "edm"}, "only applies to the x0")])
def test_bad_skip_channels_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        DiffusionConfig(**kw)


def test_skip_channels_round_trip_and_must_match_the_network():
    from synthaug.model.stages import StageConfig, default_stage_config

    cfg = default_stage_config("global", objective="x0",
                               diffusion=DiffusionConfig(objective="x0", skip_channels=(14,)))
    assert StageConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert "skip_channels" not in default_stage_config("global", objective="x0").diffusion.to_dict()
    with pytest.raises(ValueError, match="skip_channels=\\[15\\]"):
        default_stage_config("global", diffusion=DiffusionConfig(objective="x0", skip_channels=(15,)))


def test_positive_weights_scale_the_loss_where_the_clean_channel_is_positive():
    from synthaug.model.diffusion import channel_mse

    err = torch.ones(1, 2, 2, 2, 2)
    x0 = -torch.ones(1, 2, 2, 2, 2)
    x0[0, 1, 0, 0, 0] = 1.0  # one label voxel of 16
    assert torch.allclose(channel_mse(err, None, x0, (1.0, 1.0)), torch.ones(1))
    assert torch.allclose(channel_mse(err, None, x0, (5.0, 9.0)), torch.tensor([(16 + 8) / 16]))
    assert torch.allclose(channel_mse(err, (1.0, 2.0), x0, (1.0, 9.0)), torch.tensor([(8 + 2 * 7 + 2 * 9) / 16]))
    with pytest.raises(ValueError, match="need the clean sample"):
        channel_mse(err, None, None, (1.0, 1.0))
    with pytest.raises(ValueError, match="positive_weights has 1 entries"):
        channel_mse(err, None, x0, (1.0,))


def test_positive_weights_round_trip_and_are_refused_for_the_sr_stage():
    from synthaug.model.stages import StageConfig, default_stage_config

    weights = (1.0,) * 14 + (20.0,)
    cfg = default_stage_config("global", objective="x0", diffusion=DiffusionConfig(objective="x0", positive_weights=weights))
    assert StageConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert "positive_weights" not in default_stage_config("global").diffusion.to_dict()
    with pytest.raises(ValueError, match="positive_weights is for the global stage"):
        default_stage_config("sr", diffusion=DiffusionConfig(positive_weights=weights))
    with pytest.raises(ValueError, match="positive_weights=\\[-1.0\\]"):
        DiffusionConfig(positive_weights=(-1.0,))


def test_pvc_sr_batches_correct_each_case_from_its_clean_input(cohort):
    """With ``upsample="label_pvc"`` the SR batches use each drawn case's partial-volume
    correction of its clean low-res volume (computed once per case), not the plain
    label-guided upsampling; the label channels stay as they were."""
    from helpers import tiny_stage_config

    from synthaug.model.stages import pv_correction
    from synthaug.model.train import _step_generators, load_stage_data

    batches, datas = {}, {}
    for mode in ("label", "label_pvc"):
        datas[mode] = data = load_stage_data(tiny_stage_config("sr", upsample=mode), cohort, cohort.parent / "cache-pvc")
        rng, gen = _step_generators(0, 0, 0)
        batches[mode] = data.batch(rng, gen, 2)
    plain, pvc = batches["label"]["concat"], batches["label_pvc"]["concat"]
    torch.testing.assert_close(pvc[:, 2:], plain[:, 2:])
    assert (pvc[:, :2] - plain[:, :2]).abs().max() > 1e-3
    data = datas["label_pvc"]
    assert data._pvc and set(data._pvc) <= set(range(len(data)))
    for i, got in data._pvc.items():
        clean = torch.from_numpy(data._encode(data.g, i))[None]
        expected = pv_correction(clean, data.stage.output_grid.shape)
        torch.testing.assert_close(got.mixed, expected.mixed)
        torch.testing.assert_close(got.means, expected.means)
