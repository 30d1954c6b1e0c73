"""What the suite runs, as data: the scales' budgets, the tasks, and each method's run configuration,
derived from its class in the registry (`cdtsde.methods`) with a preset only where a method really differs.

A method's cell configuration is the scale's budget (steps, batch, optimiser, UNet) on the task's data:
- a method whose `config_class` has a `unet` field trains the scale's UNet; any other its own networks;
- its data kind chooses its tasks: "paired" methods run on the paired tasks, "target-only" and "unpaired"
  ones on the zero-shot tasks (an unpaired method trains on two disjoint halves of the training subjects);
- `PRESETS[name]` overrides this where the method's reference settings differ (Pix2Pix's optimiser,
  CycleGAN's batch 1 and networks); a registered method with no entry runs the generic default, so a method
  added to the registry gets its cells with no edit here.
Every setting was fixed before any suite result was seen. The converged scale (`converge`) is the cpu scale's
cells with a val split (`held_out_data`), each family's recipe (`recipe_of`), early stopping and a cap.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from cdtsde.methods import REGISTRY, method_class
from cdtsde.run import DEFAULT_METHOD

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REFERENCE = "cdtsde-linear"  # every method is paired against it, and it runs on every task

SMALL_UNET = {"base_channels": 32, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 1, "attention_resolutions": [8]}
SMALL_GAN = {"generator_filters": 16, "discriminator_filters": 16}  # CycleGAN's reference is 64, at 256 px
# nfe_cap: the most network evaluations one translation may take at the scale (BBDM's reference 200 fits the
# CPU scale; ABridge's 1000 dual steps, 1998 evaluations, are cut to fit)
SCALES = {
    # a few minutes per model on 2 CPU cores: a smoke-level comparison, not the paper's setting
    "quick": {"size": 32, "train": {"max_steps": 600, "batch_size": 16, "lr": 1e-3, "warmup_steps": 50,
                                    "ema_decay": 0.995}, "unet": SMALL_UNET, "gan": SMALL_GAN, "test_items": 64, "nfe_cap": 200},
    # about 7 minutes per model on 2 CPU cores
    "cpu": {"size": 64, "train": {"max_steps": 200, "batch_size": 16, "lr": 1e-3, "warmup_steps": 20,
                                  "ema_decay": 0.99}, "unet": SMALL_UNET, "gan": SMALL_GAN, "test_items": 64, "nfe_cap": 200},
    # the paper's 256 px setting, for a GPU
    "gpu": {"size": 256, "train": {"max_steps": 10000, "batch_size": 16, "lr": 2e-4, "accelerator": "gpu",
                                   "precision": "bf16-mixed"},
            "unet": {"base_channels": 64, "channel_mults": [1, 1, 2, 2, 4], "num_res_blocks": 2,
                     "attention_resolutions": [16]}, "test_items": None, "nfe_cap": None},
}
# The converged scale (issue 30): the cpu scale's cells, each trained with its family's recipe until its
# validation stops improving (early stopping on the task's headline, model/ the best validation's EMA weights)
# or the cap; scored on the unchanged test split. A cap of about 9x the cpu budget and 3x the recipe study's
# runs; a validation every 800 images (the study's every 400, halved in number for the longer runs) on every
# val item at the family's validation NFE; patience 5: 4,000 images without a gain, and no stop before the cpu
# scale's 3,200 images. The second protocol: the first (16 val items, no minimum) let noise end runs
# (cdtsde-linear's seed 1 on BraTS stopped on its first validation, after 800 images, its val loss still
# falling by 45%; one model's 16-item figure moves 0.10 dB with the sampler's seed alone, 0.03 over the 211
# BraTS val items), measured on validation only and fixed before any cell of this one ran
CONVERGED = {"max_images": 30_000, "validate_every_images": 800, "val_items": None, "patience": 5, "min_delta": 0.0,
             "min_images": 3_200}
SCALES["converged"] = {**SCALES["cpu"], "train": {**SCALES["cpu"]["train"], "max_steps": CONVERGED["max_images"]
                                                  // SCALES["cpu"]["train"]["batch_size"]}}
# the run settings every cell shares (no previews: the suite scores the test split itself)
RUN = {"log_every": 25, "sample_every": 0, "checkpoint_every": 100}
SNAPSHOT_FRACTIONS = (0.25, 0.5)  # of the budget: the compute curves
# scoring: every sampler at its reference NFE (within the scale's cap) and at COMMON_STEPS, the snapshots at
# COMMON_STEPS; with --sweep the CDTSDE fields at every NFE of SWEEP_NFES with each gamma of SWEEP_GAMMAS
COMMON_STEPS = 5
SWEEP_NFES = (1, 2, 3, 5, 10, 20)
SWEEP_GAMMAS = (1.0, 0.0)  # the paper's stochastic solver and the deterministic update


def subject(name: str) -> str:
    return name.rsplit("_slice", 1)[0]


def prefix(name: str) -> str:
    return name.split("_")[0]


def module(name: str) -> str:  # pv-el-cracks: <module>_<cell>, e.g. EL103_14, FSEC_2AXI10_16
    return name.rsplit("_", 1)[0]


IMAGE_PERCEPTION = ["perception/patch_swd", "perception/spectral_distance", "perception/sharpness_ratio"]
COLOUR_PERCEPTION = IMAGE_PERCEPTION + ["perception/mean_offset", "perception/histogram_w1"]
MRI_METRICS = ["psnr_fg", "ssim_fg", "kmeans3/dice/mean"]
# the headline is the Dice over the items with a defect: over all items an empty prediction of an empty target
# scores 1, so predicting nothing scores well (the identity, all background, 0.562 on the cpu scale's test cells)
MASK_METRICS = ["dice/defect-present", "dice/defect", "hd95/defect-present", "skeleton_f1/defect"]
BRATS = {"kind": "brats", "root": "brats-mri", "min_foreground": 0.1, "val_subjects": 0, "test_subjects": 4, "seed": 0}
# Held-out units: 4 of the 12 BraTS subjects (val 0: nothing selects on it), the Texas region of volkov-s1s2
# (62 crops of 31 fragments), Finland's 25 BigEarthNet patches (10 tiles), pv-el-cracks' own val/ folder (its
# cells share modules with train/: noted). spec: the data under the data root; cluster: the independent unit
# of an item (the bootstrap resamples them); paired / zero_shot: which methods run (REFERENCE runs everywhere);
# metrics: the summary's columns, the first the headline
TASKS = {
    "brats-t1t2": {"spec": {**BRATS, "source": "t1", "target": "t2"}, "cluster": subject, "unit": "subjects",
                   "paired": True, "zero_shot": False, "metrics": MRI_METRICS + IMAGE_PERCEPTION},
    "brats-t2t1": {"spec": {**BRATS, "source": "t2", "target": "t1"}, "cluster": subject, "unit": "subjects",
                   "paired": True, "zero_shot": True, "metrics": MRI_METRICS + IMAGE_PERCEPTION},
    # the zero-shot protocol's secondary task (seed paper 002): the reference is its paired upper bound
    "brats-flairt1": {"spec": {**BRATS, "source": "flair", "target": "t1"}, "cluster": subject, "unit": "subjects",
                      "paired": False, "zero_shot": True, "metrics": MRI_METRICS + IMAGE_PERCEPTION},
    # 200 Sentinel-1 VH / Sentinel-2 RGB pairs: trained on California, tested on Texas (another Sentinel-1 pass)
    "sar-optical": {"spec": {"kind": "paired-folder", "root": "sar-optical/volkov-s1s2", "source_dir": "sar",
                             "target_dir": "opt", "groups": {"table": "pairs.csv", "column": "s2_tile"},
                             "val_groups": 0, "test_groups": ["T14RNT"], "seed": 0},
                    "cluster": prefix, "unit": "fragments", "paired": True, "zero_shot": False,
                    "metrics": ["psnr", "ssim"] + COLOUR_PERCEPTION},
    "sar-bigearthnet": {"spec": {"kind": "sar-patches", "root": "sar-optical/bigearthnet-mm", "target_bands": [0, 1, 2],
                                 "groups": {"table": "pairs.csv", "column": "country"}, "val_scenes": 0,
                                 "test_scenes": ["Finland"], "seed": 0},
                        "cluster": prefix, "unit": "tiles", "paired": True, "zero_shot": False,
                        "metrics": ["psnr", "ssim"] + COLOUR_PERCEPTION},
    "el-mask": {"spec": {"kind": "el-masks", "root": "pv-el-cracks"}, "cluster": module, "unit": "modules",
                "paired": True, "zero_shot": False, "metrics": MASK_METRICS},
}

# The converged scale's val split per task, held out of the task's training data (the test split unchanged):
# None: BraTS, the recipe study's (benchmarks.recipes.plan.VAL_SUBJECTS of the 8 training subjects, seed 0);
# otherwise options over the task's data spec. "regroup": the items grouped by a regular expression on their
# names (fragments, modules), the test split's items then falling in TEST_UNITS; `val_outside_test`: the
# val_groups drawn (seeded) among the groups with no item in the test split. volkov: 8 of California's 69
# fragments (16 crops; Texas' fragments stay the test); BigEarthNet: Portugal (4 patches of 3 tiles; Finland
# stays the test); EL: 40 modules of train/ with no cell in the test split (the val/ folder, which shares 122
# modules with train/ as at every scale)
TEST_UNITS = "the test split's"
CONVERGED_VAL = {
    "brats-t1t2": None, "brats-t2t1": None, "brats-flairt1": None,
    "sar-optical": {"regroup": r"^(\d+)_", "val_groups": 8, "test_groups": TEST_UNITS},
    "sar-bigearthnet": {"val_scenes": ["Portugal"]},
    "el-mask": {"root": "pv-el-cracks/train", "split_dirs": None, "regroup": r"^(.*)_[^_]+$", "val_groups": 40,
                "test_groups": 0, "val_outside_test": True},
}
# the validation column of each task's headline (cdtsde.run.headline_score: brain PSNR, PSNR, defect Dice),
# what early stopping monitors; every suite method translates, so every one is judged by it
HEADLINES = {"brats-t1t2": "psnr_fg", "brats-t2t1": "psnr_fg", "brats-flairt1": "psnr_fg", "sar-optical": "psnr",
             "sar-bigearthnet": "psnr", "el-mask": "dice/defect-present"}
# the recipe study's families (benchmarks.recipes.plan.FAMILIES) by registry name; a method of none (the
# identity, a method added later) trains with the cpu scale's settings
FAMILIES = {"bridges": ("cdtsde", "bbdm", "dbim", "abridge", "i2sb"), "gans": ("pix2pix", "cyclegan"),
            "prior": ("prior", "sdedit", "lmi"), "inversion": ("inversion",)}
RECIPES = Path(__file__).resolve().parents[1] / "results" / "recipes" / "summary.json"

# Named variants of a registered method: suite name -> (registry name, model options over the default).
# CDTSDE runs as its mixing fields (docs/cdtsde.md); linear is DoSSR's schedule, the reference.
FIELD_VARIANTS = {f"cdtsde-{v}": ("cdtsde", {"field": {"variant": v}})
                  for v in ("linear", "envelope", "channel", "dynamic", "content")}
# the field objectives of the ablation (issue 15), run on request. beta = 0.01, fixed before any result: the
# order of the x0 error at the end of the CPU budget, so neither term dominates
OBJECTIVES = {"cdtsde-dynamic-budget": ("cdtsde", {"field": {"variant": "dynamic", "budget": True}}),
              "cdtsde-content-budget": ("cdtsde", {"field": {"variant": "content", "budget": True}}),
              "cdtsde-dynamic-elbo": ("cdtsde", {"field": {"variant": "dynamic"}, "mixer_objective": "elbo",
                                                 "restoring_weight": 0.01}),
              "cdtsde-content-elbo": ("cdtsde", {"field": {"variant": "content"}, "mixer_objective": "elbo",
                                                 "restoring_weight": 0.01})}
VARIANTS = {**FIELD_VARIANTS, **OBJECTIVES}
FIELDS = tuple(VARIANTS)  # the CDTSDE cells: the NFE sweep (--sweep) and the field diagnostics
# registered methods the suite does not run, and why
LEFT_OUT = {"cdtsde": "runs as its field variants (FIELD_VARIANTS)",
            "prior": "draws unconditional samples, ignoring the source (SDEdit and LMI run its checkpoints)"}

# Per-method presets (registry name -> overrides of the generic default), each a method's reference setting:
# train: options over the scale's training settings;
# method_train: the scale's settings left to the method's own `train_defaults` (its reference optimiser);
#   with batch_size among them, the budget of images seen stays the scale's (more steps of a smaller batch);
# train_fractions: options set to a fraction of that budget in steps;
# scale_model: the scale's entry holding the method's model options (none at a scale without it), so that a
#   scale derived from another (converged from cpu) trains the same networks; model: False leaves the model
#   section out (as the inversion cells were recorded: the same run as an empty section).
PRESETS = {
    # Adam (betas 0.5/0.999, its own), no EMA, no clipping: its reference, at the benchmark's budget and batch
    "pix2pix": {"train": {"lr": 2e-4, "warmup_steps": 1, "ema_decay": 0.0, "grad_clip": 0.0}},
    # batch 1 (its reference) over as many images as the others; lr decays over the second half; 16 filters
    # at the CPU scales, the reference 64 at 256 px
    "cyclegan": {"method_train": ("lr", "warmup_steps", "ema_decay", "batch_size"),
                 "train_fractions": {"decay_steps": 0.5, "checkpoint_every": 0.5},
                 "scale_model": "gan"},
    # its own networks and optimiser settings, at the benchmark's batch
    "inversion": {"method_train": ("lr", "warmup_steps", "ema_decay"), "model": False},
}


def registry_name(method: str) -> str:
    return VARIANTS.get(method, (method, {}))[0]


def has_unet(cls) -> bool:
    """Whether the method trains a UNet (its configuration has a `unet` field): the scale's network."""
    return "unet" in {f.name for f in dataclasses.fields(cls.config_class)}


def data_kind(method: str) -> str:
    return method_class(registry_name(method)).data_kind


def suite_methods() -> list[str]:
    """Every method the suite runs by default, in row order: the registry's (CDTSDE as its field variants,
    LEFT_OUT aside)."""
    return sorted([*FIELD_VARIANTS, *(name for name in REGISTRY if name not in LEFT_OUT)], key=row_order)


# the rows' order as published; methods not listed follow the others of their data kind
ROW_ORDER = (*FIELD_VARIANTS, "pix2pix", "bbdm", "dbim", "abridge", "identity", *OBJECTIVES,
             "sdedit", "lmi", "cyclegan", "inversion")


def row_order(method: str) -> tuple[bool, int]:
    return data_kind(method) != "paired", ROW_ORDER.index(method) if method in ROW_ORDER else len(ROW_ORDER)


def runs_on(task: str, method: str) -> bool:
    """Whether the method has a cell on the task: paired methods on paired tasks, the others on zero-shot ones."""
    return method == REFERENCE or TASKS[task]["paired" if data_kind(method) == "paired" else "zero_shot"]


def task_data(task: str, data_root: Path, scale: str | None = None) -> dict:
    """The task's data spec under `data_root`; with `scale`, at the scale's image size (what the cells train
    and test at)."""
    spec = dict(TASKS[task]["spec"])
    spec["root"] = str(Path(data_root) / spec["root"])
    if scale is not None:
        spec["size"] = SCALES[scale]["size"]
    return spec


def training_subjects(data: dict) -> list[str]:
    from cdtsde.data import build_dataset

    return build_dataset(data, "train").subjects


def unpaired_halves(data: dict) -> dict:
    """The source modality of one half of the training subjects and the target of the other (never a slice
    and its partner)."""
    subjects = training_subjects(data)
    half = len(subjects) // 2
    side = {k: v for k, v in data.items() if k not in ("val_subjects", "test_subjects", "seed")}
    return {"kind": "unpaired", "source": {**side, "subjects": subjects[:half], "val_subjects": 0, "test_subjects": 0},
            "target": {**side, "subjects": subjects[half:], "val_subjects": 0, "test_subjects": 0}}


def held_out_data(task: str, data_root: Path) -> dict:
    """The task's data spec at the converged scale: its train split less a val split (CONVERGED_VAL), its
    test split the suite's."""
    from cdtsde.data import build_dataset

    spec = task_data(task, data_root, "converged")
    held_out = CONVERGED_VAL[task]
    if held_out is None:
        from benchmarks.recipes import plan  # imported here: it imports this module

        return {**spec, "val_subjects": plan.VAL_SUBJECTS}
    held_out = dict(held_out)
    if "root" in held_out:
        held_out["root"] = str(Path(data_root) / held_out["root"])
    pattern = held_out.pop("regroup", None)
    if pattern is not None:
        held_out["groups"] = {"pattern": pattern}
        test_units = units(build_dataset(spec, "test"), pattern)
        if held_out["test_groups"] == TEST_UNITS:
            held_out["test_groups"] = sorted(test_units)
        if held_out.pop("val_outside_test", False):
            candidates = sorted(units(build_dataset({**spec, **held_out, "val_groups": 0}, "train"), pattern) - test_units)
            random.Random(spec.get("seed", 0)).shuffle(candidates)
            held_out["val_groups"] = sorted(candidates[:held_out["val_groups"]])
    return {**spec, **held_out}


def units(dataset, pattern: str) -> set[str]:
    """The groups of a files dataset's items by `pattern` (`cdtsde.data.splits.pattern_groups`)."""
    from cdtsde.data.splits import pattern_groups

    return set(pattern_groups([entry[2] for entry in dataset.entries], pattern)[0].values())


def family_of(method: str) -> str | None:
    return next((family for family, names in FAMILIES.items() if registry_name(method) in names), None)


STUDY_PICKS = "the recipe study's picks"  # in a recipe's source: it came from the study (`from_study`)


def from_study(recipe: dict) -> bool:
    """Whether a recorded recipe (`recipe_of`) is the recipe study's pick, not the cpu settings for want of one."""
    return STUDY_PICKS in recipe["source"]


def recipe_of(method: str) -> dict:
    """The recipe a converged cell trains with: its family's levers as the recipe study picked them
    (RECIPES, its "recipe" of the family), else none (the cpu scale's settings), and where that came from."""
    family = family_of(method)
    picks = json.loads(RECIPES.read_text())["families"] if RECIPES.is_file() else {}
    if family in picks:
        return {"family": family, "levers": picks[family]["recipe"],
                "source": f"{RECIPES.relative_to(RECIPES.parents[3])} ({STUDY_PICKS}"
                          f"{'' if picks[family]['recipe'] else ': the baseline'})"}
    return {"family": family, "levers": {}, "source": "the cpu scale's settings" + (
        " (no recipe study result for the family)" if family else " (no recipe family)")}


def converge(config: dict, task: str, method: str, cls, batch: int) -> None:
    """Make a cell configuration a converged one: its family's recipe (each lever's change, as the recipe
    study makes it), the cap in images, validation (a log row and a checkpoint with it) every CONVERGED
    validate_every_images images at the family's validation NFE, early stopping on the task's headline, no
    snapshots."""
    from benchmarks.recipes import plan  # imported here: it imports this module
    from cdtsde.training import TrainConfig

    recipe, train = recipe_of(method), config["train"]
    for lever in recipe["levers"].values():
        change = plan.LEVERS[lever]
        train.update(change.get("train", {}))
        if "lr_factor" in change:
            train["lr"] = {**TrainConfig().__dict__, **cls.train_defaults, **train}["lr"] * change["lr_factor"]
        if "batch_size" not in PRESETS.get(registry_name(method), {}).get("method_train", ()):
            batch = change.get("batch_size", batch)  # CycleGAN keeps its reference batch 1
        if "unet" in change and "unet" in config.get("model", {}):
            config["model"]["unet"] = {**config["model"]["unet"], **change["unet"]}
    if "batch_size" in train or batch != cls.train_defaults.get("batch_size", 1):
        train["batch_size"] = batch
    interval = max(1, CONVERGED["validate_every_images"] // batch)
    family = plan.FAMILIES.get(recipe["family"], {})
    train.update(max_steps=CONVERGED["max_images"] // batch, checkpoint_every=interval, log_every=interval,
                 validation={"every": interval, "items": CONVERGED["val_items"], "nfe": family.get("nfe", COMMON_STEPS)},
                 early_stopping={"monitor": f"val/{HEADLINES[task]}", "patience": CONVERGED["patience"],
                                 "min_delta": CONVERGED["min_delta"], "min_steps": CONVERGED["min_images"] // batch})
    train.update({key: round(fraction * train["max_steps"])
                  for key, fraction in PRESETS.get(registry_name(method), {}).get("train_fractions", {}).items()
                  if key != "checkpoint_every"})


def cell_config(task: str, method: str, seed: int, scale: str, data_root: Path, max_steps: int | None) -> dict:
    """The run configuration of one cell: the scale's budget on the task's data, the method's preset; at the
    converged scale with a val split, its family's recipe and early stopping (`converge`)."""
    name, model_options = VARIANTS.get(method, (method, {}))
    cls, preset, budget = method_class(name), PRESETS.get(name, {}), SCALES[scale]
    data = held_out_data(task, data_root) if scale == "converged" else task_data(task, data_root, scale)
    train = {**budget["train"], **RUN, "seed": seed, **preset.get("train", {})}
    images = train["max_steps"] * train["batch_size"]
    for key in preset.get("method_train", ()):
        train.pop(key, None)
    if "batch_size" in preset.get("method_train", ()):
        train["max_steps"] = images // cls.train_defaults.get("batch_size", 1)
    train.update({key: round(fraction * train["max_steps"]) for key, fraction in preset.get("train_fractions", {}).items()})
    config = {"data": unpaired_halves(data) if cls.data_kind == "unpaired" else data, "train": train}
    if name != DEFAULT_METHOD:
        config["method"] = name
    if preset.get("model", True):
        config["model"] = {**({"unet": budget["unet"]} if has_unet(cls) else {}),
                           **(budget.get(preset["scale_model"], {}) if "scale_model" in preset else {}),
                           **model_options}
    if scale == "converged":
        converge(config, task, method, cls, train.get("batch_size", cls.train_defaults.get("batch_size", 1)))
    if max_steps:
        train["max_steps"] = max_steps
    steps = train["max_steps"]
    # converged: the validation curve is the compute curve, model/ the best weights
    train["snapshot_steps"] = [] if scale == "converged" else sorted(
        {max(1, round(f * steps)) for f in SNAPSHOT_FRACTIONS} - {steps})
    train["checkpoint_every"] = min(train["checkpoint_every"], steps)
    return config
