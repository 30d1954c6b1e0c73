"""Check that a committed cell reproduces: train and score it again as it ran and compare every score.

    python -m benchmarks.suite.verify --output benchmarks/results/suite/converged --cell brats-t1t2 cdtsde-linear 0
    python -m benchmarks.suite.verify --output DIR --cell TASK METHOD SEED --against RERUN_DIR  # compare a rerun

The rerun is the cell's own command (`report.rerun_command`): the suite on that cell alone with its scale,
test items, budget override and sweep, one torch thread, into a fresh folder (the trained cell's weights are
not read). It must run at the cell's code version (of a reopened cell, the one that continued it): a
checkout at another commit, or with modified code, is refused and named, since another version need not
reproduce the scores: run the printed command at the cell's commit (which may predate this module) and
compare from here with `--against`. The comparison covers every evaluation's item rows (every metric of
every test item; timing columns aside), the images seen, the best validation and, where the committed
cell's weights are on this machine, the SHA-256 of the weights file.
The result goes to `verify.json` beside the cell's `cell.json`, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, code_version, machine
from benchmarks.suite.report import code_label, reproducing_code, rerun_command
from benchmarks.suite.run import cell_dir

WEIGHTS = Path("run") / "model" / "model.safetensors"


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def compare(committed: Path, rerun: Path) -> dict:
    """Every finite score of every evaluation of two cells' folders, item by item: the largest absolute
    difference, the values compared, and what differs in kind (items, evaluations, NaN against a number)."""
    mine, theirs = (json.loads((folder / "cell.json").read_text()) for folder in (committed, rerun))
    mismatches, largest, values = [], 0.0, 0
    if set(mine["evaluations"]) != set(theirs["evaluations"]):
        mismatches.append(f"evaluations {sorted(mine['evaluations'])} against {sorted(theirs['evaluations'])}")
    for key in sorted(set(mine["evaluations"]) & set(theirs["evaluations"])):
        rows_a, rows_b = (json.loads((folder / cell["evaluations"][key]["rows"]).read_text())
                          for folder, cell in ((committed, mine), (rerun, theirs)))
        if [row["name"] for row in rows_a] != [row["name"] for row in rows_b]:
            mismatches.append(f"{key}: other test items")
            continue
        for row_a, row_b in zip(rows_a, rows_b):
            for metric, value in row_a.items():
                if metric == "name" or metric.startswith("seconds"):
                    continue
                other = row_b.get(metric)
                if isinstance(value, float) and isinstance(other, float) and math.isfinite(value) and math.isfinite(other):
                    largest, values = max(largest, abs(value - other)), values + 1
                elif not (value == other or (isinstance(value, float) and isinstance(other, float)
                                             and math.isnan(value) and math.isnan(other))):
                    mismatches.append(f"{key}/{row_a['name']}/{metric}: {value!r} against {other!r}")
    mine_code, theirs_code = ({"code": reproducing_code(record)} for record in (mine, theirs))
    if code_label(mine_code) != code_label(theirs_code):
        mismatches.append(f"the rerun ran code {code_label(theirs_code)}, the cell {code_label(mine_code)}")
    for key in ("images_seen", "best_value", "best_step"):
        if mine.get(key) != theirs.get(key):
            mismatches.append(f"{key}: {mine.get(key)} against {theirs.get(key)}")
    weights = {"committed": sha256(committed / WEIGHTS), "rerun": sha256(rerun / WEIGHTS)}
    if None not in weights.values() and weights["committed"] != weights["rerun"]:
        mismatches.append("the weights files differ")
    return {"values_compared": values, "largest_difference": largest, "mismatches": mismatches[:50],
            "mismatch_count": len(mismatches), "weights_sha256": weights}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="the suite output holding the cell")
    parser.add_argument("--cell", nargs=3, metavar=("TASK", "METHOD", "SEED"), required=True)
    parser.add_argument("--against", type=Path, help="a suite output where the cell was already rerun (no training)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="the largest absolute difference accepted")
    args = parser.parse_args(argv)
    task, method, seed = args.cell
    committed = cell_dir(args.output, task, method, int(seed))
    if not (committed / "cell.json").is_file():
        raise SystemExit(f"{committed}: no cell.json (not a finished cell)")
    record = json.loads((committed / "cell.json").read_text())
    command = rerun_command(record)
    if args.against is None:
        here, theirs = code_version(), reproducing_code(record)
        if theirs.get("commit") is None or (here["commit"], here["modified"]) != (theirs["commit"], False):
            raise SystemExit(f"{committed} ran code {code_label({'code': theirs})}; this checkout is "
                             f"{code_label({'code': here})}: "
                             f"rerun it at its commit ({command}), then compare from here with --against RERUN_FOLDER")
        args.against = Path(tempfile.mkdtemp(prefix="verify-"))
        suite = command.split("python -m benchmarks.suite ", 1)[1].replace("RERUN_FOLDER", str(args.against))
        subprocess.run([sys.executable, "-m", "benchmarks.suite", *shlex.split(suite)], check=True, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = compare(committed, cell_dir(args.against, task, method, int(seed)))
    result.update(reproduced=result["mismatch_count"] == 0 and result["largest_difference"] <= args.tolerance,
                  tolerance=args.tolerance, command=command, rerun=str(args.against), machine=machine())
    (committed / "verify.json").write_text(json.dumps(result, indent=1))
    print(f"{task}/{method}/{seed}: {'reproduced' if result['reproduced'] else 'NOT reproduced'}: "
          f"{result['values_compared']} scores, largest difference {result['largest_difference']:.3g}, "
          f"{result['mismatch_count']} mismatches; weights {result['weights_sha256']}")
    if not result["reproduced"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
