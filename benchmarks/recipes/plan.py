"""What the recipe study runs, as data: the families and their representatives, the study's budget and
validation, and the levers, each one change against the family's baseline (the suite's cpu scale settings,
`benchmarks.suite.presets.cell_config`).

Every study run holds out 2 of the task's 8 BraTS training subjects as its val split (disjoint from train
and from the 4 test subjects, which stay those of the suite and are never scored by the study), trains for
STUDY_IMAGES images and validates every VALIDATE_EVERY images on the same VAL_ITEMS val pairs (spread over
the split) at the family's NFE; model/ keeps the EMA weights of the best validation (early stopping with no
patience: the curve runs to the end).
"""

from __future__ import annotations

import copy
from pathlib import Path

from benchmarks.suite.presets import COMMON_STEPS, cell_config, has_unet, registry_name
from cdtsde.methods import method_class
from cdtsde.training import TrainConfig

SCALE = "cpu"
SEED = 0
# 3x the cpu scale's 3,200 images: 600 steps at batch 16, about 9 CPU minutes on one core (0.9 s a step for
# cdtsde-linear in 32-true), 18 for width 48; the bridges' 18 runs fit about 3 core-hours
STUDY_IMAGES = 9600
VALIDATE_EVERY = 400  # images: 24 validations per run
VAL_ITEMS = 16
VAL_SUBJECTS = 2  # of the 8 training subjects; the 4 test subjects are the suite's
# --smoke: a few steps on tiny data (32 px: the GANs' PatchGAN needs 24), to show the machinery works
SMOKE = {"images": 64, "every": 32, "items": 2, "size": 32}

# family -> its task (the prior and the inversion baseline learn brats-t2t1's target, T1), its representatives,
# the validation column it is judged by (the headline, val/<metric>, unless given) and its validation NFE
FAMILIES = {
    "bridges": {"task": "brats-t1t2", "methods": ("cdtsde-linear", "bbdm")},
    "gans": {"task": "brats-t1t2", "methods": ("pix2pix",)},
    # the prior draws unconditional samples: their PSNR against the val targets says nothing, its loss does
    "prior": {"task": "brats-t2t1", "methods": ("prior",), "monitor": "val/loss"},
    # its translation is an optimisation: NFE = inversion iterations
    "inversion": {"task": "brats-t2t1", "methods": ("inversion",), "nfe": 20},
}

# lever -> the change: "train" options over the baseline's, "lr_factor" (times the baseline's learning rate),
# "batch_size" (at equal images: steps and validation interval scale; the rest stays per step), "unet"
# options (methods with a UNet only). "group": levers of one setting; the recipe takes at most one of a group
LEVERS = {
    "baseline": {},
    "lr-x0.5": {"lr_factor": 0.5, "group": "lr"},
    "lr-x2": {"lr_factor": 2.0, "group": "lr"},
    "warmup-100": {"train": {"warmup_steps": 100}, "group": "warmup"},
    "batch-8": {"batch_size": 8, "group": "batch"},
    "batch-32": {"batch_size": 32, "group": "batch"},
    # the weights validated and kept are the EMA's; off = the trained weights themselves (LEFT_OUT: a larger decay)
    "ema-off": {"train": {"ema_decay": 0.0}, "group": "ema"},
    "bf16-mixed": {"train": {"precision": "bf16-mixed"}, "group": "precision"},
    "width-48": {"unet": {"base_channels": 48}, "group": "width"},
}
# levers the study does not run, and why
LEFT_OUT = {
    "ema-0.999": "a larger decay than the baselines' 0.99 changes nothing at the study's budget: the EMA's "
                 "warm-up caps the decay at (1 + step) / (10 + step), below 0.99 until step 890, past the "
                 "study's 600 steps (measured for cdtsde-linear: its validation curve equalled the baseline's "
                 "to the last digit). The study runs ema-off instead; the converged scale's longer runs reach "
                 "the configured decay.",
    "min-snr": "Min-SNR-gamma (Hang et al. 2023: weight min(SNR(t), gamma) / SNR(t) for an eps loss, "
               "min(SNR(t), gamma) for x0) has no one shared place here: the regression losses live in three "
               "methods with three parameterisations (CDTSDE's x0 loss through its mixing field, the bridges' "
               "objectives on their own paths, the prior's eps loss), each SNR defined differently (the "
               "bridges' infinite at t = 0), so an option would be three weightings and three configuration "
               "fields: not cheap, and not one definition.",
}


def ema_is_inert(decay: float, other: float, steps: int) -> bool:
    """Whether two EMA decays give the same weights over a run of `steps` steps: the EMA's warm-up uses
    min(decay, (1 + step) / (10 + step)) (cdtsde.training.ema), so decays both above the warm-up's last
    value never act."""
    return decay == other or min(decay, other) >= (1 + steps) / (10 + steps)


def levers_of(method: str) -> list[str]:
    """The levers a method runs: width only where it trains the scale's UNet, an EMA lever only where it
    changes the weights (not for a method that keeps no EMA, nor where the warm-up makes it inert)."""
    unet = has_unet(method_class(registry_name(method)))
    baseline = study_config(method, "baseline", Path("."))["train"]
    decay = {**TrainConfig().__dict__, **method_class(registry_name(method)).train_defaults, **baseline}["ema_decay"]
    return [name for name, lever in LEVERS.items() if (unet or "unet" not in lever)
            and not ("ema_decay" in lever.get("train", {})
                     and ema_is_inert(decay, lever["train"]["ema_decay"], baseline["max_steps"]))]


def family_of(method: str) -> str:
    return next(name for name, family in FAMILIES.items() if method in family["methods"])


def monitor_of(method: str) -> str:
    """The validation column a method's runs are judged by: BraTS' headline, brain PSNR, unless its family
    names another."""
    return FAMILIES[family_of(method)].get("monitor", "val/psnr_fg")


def study_config(method: str, lever: str, data_root: Path, smoke: bool = False) -> dict:
    """The run configuration of one study run: the suite's cpu-scale cell of the method (seed 0) with a val
    split, the study's budget and validation, and the lever's change."""
    family = family_of(method)
    name = registry_name(method)
    config = copy.deepcopy(cell_config(FAMILIES[family]["task"], method, SEED, SCALE, data_root, None))
    if config["data"].get("kind") != "brats":
        raise ValueError(f"the recipe study holds out BraTS subjects; {method}'s data are {config['data'].get('kind')}")
    config["data"]["val_subjects"] = VAL_SUBJECTS
    change = LEVERS[lever]
    train = config["train"]
    resolved = {**TrainConfig().__dict__, **method_class(name).train_defaults, **train}
    images, every = (SMOKE["images"], SMOKE["every"]) if smoke else (STUDY_IMAGES, VALIDATE_EVERY)
    batch = change.get("batch_size", resolved["batch_size"])
    train.pop("snapshot_steps", None)
    train.update(change.get("train", {}))
    if "lr_factor" in change:
        train["lr"] = resolved["lr"] * change["lr_factor"]
    steps, interval = images // batch, max(1, every // batch)
    train.update(batch_size=batch, max_steps=steps, log_every=interval, checkpoint_every=interval,
                 validation={"every": interval, "items": SMOKE["items"] if smoke else VAL_ITEMS,
                             "nfe": FAMILIES[family].get("nfe", COMMON_STEPS)},
                 # no patience: the run goes to its end; model/ keeps the best validation's weights
                 early_stopping={"monitor": monitor_of(method), "patience": None})
    if "unet" in change:
        config["model"]["unet"] = {**config["model"]["unet"], **change["unet"]}
    if smoke:
        config["data"]["size"] = SMOKE["size"]
    return config
