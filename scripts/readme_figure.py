"""The README's picture: a case from the shipped cascade beside a phantom case (the default version, the
scanner model on) for the same person, drawn by the package's own preview.

    python scripts/readme_figure.py   # writes docs/img/readme_cases.png
"""

from __future__ import annotations

from pathlib import Path

from synthaug import CascadedSampler, Demographics, make_phantom
from synthaug.evaluation.preview import preview_png
from synthaug.phantom.body import DEFAULT_PHANTOM_VERSION

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "readme_cases.png"

if __name__ == "__main__":
    person = Demographics(age=60, sex="M", height_cm=178, weight_kg=82, diagnosis="LYMPHOMA")
    sampler = CascadedSampler.from_pretrained()
    case = sampler.sample(person, seed=0)[0]
    phantom = make_phantom(person, grid=sampler.output_grid, seed=0)
    preview_png([case, phantom], OUT, titles=[f"cascade, demo weights {sampler.sha256[:8]} (seed 0)",
                                              f"phantom v{DEFAULT_PHANTOM_VERSION} + scanner (seed 0)"])
    print(f"wrote {OUT}")
