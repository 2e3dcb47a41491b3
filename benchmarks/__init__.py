"""synthaug benchmarks: sampler steps vs fidelity, denoising error by noise level, organ volumes in global samples, speed, training speed, memory, seams, SR refinement,
throughput, GPU sizing.

Run them with ``python -m benchmarks [--quick] [--only NAME ...] [--weights DIR]`` (or
``make bench``). Each benchmark is one module with ``NAME``, ``TITLE`` and
``run(ctx) -> dict``; the entry point (:mod:`benchmarks.__main__`) wraps every result
with the command, the machine description, the load average and timestamps, writes it
to ``benchmarks/results/<name>.json`` and regenerates ``benchmarks/RESULTS.md`` from the
JSON files (:mod:`benchmarks.report`).
"""

#: Benchmark name -> module (run in this order by default).
BENCHMARKS: dict[str, str] = {
    "sampler_fidelity": "benchmarks.sampler_fidelity",
    "denoiser": "benchmarks.denoiser",
    "global_samples": "benchmarks.global_samples",
    "speed": "benchmarks.speed",
    "train_speed": "benchmarks.train_speed",
    "memory": "benchmarks.memory",
    "seams": "benchmarks.seams",
    "refinement": "benchmarks.refinement",
    "throughput": "benchmarks.throughput",
    "gpu_autopet": "benchmarks.gpu_autopet",
}
