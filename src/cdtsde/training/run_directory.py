"""What a run directory holds and the rules that keep a run in it whole: a new run does not start over an
old one unless told to overwrite it; a resume continues the same run, with the settings it recorded (but
`RESUMABLE_CHANGES`, which are reported) and the same global batch; the state file is replaced atomically,
the previous one kept as `state-previous.pt`, to which a resume falls back (with a warning) when `state.pt`
is missing or unreadable.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch

from ..atomic import atomic_path, check_writable, remove_stale_temporaries
from ..errors import CdtsdeError
from ..methods import Method
from ..settings import to_plain
from .config import TrainConfig, train_record

STATE_FILE = "state.pt"
PREVIOUS_STATE_FILE = "state-previous.pt"
# what a run directory holds (removed by `overwrite`; anything else in the folder is left alone)
RUN_FILES = (STATE_FILE, PREVIOUS_STATE_FILE, "metrics.csv", "config.yaml")
RUN_FOLDERS = ("model", "last", "samples", "snapshots", "tensorboard")
# settings a resume may change (with a note): how long, how often to log and save, on what hardware;
# every other setting changes the run's mathematics, and the resume is refused with the differences
# (batch_size is per process: it and the process count may change together as long as the global batch,
# their product, stays the run's; `check_global_batch`)
RESUMABLE_CHANGES = ("max_steps", "log_every", "sample_every", "checkpoint_every", "snapshot_steps", "num_workers",
                     "accelerator", "devices", "num_nodes", "strategy", "batch_size")


def launched_rank_zero() -> bool:
    """Whether this process is rank 0 (or the only one), known before Fabric starts: the processes a
    launcher (Fabric's, torchrun, SLURM) starts for the other ranks carry a non-zero rank variable."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an existing one, or over files a run writes (config.yaml, metrics.csv,
    ...) in a folder without a run, unless told to overwrite them; remove those files then (only the files a
    run writes), and the temporaries a kill left behind."""
    if resume and overwrite:
        raise CdtsdeError("resume and overwrite exclude each other: resume continues the run, overwrite restarts it")
    if run_dir.exists() and not run_dir.is_dir():
        raise CdtsdeError(f"{run_dir}: exists and is not a directory")
    holds_run = any((run_dir / name).exists() for name in (STATE_FILE, PREVIOUS_STATE_FILE, "model"))
    if holds_run and not resume and not overwrite:
        raise CdtsdeError(f"{run_dir}: already holds a training run; resume it (--resume) or start again "
                          f"(--overwrite, which deletes it)")
    # files a run writes without the state of one: a run killed before its first checkpoint, or the user's own
    # files (a config.yaml, a metrics.csv) that a new run would write over
    taken = [name for name in (*RUN_FILES, *RUN_FOLDERS) if (run_dir / name).exists()]
    if taken and not holds_run and not resume and not overwrite:
        raise CdtsdeError(f"{run_dir}: holds {', '.join(taken)}, which a run writes, but no training run; choose "
                          f"another folder, or pass --overwrite to delete them")
    if overwrite:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
    try:
        check_writable(run_dir)
    except OSError as exc:
        raise CdtsdeError(f"{run_dir}: cannot write the run there ({exc.strerror or exc})") from exc
    for folder in (run_dir, run_dir / "model", run_dir / "last"):
        remove_stale_temporaries(folder)


def write_state(run_dir: Path, state: dict) -> None:
    """Replace the run's training state in one step, keeping the one it replaces as PREVIOUS_STATE_FILE."""
    path = run_dir / STATE_FILE
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if path.is_file():
            path.replace(path.with_name(PREVIOUS_STATE_FILE))


def read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CdtsdeError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not {"model", "step"} <= set(state):
        raise CdtsdeError(f"{path}: not a cdtsde training state")
    return state


def load_state(run_dir: Path, method: Method) -> dict:
    """The training state in `run_dir`, or the previous one beside it (with a warning) when STATE_FILE is
    missing or unreadable: a kill while the state was being replaced, a truncated copy."""
    path, previous = run_dir / STATE_FILE, run_dir / PREVIOUS_STATE_FILE
    if not path.is_file() and not previous.is_file():
        raise CdtsdeError(f"{run_dir}: nothing to resume ({STATE_FILE} missing)")
    try:
        state = read_state(path) if path.is_file() else None
        problem = f"{path}: missing"
    except CdtsdeError as exc:
        state, problem = None, str(exc)
    if state is None:
        if not previous.is_file():
            raise CdtsdeError(problem)
        state = read_state(previous)
        warnings.warn(f"{problem}; resuming from the previous checkpoint {previous.name} (step {state['step']})",
                      stacklevel=3)
    if state.get("method", method.name) != method.name:
        raise CdtsdeError(f"{path}: a {state['method']} run cannot be resumed as {method.name}")
    if "optimizer" in state:  # a state written before methods had several optimisers
        state["optimizers"] = {"model": state.pop("optimizer")}
    return state


def resolved_settings(method: Method, config: TrainConfig, run_config: dict | None) -> dict:
    """What decides a run's mathematics, as resolved (defaults filled in): the method's configuration,
    the training settings and, from the run configuration, the data specification."""
    settings = {"model": to_plain(method.config), "train": train_record(config)}
    if run_config is not None and "data" in run_config:
        settings["data"] = run_config["data"]
    return settings


def same_setting(a, b) -> bool:
    """Equal values, or two spellings of one existing file or folder (a data root through a symlink)."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False
    return False


def check_unchanged(state: dict, settings: dict, run_dir: Path) -> None:
    """A resume continues the same run: every setting as the state recorded it, but `RESUMABLE_CHANGES`."""
    def flat(value, prefix=""):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: value}

    recorded = state.get("settings") or {"train": state.get("train", {})}  # states before settings were kept
    before = flat({key: value for key, value in recorded.items() if key in settings})
    now = flat({key: value for key, value in settings.items() if key in recorded})
    differ = [key for key in sorted(set(before) | set(now)) if not same_setting(before.get(key), now.get(key))]
    allowed = [key for key in differ if key.startswith("train.") and key[6:] in RESUMABLE_CHANGES]

    def listed(keys):
        return "; ".join(f"{key}: {before.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}" for key in keys)

    refused = [key for key in differ if key not in allowed]
    if refused:
        raise CdtsdeError(f"{run_dir}: cannot resume with a changed configuration ({listed(refused)}); only "
                          f"train.{{{', '.join(RESUMABLE_CHANGES)}}} may change")
    noted = [key for key in allowed if key != "train.max_steps" or now.get("train.decay_steps")]
    if noted:
        ramp = (" (the learning rate's linear decay now ends at the new max_steps)"
                if "train.max_steps" in noted else "")
        warnings.warn(f"resuming {run_dir} with {listed(noted)}{ramp}", stacklevel=3)


def check_global_batch(state: dict, global_batch: int, config: TrainConfig, world_size: int, run_dir: Path) -> None:
    """The global batch (per-process batch_size x processes) decides which items each step sees; a resume
    on another number of processes must keep it, with batch_size scaled to match."""
    recorded = state.get("global_batch")
    if recorded is None:  # a state written before the global batch was kept: the batch size it recorded
        before = (state.get("settings") or {"train": state.get("train", {})})["train"]
        devices, nodes = before.get("devices", 1), before.get("num_nodes", 1)
        if not isinstance(devices, int):
            return
        recorded = before.get("batch_size", config.batch_size) * devices * nodes
    if recorded != global_batch:
        hint = (f"; with {world_size} process(es) set train.batch_size: {recorded // world_size}"
                if recorded % world_size == 0 else "")
        raise CdtsdeError(f"{run_dir}: cannot resume with a global batch of {global_batch} (train.batch_size "
                          f"{config.batch_size} x {world_size} process(es)); the run's is {recorded}{hint}")
