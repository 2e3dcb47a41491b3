"""Turn a finished ``synthaug downstream`` run folder into the benchmark record and its RESULTS.md section.

    python scripts/downstream_report.py runs/downstream_baseline

writes ``benchmarks/results/downstream.json`` (the run's ``results.json`` plus the sha256 of the shipped
weights), ``benchmarks/results/downstream.png`` (Dice vs number of real cases per arm) and the section
between ``<!-- downstream:start -->`` and ``<!-- downstream:end -->`` of ``benchmarks/RESULTS.md``
(appended when the markers are missing). An unfinished run is refused unless ``--allow-incomplete``.

    python scripts/downstream_report.py --compare benchmarks/results/downstream_3456cb89.json benchmarks/results/downstream.json

prints, per synthetic arm (or each of ``--arms``) and number of real cases, the two records' means and their paired difference
(same arm, real cases and seed) with its 95 % interval: two generators on the same cohorts and seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import DOWNSTREAM_END as END  # noqa: E402
from benchmarks.report import DOWNSTREAM_START as START  # noqa: E402
from synthaug.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from synthaug.evaluation.downstream.config import SYNTHETIC_ARMS  # noqa: E402
from synthaug.evaluation.downstream.report import format_cell, interval95, plot_results, report_table  # noqa: E402


def shipped_weights_sha256() -> dict[str, str]:
    """``{file: sha256}`` of the shipped weights (their SHA256SUMS)."""
    sums = REPO / "synthaug" / "weights" / "SHA256SUMS"
    return {name: sha for sha, name in (line.split() for line in sums.read_text().splitlines() if line.strip())}


def headline(results: dict) -> list[str]:
    """What the numbers say, computed from them: each arm against real-only at the smallest real cohort, and shift."""
    rows = [r for r in results["summary"] if r.get("n_real") is not None]
    if not rows:
        return ["No finished runs."]
    smallest = min(r["n_real"] for r in rows if r["arm"] == "real_only") if any(
        r["arm"] == "real_only" for r in rows) else None
    lines = []
    for r in rows:
        if r["n_real"] == smallest and "lesion_dice_vs_real_only" in r:
            lines.append(f"- {r['arm']} at {smallest} real cases vs real_only: lesion Dice "
                         f"{format_cell(r['lesion_dice_vs_real_only'], 3, signed=True)}, organ Dice "
                         f"{format_cell(r['organ_dice_mean_vs_real_only'], 3, signed=True)} (paired over seeds, 95 % interval)")
    for r in rows:
        if r["arm"] == "shift_synth" and "lesion_dice_vs_shift_real_only" in r:
            lines.append(f"- shift ({results['arguments']['shift_group']} left out of training, tested on it): synthetic "
                         f"cases of the subgroup vs none: lesion Dice "
                         f"{format_cell(r['lesion_dice_vs_shift_real_only'], 3, signed=True)}, organ Dice "
                         f"{format_cell(r['organ_dice_mean_vs_shift_real_only'], 3, signed=True)}")
    return lines


def section(results: dict, plot: str) -> str:
    """The RESULTS.md section (between the markers)."""
    args = results["arguments"]
    gen = results.get("generator") or {}
    lines = [START, "## Downstream segmentation: does synthaug data help? (`synthaug downstream`)", "",
             f"Command: `{results.get('command', 'synthaug downstream')}`; "
             f"{'complete' if results.get('complete') else '**incomplete**'}, "
             f"{sum(1 for r in results['runs'] if r.get('status') == 'done')} runs, iterations {results['iterations']}.",
             f"Real: `{results['cohorts']['real']}` ({len(results['cohorts']['train_pool_ids'])} training-pool cases, "
             f"{len(results['cohorts']['val_ids'])} validation); test: `{results['cohorts']['test']}` "
             f"({len(results['cohorts']['test_ids'])} cases; {len(results['cohorts']['shift_test_ids'])} in "
             f"`{args['shift_group']}`). Generator sha256 `{gen.get('sha256')}`; shipped weights "
             + ", ".join(f"{k} `{v[:12]}…`" for k, v in (results.get("weights_sha256") or {}).items()) + ".",
             "", *headline(results), "", *report_table(results), "", f"![Dice vs number of real training cases]({plot})",
             END]
    return "\n".join(lines) + "\n"


def compare(old: dict, new: dict, metrics: Sequence[str] = ("lesion_dice", "organ_dice_mean"),
            arms: Sequence[str] = SYNTHETIC_ARMS) -> list[str]:
    """A markdown table of ``arms`` (default: the synthetic arms) of two downstream records: per arm and
    number of real cases, each metric's mean over seeds in ``old`` -> ``new`` and the paired difference
    (same seed) with its 95 % interval, over the runs both records finished."""
    def done(results: dict) -> dict:
        return {(r["arm"], r["n_real"], r["seed"]): r["test"]["aggregate"] for r in results["runs"]
                if r.get("status") == "done" and r["arm"] in arms}

    a, b = done(old), done(new)
    lines = ["| arm | real cases | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for arm, n in sorted({(k[0], k[1]) for k in a.keys() & b.keys()}, key=lambda k: (list(arms).index(k[0]), k[1])):
        keys = sorted(k for k in a.keys() & b.keys() if k[:2] == (arm, n))
        cells = []
        for m in metrics:
            x, y = [a[k][m] for k in keys], [b[k][m] for k in keys]
            mean, low, high = interval95([v - u for u, v in zip(x, y)])
            cells.append(f"{sum(x) / len(x):.3f} -> {sum(y) / len(y):.3f}, "
                         + format_cell({"mean": mean, "low": low, "high": high}, signed=True))
        lines.append(f"| `{arm}` | {n} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, nargs="?", help="the --out folder of a synthaug downstream run")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"),
                   help="print the synthetic arms of two downstream records side by side (writes nothing)")
    p.add_argument("--arms", nargs="+", metavar="ARM", default=list(SYNTHETIC_ARMS),
                   help="with --compare: the arms to set side by side (default: the synthetic arms)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC", default=["lesion_dice", "organ_dice_mean"],
                   help="with --compare: per-run aggregate metrics (also fn_ml, fp_ml; default: both Dice)")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "downstream.json")
    p.add_argument("--plot", type=Path, default=REPO / "benchmarks" / "results" / "downstream.png")
    p.add_argument("--results-md", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    p.add_argument("--command", help="the command that made the run (recorded with the results)")
    p.add_argument("--allow-incomplete", action="store_true", help="write the record of an unfinished run")
    args = p.parse_args(argv)
    if args.compare:
        records = [json.loads(f.read_text()) for f in args.compare]
        known = {r["arm"] for rec in records for r in rec["runs"]}
        missing = [a for a in args.arms if a not in known]
        if missing:
            p.error(f"--arms: {', '.join(missing)} in neither record (they hold {', '.join(sorted(known))})")
        scored = set.intersection(*({m for r in rec["runs"] if r.get("status") == "done"
                                     for m, v in r["test"]["aggregate"].items() if isinstance(v, int | float)}
                                    for rec in records))
        if not set(args.metrics) <= scored:
            p.error(f"--metrics: {', '.join(sorted(set(args.metrics) - scored))} not scored in both records "
                    f"(they score {', '.join(sorted(scored))})")
        print("\n".join(compare(*records, args.metrics, args.arms)))
        return 0
    if args.run is None:
        p.error("give a run folder, or --compare OLD NEW")
    path = args.run / "results.json"
    if not path.is_file():
        print(f"downstream_report: error: no results.json in {args.run}", file=sys.stderr)
        return 2
    results = json.loads(path.read_text())
    if not results.get("complete") and not args.allow_incomplete:
        print(f"downstream_report: error: {args.run} is not finished (re-run its command to resume, "
              "or pass --allow-incomplete)", file=sys.stderr)
        return 2
    results["weights_sha256"] = shipped_weights_sha256()
    if args.command:
        results["command"] = args.command
    atomic_write_json(args.json, results)
    plot_results(results, args.plot)
    rel = Path("results") / args.plot.name if args.plot.parent == args.results_md.parent / "results" else args.plot
    text = args.results_md.read_text() if args.results_md.is_file() else "# synthaug benchmark results\n"
    new = section(results, str(rel))
    if START in text and END in text:
        text = text[: text.index(START)] + new.rstrip("\n") + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + new
    atomic_write_text(args.results_md, text)
    print(f"wrote {args.json}, {args.plot}, section in {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
