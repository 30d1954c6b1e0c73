"""One benchmark suite: every method on every real task, one table (issue 16).

    python -m benchmarks.suite --scale cpu [--methods ...] [--tasks ...] [--seeds 0 1 2]
        [--data-root DIR] [--output DIR] [--jobs N] [--sweep]
    python -m benchmarks.suite --summary-only [--output DIR] [--readme]

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
exist (`report`), so a suite can be spread over several runs or machines. `--data-root` points every task
at another folder with the layout of ../shared/data (held-out data as a drop-in).
"""
