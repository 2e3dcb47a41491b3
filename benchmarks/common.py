"""What every benchmark shares: the run context, the machine description, result files,
weights discovery, a network timer and memory readings."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
QUICK_RESULTS_DIR = RESULTS_DIR / "quick"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
#: Where the lead trains the demo weights (read only) and where the shipped copy lives.
RUN_WEIGHTS = REPO / "runs" / "demo"
SHIPPED_WEIGHTS = REPO / "synthaug" / "weights"

if str(REPO) not in sys.path:  # `python benchmarks/<module>.py` as well as `python -m benchmarks`
    sys.path.insert(0, str(REPO))


@dataclass
class Context:
    """Settings shared by all benchmarks of one run."""

    quick: bool = False
    weights: list[Path] = field(default_factory=list)   # weights folders (the first one is "the" weights)
    out_dir: Path = RESULTS_DIR                          # where <name>.json goes
    threads: int | None = None                          # torch threads (None: torch's default)
    command: str = ""                                   # the command line that started the run

    @property
    def main_weights(self) -> Path | None:
        """The weights folder the cascade benchmarks use (``None``: no trained weights)."""
        return self.weights[0] if self.weights else None


def now() -> str:
    """The current time, ISO 8601 with the time zone."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (the CPUs are shared with training)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    """CPU model, cores, memory, library versions and the GPU (if any) of this machine."""
    import numpy
    import torch

    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency
        monai_version = None
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
               "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "memory_gib": _mem_total_gib(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "monai": monai_version,
        "numpy": numpy.__version__, "python": platform.python_version(), "platform": platform.platform(), "gpu": gpu,
    }


def write_result(ctx: Context, name: str, results: dict, *, started: str, load_start: list[float],
                 seconds: float) -> Path:
    """Write ``<out_dir>/<name>.json``: the results wrapped with command, machine, load, timestamps and the
    weights of the run (:func:`weights_record`: every results file says which weights it measured)."""
    from synthaug.core.io import atomic_write_json

    payload = {
        "benchmark": name, "command": ctx.command, "quick": ctx.quick, "started": started, "finished": now(),
        "seconds": round(seconds, 1), "machine": machine(), "threads": ctx.threads,
        "weights": weights_record(ctx.main_weights),
        "load_average": {"start": load_start, "end": load_average()},
        "results": results,
    }
    path = Path(ctx.out_dir) / f"{name}.json"
    atomic_write_json(path, payload)
    return path


def read_result(name: str, out_dir: Path = RESULTS_DIR) -> dict | None:
    """The stored result of a benchmark, or ``None`` when it has not been run."""
    path = Path(out_dir) / f"{name}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if "results" not in data:  # written by a script on its own (bench_io.py), without the envelope
        m = data.get("machine") or {}
        stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")
        data = {"benchmark": name, "command": f"python benchmarks/bench_{name}.py (run on its own)", "quick": False,
                "started": None, "finished": stamp, "seconds": None, "load_average": {},
                "machine": {"cpu": m.get("cpu", "unrecorded"), "cores": m.get("cpus"), "torch": m.get("torch"),
                            "gpu": m.get("gpu")},
                "results": data}
    return data


# --- weights ---------------------------------------------------------------------------------


def has_stage(folder: Path | None, stage: str) -> bool:
    """Whether ``folder`` holds ``<stage>.json`` and ``<stage>.safetensors``."""
    return folder is not None and (folder / f"{stage}.json").is_file() and (folder / f"{stage}.safetensors").is_file()


def default_weights() -> list[Path]:
    """The shipped demo weights when present, else the lead's training run, else none."""
    return [p for p in (SHIPPED_WEIGHTS, RUN_WEIGHTS) if has_stage(p, "global")][:1]


#: Snapshot folder -> the weights folder it was copied from (see :func:`snapshot_weights`).
_ORIGIN: dict[Path, Path] = {}


def snapshot_weights(folder: Path, into: Path, attempts: int = 5) -> Path:
    """Copy the stages of ``folder`` into ``into`` so that every benchmark of a run sees the
    same weights while training keeps replacing them; the copy's sha256 is checked against
    its JSON (a checkpoint replaced mid-copy is copied again)."""
    import hashlib
    import shutil

    into.mkdir(parents=True, exist_ok=True)
    for stage in ("global", "sr"):
        if not has_stage(folder, stage):
            continue
        for _ in range(attempts):
            shutil.copyfile(folder / f"{stage}.json", into / f"{stage}.json")
            shutil.copyfile(folder / f"{stage}.safetensors", into / f"{stage}.safetensors")
            want = json.loads((into / f"{stage}.json").read_text()).get("sha256")
            if hashlib.sha256((into / f"{stage}.safetensors").read_bytes()).hexdigest() == want:
                break
            time.sleep(2)
        else:
            raise OSError(f"{folder}: {stage} weights kept changing while being copied; try again")
        mtime = (folder / f"{stage}.safetensors").stat().st_mtime
        os.utime(into / f"{stage}.safetensors", (mtime, mtime))
    _ORIGIN[into.resolve()] = folder.resolve()
    return into


def weights_info(folder: Path | None) -> dict | None:
    """Path, checksum, objective, default sampler and training step of each stage in ``folder``."""
    if folder is None:
        return None
    origin = _ORIGIN.get(Path(folder).resolve())
    info: dict = {"path": str(origin or folder)}
    if origin is not None:
        info["copied_at_start_of_run"] = True
    for stage in ("global", "sr"):
        if not has_stage(folder, stage):
            info[stage] = None
            continue
        raw = json.loads((folder / f"{stage}.json").read_text())
        d = raw.get("diffusion", {})
        info[stage] = {"sha256": raw.get("sha256"), "objective": d.get("objective"), "sampler": d.get("sampler"),
                       "steps": d.get("steps"), "step": (raw.get("info") or {}).get("step"),
                       "modified": _dt.datetime.fromtimestamp((folder / f"{stage}.safetensors").stat().st_mtime)
                       .astimezone().isoformat(timespec="seconds")}
    return info


def weights_record(folder: Path | None) -> dict | None:
    """:func:`weights_info` plus ``generator_sha256``: the digest of the weights and their calibration
    (:func:`synthaug.sampling.cascade.generator_digest`, what cases record as ``model_sha256``)."""
    info = weights_info(folder)
    if info is None or info.get("global") is None:
        return info
    from synthaug.core.checkpoint import read_config
    from synthaug.model.stages import StageConfig
    from synthaug.sampling.cascade import generator_digest

    raws = [read_config(folder / stage) for stage in ("global", "sr") if has_stage(folder, stage)]
    return {**info, "generator_sha256": generator_digest([(r["sha256"], StageConfig.from_dict(r)) for r in raws])}


def stage_objective(folder: Path, stage: str = "global") -> str | None:
    """The objective (``edm``/``flow``) of a stage's weights, ``None`` if absent."""
    if not has_stage(folder, stage):
        return None
    return json.loads((folder / f"{stage}.json").read_text()).get("diffusion", {}).get("objective")


# --- inputs --------------------------------------------------------------------------------


def phantom_lowres(stage, demo, seed: int):
    """The phantom of ``demo`` as ``stage`` (a ``StageConfig``) sees it in training (resampled
    by ``stage.resampling``): encoded on the global grid, shape (1, C, gx, gy, gz) float64, and
    the phantom on the output grid (the truth)."""
    import torch

    from synthaug.model.channels import encode
    from synthaug.model.preprocess import to_grid
    from synthaug.phantom.body import make_phantom

    # the shipped global stage's training phantom: version 3 with its PET as the activity (model card, "Training
    # data"); the SR stage trained on version 2, whose tissues version 3 keeps on a larger body, as the cascade feeds it
    raw = make_phantom(demo, grid=stage.output_grid, seed=seed, version=3, scanner="off")
    lo = to_grid(raw, stage.global_grid, **stage.resampling(stage.global_grid))
    lowres = torch.from_numpy(encode(lo.ct, lo.pet, lo.organs, lo.lesions))[None].double()
    return lowres, to_grid(raw, stage.output_grid, **stage.resampling(stage.output_grid))


def heldout_global_cases(stage, n: int, seed: int = 77):
    """``n`` phantom cases that no cohort contains (demographics ``sample_population(n, seed)``,
    case ``i`` with seed ``seed + i``), encoded on the global grid as ``stage`` was trained:
    ``(demographics, tensor (n, C, gx, gy, gz) float64)``."""
    import torch

    from synthaug.core.demographics import sample_population

    demos = sample_population(n, seed=seed)
    cases = torch.cat([phantom_lowres(stage, d, seed + i)[0] for i, d in enumerate(demos)])
    return demos, cases


# --- measuring -------------------------------------------------------------------------------


class NetTimer:
    """Accumulates the wall time spent inside ``module.forward`` (forward pre-hook + hook).

    Use as a context manager; ``seconds`` and ``calls`` hold the totals afterwards.
    """

    def __init__(self, module) -> None:
        self.module = module
        self.seconds = 0.0
        self.calls = 0
        self._t0: float | None = None
        self._handles: list = []

    def _pre(self, *_):
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1

    def __enter__(self) -> NetTimer:
        self._handles = [self.module.register_forward_pre_hook(self._pre), self.module.register_forward_hook(self._post)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _proc_status_mib(key: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in MiB, ``None`` if unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process (MiB): VmHWM, else ``ru_maxrss``."""
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    rss = _proc_status_mib("VmRSS")
    return rss if rss is not None else float("nan")


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads when asked (``None`` keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
