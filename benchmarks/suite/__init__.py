"""One benchmark suite: every method on every real task, one table (issue 16).

    python -m benchmarks.suite --scale cpu [--methods ...] [--tasks ...] [--seeds 0 1 2]
        [--data-root DIR [--data-copy]] [--output DIR] [--jobs N] [--sweep]
    python -m benchmarks.suite --score-only --from DIR --data-root DIR --output NEW_DIR [--tasks ...] [...]
    python -m benchmarks.suite --summary-only [--output DIR] [--readme] [--mix-code-versions]

A cell is one (task, method, training seed). Each cell runs in its own process: it trains with the
method's preset at the scale (`presets`: the scale's budget and network, derived from the method's class,
with a per-method preset where its reference settings differ), keeping the EMA weights at 25% and 50% of
the budget (`train.snapshot_steps`); then scores the test split on the machine's accelerator: the final
model at the method's reference NFE (within the scale's cap) and at a common 5 NFE (one pass for one-pass
methods) with distortion metrics (brain-restricted for MRI), perception metrics
(`cdtsde.metrics.perception`; images only), K-Means Dice for MRI, mask metrics for EL; the snapshots at the
common NFE (`run`). It writes `cells/<task>/<method>/seed<N>/cell.json` last, with its seconds per image,
peak memory, training time and images seen. A finished cell is skipped; an unfinished one resumes its
training; the summary (`summary.md`, `summary.json`, `compute-<task>.png`) is rebuilt from whatever cells
exist (`report`), so a suite can be spread over several runs or machines (`--data-copy` where another
machine keeps the data at another path). `--score-only` scores the trained models of finished cells (`--from`)
on the test splits of the tasks under `--data-root`, a folder with the layout of ../shared/data (held-out data
as a drop-in), into new cells naming their source, never training; a suite pointed at another data root with
cells of the first in its output refuses them. Each cell records the code version and the machine it ran on;
seeds that ran different code are not averaged into one row unless `--mix-code-versions`. Cell processes keep
the caller's OMP_NUM_THREADS (else they share the cores). `--scale converged` trains each cell with its
family's recipe, validating on a val split held out of the training data, until early stopping or a cap
(`presets.CONVERGED`), and scores the best validation's weights; its cells also record why they stopped, the
best validation and the validation curve, which the summary draws (`validation-<task>.png`) and flags where
not flat over its last quarter. A converged cell that stopped early where today's early stopping, replaying
its validation rows, goes on (a stop under an earlier rule) is reopened: its training continues from its
saved state (from the start where its run/ is gone) and it is scored afresh, recording from where.
"""
