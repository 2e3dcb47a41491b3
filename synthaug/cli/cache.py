"""``synthaug cache``: verify, merge or describe a ``synthaug generate`` cache."""

from __future__ import annotations

import argparse

HELP = "check a synthetic cache (verify), rebuild its manifest (merge) or summarise it (info)"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="report missing or corrupt cases; exit 1 if any",
                       description="Check every case's files against the manifest (size and sha256).")
    v.add_argument("dir", help="cache folder")
    v.add_argument("--quick", action="store_true", help="check sizes only, skip the sha256 checksums")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = sub.add_parser("merge", help="rebuild manifest.json and demographics.csv from the per-case entries",
                       description="Rebuild manifest.json from the finished cases (after sharded or interrupted runs).")
    m.add_argument("dir", help="cache folder")
    i = sub.add_parser("info", help="summarise a cache (generator, format, grid, cases)")
    i.add_argument("dir", help="cache folder")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.cache import load_manifest, merge_manifest, verify_cache

    root = Path(args.dir)
    if args.cache_action == "verify":
        report = verify_cache(root, checksums=not args.quick, progress=not args.no_progress)
        for w in report.warnings:
            print(f"warning: {w}")
        for problem in report.problems:
            print(f"problem: {problem}")
        what = "sizes" if args.quick else "sizes and sha256"
        if report.ok:
            print(f"ok: {report.checked} cases, {what} match ({root.resolve()})")
            return 0
        print(f"FAILED: {len(report.problems)} problem(s) in {root.resolve()} ({report.checked} cases listed)")
        return 1
    if args.cache_action == "merge":
        manifest = merge_manifest(root)
        state = "complete" if manifest["complete"] else "incomplete"
        print(f"merged {len(manifest['cases'])}/{manifest['n']} cases ({state}) into {root.resolve() / 'manifest.json'}")
        return 0 if manifest["complete"] else 1
    manifest = load_manifest(root)
    grid = manifest["grid"]
    print(f"cache {root.resolve()}")
    print(f"  cases      {len(manifest['cases'])}/{manifest.get('n')} ({'complete' if manifest.get('complete') else 'incomplete'})")
    print(f"  generator  {manifest['generator_sha256'][:16]}... {manifest['settings']}")
    print(f"  preset     {manifest['preset']}, grid {'x'.join(map(str, grid['shape']))} at {grid['spacing']} mm")
    print(f"  format     {manifest['format']}, seed {manifest.get('seed')}, demographics {manifest.get('demographics_source')}")
    return 0
