"""`cdtsde evaluate`: score a folder of predictions against a folder of targets (--pred/--target), or a
trained model on a data spec's split (--checkpoint/--data)."""

from __future__ import annotations

from pathlib import Path

from .renaming import add_rename_flag, parse_rename
from .sampling import add_sampling_flags, chosen_sampling

COMMAND_FLAGS = {"pred", "target", "checkpoint", "method", "data", "split", "seed", "batch_size", "device", "kind",
                 "foreground_dir", "nonzero_foreground", "classes", "foreground", "skeleton_tolerance", "perception",
                 "kmeans", "kmeans_fit", "recursive", "rename", "slice_axis", "figure", "source", "out", "overwrite"}
# the flags that name files of the folder mode, meaningless for a model scored on a data spec
FOLDER_FLAGS = {"--foreground-dir": "foreground_dir", "--recursive": "recursive", "--rename": "rename",
                "--figure": "figure", "--source": "source"}
# training targets the K-Means clusters of the model mode are fit on, at most (evenly spaced over the split)
KMEANS_FIT_ITEMS = 256


def parse_classes(text: str | None) -> dict[int, str] | None:
    """"0:background,1:dark area,..." or "pv-el" -> {value: name}."""
    from ..errors import CdtsdeError
    from ..metrics import PV_EL_CLASSES

    if not text:
        return None
    if text == "pv-el":
        return dict(PV_EL_CLASSES)
    classes = {}
    for item in text.split(","):
        value, _, name = item.partition(":")
        if not value.strip().isdigit():
            raise CdtsdeError(f"--classes: expected VALUE:NAME pairs separated by commas, got {item!r}")
        classes[int(value)] = name.strip() or value.strip()
    return classes


FIGURE_VOLUMES = 6  # rows of the volume figure: the first volumes by name


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="metrics of predictions against targets (paired by file name), "
                                                    "or of a trained model on a data spec's split")
    parser.add_argument("--pred", type=Path, help="folder of predictions (with --target)")
    parser.add_argument("--target", type=Path, help="folder of targets (with --pred)")
    parser.add_argument("--checkpoint", type=Path,
                        help="run or model directory of a trained model, scored on --data; with --pred/--target: the "
                             "model whose training data's reading the targets are read by (e.g. Sentinel-2 "
                             "reflectance divided by 3000, not by its uint16 range)")
    parser.add_argument("--method", help="--checkpoint: run it as another method sharing its weights "
                                         "(a prior's checkpoint as sdedit)")
    parser.add_argument("--data", type=Path,
                        help="--checkpoint: the data to score it on: a YAML data spec (a `data:` mapping, or a whole "
                             "run configuration), or a data folder; with --pred/--target: the spec whose reading "
                             "of its targets (its train split's) the targets are read by")
    parser.add_argument("--split", default="test", help="--checkpoint: the split of --data scored (default test)")
    parser.add_argument("--seed", type=int, default=0, help="--checkpoint: seed of the sampler's draws")
    parser.add_argument("--batch-size", type=int, default=16, help="--checkpoint: items translated at once")
    parser.add_argument("--device", default="cpu", help="--checkpoint: cpu, cuda or cuda:N")
    parser.add_argument("--kind", choices=["image", "mask"],
                        help="image (default): intensity metrics; mask: class-index masks, scored per class "
                             "(--checkpoint: the model's, which this must match)")
    parser.add_argument("--foreground-dir", type=Path, help="--kind image: foreground masks, paired by name")
    parser.add_argument("--nonzero-foreground", action="store_true",
                        help="--kind image: also score the target's non-zero region (skull-stripped MRI)")
    parser.add_argument("--classes", help='--kind mask: "0:background,1:crack,..." or "pv-el"')
    parser.add_argument("--foreground", help='--kind mask: classes grouped as "defect", e.g. "1,2,3"')
    parser.add_argument("--skeleton-tolerance", type=float, default=2.0)
    parser.add_argument("--perception", action="store_true",
                        help="--kind image: add set-level perception metrics (patch SWD, spectral distance, "
                             "sharpness ratio, colour fidelity)")
    parser.add_argument("--kmeans", type=int, nargs="+", metavar="K",
                        help="--kind image: K-Means Dice with K intensity clusters (e.g. 3 5), fit on --kmeans-fit")
    parser.add_argument("--kmeans-fit", type=Path,
                        help="folder of target-modality training images the K-Means clusters are fit on "
                             "(--checkpoint: by default the train split's targets of --data)")
    parser.add_argument("--recursive", nargs="?", const="*", metavar="PATTERN",
                        help="also the subfolders (one per subject): files pair by their path below --pred and "
                             "--target; in both folders only those whose names match PATTERN (e.g. '*_t2.nii.gz': "
                             "translations named for the target modality and its files; default every image)")
    add_rename_flag(parser, "pair a prediction named for its input modality with its target's name: <name>FROM "
                            "against <name>TO; targets not ending in TO (the other modalities) are left out")
    parser.add_argument("--slice-axis", type=int, choices=[0, 1, 2], default=2,
                        help="NIfTI volumes: the array axis the translation cut them along, for the flicker ratio "
                             "(cdtsde translate: the training data's axis, 2 by default)")
    parser.add_argument("--figure", type=Path,
                        help="NIfTI volumes: PNG of the axial, coronal and sagittal cuts of the first "
                             f"{FIGURE_VOLUMES} volumes (default: <out>-volumes.png beside the JSON)")
    parser.add_argument("--source", type=Path,
                        help="NIfTI volumes: folder of the translations' sources (named as the predictions), "
                             "drawn beside them in the figure")
    parser.add_argument("--out", type=Path, default=Path("evaluation.json"),
                        help="JSON summary; the per-image CSV goes beside it (default evaluation.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out and its CSV")
    add_sampling_flags(parser, reserved=COMMAND_FLAGS)
    parser.set_defaults(func=run)


def check_out(out: Path, csv_path: Path, overwrite: bool) -> None:
    """Before any work: the results can be written, and replace earlier ones only with `overwrite` (as
    `translate` does with its outputs)."""
    from ..atomic import check_writable
    from ..errors import CdtsdeError

    for path in (out, csv_path):
        if path.is_dir():
            raise CdtsdeError(f"--out {out}: {path} is a folder; name a file, e.g. {path / 'evaluation.json'}")
    existing = [str(path) for path in (out, csv_path) if path.exists()]
    if existing and not overwrite:
        raise CdtsdeError(f"--out {out}: {' and '.join(existing)} exist(s) already; pass --overwrite to replace "
                          f"them, or another --out")
    try:
        check_writable(out.parent)
    except OSError as exc:
        raise CdtsdeError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc


def run(args) -> int:
    from ..errors import CdtsdeError

    if args.pred is not None or args.target is not None:
        missing = [flag for flag, value in (("--pred", args.pred), ("--target", args.target)) if value is None]
        if missing:
            raise CdtsdeError(f"--pred and --target go together: {missing[0]} is missing")
        if args.checkpoint is not None and args.data is not None:
            raise CdtsdeError("--pred/--target read the targets as --checkpoint's training data were read or as the "
                              "--data spec reads them: give one of the two")
    elif args.checkpoint is None and args.data is None:
        raise CdtsdeError("give --pred and --target (folders of predictions and targets) or --checkpoint and --data "
                          "(a trained model and the data spec to score it on)")
    elif args.checkpoint is None or args.data is None:
        raise CdtsdeError(f"--checkpoint and --data go together: {'--data' if args.data is None else '--checkpoint'} "
                          f"is missing (or give --pred and --target to score translations already made)")
    classes, foreground = scoring_classes(args)
    if args.kmeans:
        if min(args.kmeans) < 2:
            raise CdtsdeError(f"--kmeans: cluster counts must be >= 2, got {args.kmeans}")
        if args.kmeans_fit is not None and not args.kmeans_fit.is_dir():
            raise CdtsdeError(f"--kmeans-fit {args.kmeans_fit}: not a folder")
    elif args.kmeans_fit is not None:
        raise CdtsdeError("--kmeans-fit without --kmeans: give the cluster counts, e.g. --kmeans 3 5")
    if args.pred is None:
        return run_model(args, classes, foreground)
    return run_folders(args, classes, foreground)


def scoring_classes(args) -> tuple[dict[int, str] | None, tuple[int, ...] | None]:
    """The declared mask classes and the classes grouped as "defect" (--classes, --foreground)."""
    from ..errors import CdtsdeError
    from ..metrics import PV_EL_DEFECT

    if not args.skeleton_tolerance >= 0:
        raise CdtsdeError(f"--skeleton-tolerance must be >= 0 pixels, got {args.skeleton_tolerance}")
    classes = parse_classes(args.classes)
    foreground = None
    if args.foreground:
        try:
            foreground = tuple(int(v) for v in args.foreground.split(","))
        except ValueError as exc:
            raise CdtsdeError(f"--foreground: expected class values separated by commas, got {args.foreground!r}") from exc
    elif args.classes == "pv-el":
        foreground = PV_EL_DEFECT
    return classes, foreground


def check_image_options(args, kind: str) -> None:
    """Masks are scored per class: the options of intensity images are refused for them."""
    from ..errors import CdtsdeError

    if kind == "mask":
        image_only = {"--perception": args.perception, "--kmeans": args.kmeans,
                      "--nonzero-foreground": args.nonzero_foreground, "--foreground-dir": args.foreground_dir}
        given = [flag for flag, value in image_only.items() if value]
        if given:
            raise CdtsdeError(f"{given[0]} compares images: use it with --kind image (masks are scored per class)")


def write_results(out: Path, csv_path: Path, rows: list[dict], payload: dict) -> None:
    """The per-item rows as CSV at `csv_path` and the JSON `payload` at `out`, each atomically."""
    import csv
    import json

    from ..atomic import atomic_path

    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def print_summary(label: str, kind: str, summary: dict) -> None:
    from ..metrics import format_mask_table, format_table

    print(format_mask_table(summary) if kind == "mask" else format_table({label: summary}))


def run_model(args, classes: dict[int, str] | None, foreground: tuple[int, ...] | None) -> int:
    """Score the model of --checkpoint on the --split of the --data spec, built as training builds it
    (`build_dataset`) and scored on the one scoring path (`evaluate_model`): masks per class (the pv-el
    classes for pv-el mask data), MRI also over the brain (the target's nonzero voxels) as the suite does."""
    import dataclasses

    import torch

    from ..data import build_dataset
    from ..data.splits import check_split
    from ..errors import CdtsdeError
    from ..evaluation import evaluate_model
    from ..metrics.folders import fit_kmeans_on_folder
    from ..run import headline_score, mask_classes
    from ..training import load_pretrained
    from .data import load_spec

    given = [flag for flag, dest in FOLDER_FLAGS.items() if getattr(args, dest)]
    if given:
        raise CdtsdeError(f"{given[0]} is for --pred/--target folders; a model is scored on the items of --data")
    check_split(args.split)
    if args.batch_size < 1:
        raise CdtsdeError(f"--batch-size must be >= 1, got {args.batch_size}")
    spec, base = load_spec(args.data)
    csv_path = args.out.with_suffix(".csv")
    check_out(args.out, csv_path, args.overwrite)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise CdtsdeError(f"--device {args.device!r}: not a device name (cpu, cuda, cuda:N)") from exc
    method = load_pretrained(args.checkpoint, device=device, method=args.method)
    try:
        sampling = method.sampling_options(**chosen_sampling(args, method))
    except CdtsdeError as exc:
        raise CdtsdeError(str(exc).replace("sampling.", "--")) from exc
    kind = method.data.target_kind
    if args.kind is not None and args.kind != kind:
        raise CdtsdeError(f"--kind {args.kind}: the model of {args.checkpoint} translates into {kind}s")
    check_image_options(args, kind)
    try:
        dataset = build_dataset(spec, args.split, base_dir=base)
    except (ValueError, TypeError, KeyError) as exc:  # CdtsdeError from the data module passes as it is
        raise CdtsdeError(f"--data {args.data}: {exc}") from exc
    check_data_fits(method, dataset, args)
    warn_reading_differs(method, dataset, args)
    headline = headline_score(spec, method.data)
    if kind == "mask" and classes is None:
        classes = mask_classes(spec)
    foreground = foreground or (headline.defect or None)
    kmeans, problems = [], []
    if args.kmeans:
        if args.kmeans_fit is not None:
            # the fitting images read as the model's training targets were (a 16-bit PNG is not scaled by its dtype)
            reading = training_target_reading(args, method.data)
            kmeans, problems = fit_kmeans_on_folder(args.kmeans_fit, args.kmeans, reading=reading)
        else:
            kmeans = fit_kmeans_on_training_targets(spec, base, args.kmeans)
    rows, summary = evaluate_model(method, dataset, sampling, seed=args.seed, batch_size=args.batch_size,
                                   classes=classes, foreground=foreground, kmeans=kmeans, perception=args.perception,
                                   nonzero_foreground=args.nonzero_foreground or headline.name == "psnr_fg")
    payload = {"checkpoint": str(args.checkpoint), "method": method.name, "data": str(args.data), "split": args.split,
               "sampling": dataclasses.asdict(sampling), "seed": args.seed, "kind": kind, "pairs": len(rows),
               "summary": summary, "problems": [{"path": str(p), "reason": r} for p, r in problems]}
    write_results(args.out, csv_path, rows, payload)
    print_summary(args.checkpoint.name or str(args.checkpoint), kind, summary)
    print(f"{len(rows)} item(s) of the {args.split} split of {args.data}; per-item rows in {csv_path}, "
          f"summary in {args.out}")
    for path, reason in problems:
        print(f"problem: {path}: {reason}")
    return 1 if problems else 0


def check_data_fits(method, dataset, args) -> None:
    """The split has source-target pairs in the model's channel counts and target kind."""
    from ..errors import CdtsdeError

    if len(dataset) == 0:
        raise CdtsdeError(f"--data {args.data}: the {args.split} split is empty")
    if "source" not in dataset[0]:
        raise CdtsdeError(f"--data {args.data}: holds one modality; scoring a model needs source-target pairs")
    model = method.data
    data_kind = "mask" if getattr(dataset, "target_classes", None) else "image"
    # a model trained without sources (a prior) translates sources in the target's channels
    expected = {"source": model.source_channels or model.target_channels, "target": model.target_channels}
    found = {"source": dataset.source_channels, "target": dataset.target_channels}
    if data_kind != model.target_kind or expected != found:
        raise CdtsdeError(f"--data {args.data}: {found['source']} source and {found['target']} target channel(s) of "
                          f"{data_kind}s, but the model of {args.checkpoint} translates {expected['source']} into "
                          f"{expected['target']} channel(s) of {model.target_kind}s (set data.channels, or score "
                          f"it on data of its task)")


def warn_reading_differs(method, dataset, args) -> None:
    """The --data spec reads its files as it declares; where the model's training data were read otherwise
    (another Sentinel-2 reflectance_max, NIfTI percentile, value_range) the model sees other inputs and is
    scored against targets on another scale: said, not refused (the spec may describe other data rightly)."""
    from ..data.views import file_reading

    for side in ("source", "target"):
        trained, read = getattr(method.data, f"{side}_reading"), file_reading(dataset, side)
        if trained is not None and read is not None and trained != read:
            print(f"warning: --data {args.data} reads its {side}s as {read}, the training data of {args.checkpoint} "
                  f"were read as {trained}: the scores are of differently scaled {side}s")
    if method.data.nifti_orientation != "ras" and any(str(path).endswith((".nii", ".nii.gz"))
                                                      for pair in getattr(dataset, "paths", [])[:1] for path in pair):
        print(f"warning: {args.checkpoint} was trained before NIfTI volumes were read in RAS orientation (its axes "
              f"reordered, each in its stored direction); --data {args.data} reads them in RAS, so the slices of "
              f"volumes not stored RAS (BraTS: LPS) are flipped against its training; retrain it to score it here")


def fit_kmeans_on_training_targets(spec: dict, base: Path, clusters: list[int]):
    """`fit_kmeans` on the targets of the spec's train split in [0, 1] (at most KMEANS_FIT_ITEMS, evenly
    spaced), as the suite fits them: target-modality training images, never the scored targets."""
    from ..data import build_dataset
    from ..errors import CdtsdeError
    from ..intensity import model_to_unit
    from ..metrics.segmentation import fit_kmeans

    targets = build_dataset(spec, "train", base_dir=base)
    if len(targets) == 0:
        raise CdtsdeError("--kmeans: the train split of --data is empty; give --kmeans-fit FOLDER")
    images = [model_to_unit(targets[i]["target"]).permute(1, 2, 0).numpy()
              for i in range(0, len(targets), max(1, len(targets) // KMEANS_FIT_ITEMS))]
    return fit_kmeans(images, clusters)


def training_target_reading(args, data_info=None):
    """The reader of the target files in the folder mode and of the --kmeans-fit images (`FileReading`): the
    one --checkpoint's training data read their targets with (`DataInfo.target_reading`; `data_info`, that of
    a checkpoint already loaded) or the --data spec's (its train split's targets);
    None without either, or for a checkpoint that records none: the targets' scaling is then guessed, with a
    warning where it is a guess (`cdtsde.metrics.folders.unit_scored`)."""
    from ..data import build_dataset
    from ..data.readers import reading_from_record
    from ..data.views import file_reading
    from ..errors import CdtsdeError
    from ..training import load_pretrained
    from .data import load_spec

    if args.checkpoint is not None:
        record = (data_info or load_pretrained(args.checkpoint).data).target_reading
        if record is None:
            print(f"note: {args.checkpoint} records no reading of its training targets (written before it was "
                  f"recorded); pass --data SPEC (its training data spec) instead to read them as training did")
            return None
        return reading_from_record(record, f"{args.checkpoint}: data.target_reading")
    if args.data is None:
        return None
    spec, base = load_spec(args.data)
    try:
        record = file_reading(build_dataset(spec, "train", base_dir=base), "target")
    except (ValueError, TypeError, KeyError) as exc:  # CdtsdeError from the data module passes as it is
        raise CdtsdeError(f"--data {args.data}: {exc}") from exc
    return None if record is None else reading_from_record(record)


def run_folders(args, classes: dict[int, str] | None, foreground: tuple[int, ...] | None) -> int:
    from ..errors import CdtsdeError
    from ..metrics import format_table
    from ..metrics.folders import evaluate_folders, fit_kmeans_on_folder
    from .sampling import PREFIX, flag

    args.kind = args.kind or "image"
    given = [name for name, value in (("--method", args.method), ("--split", args.split != "test"),
                                      ("--seed", args.seed != 0)) if value]
    given += [flag(dest[len(PREFIX):]) for dest, value in vars(args).items()
              if dest.startswith(PREFIX) and value is not None]
    if given:
        raise CdtsdeError(f"{given[0]} is for --checkpoint/--data: --pred/--target score translations already made")
    rename = parse_rename(args.rename)
    for folder in (args.pred, args.target):
        if not folder.is_dir():
            raise CdtsdeError(f"{folder}: not a folder")
    check_image_options(args, args.kind)
    if args.kmeans and args.kmeans_fit is None:
        raise CdtsdeError("--kmeans needs --kmeans-fit FOLDER: target-modality training images to fit the "
                          "clusters on")
    if args.source is not None and not args.source.is_dir():
        raise CdtsdeError(f"--source {args.source}: not a folder")
    csv_path = args.out.with_suffix(".csv")
    check_out(args.out, csv_path, args.overwrite)
    reading = training_target_reading(args) if args.kind == "image" else None  # masks hold class indices
    kmeans, fit_problems = [], []
    if args.kmeans:
        if args.kmeans_fit.resolve() == args.target.resolve():
            print("warning: --kmeans-fit is the target folder itself: the clusters see the test targets")
        kmeans, fit_problems = fit_kmeans_on_folder(args.kmeans_fit, args.kmeans, reading=reading)
    rows, summary, problems, volumes = evaluate_folders(
        args.pred, args.target, kind=args.kind, foreground_dir=args.foreground_dir,
        nonzero_foreground=args.nonzero_foreground, classes=classes, foreground=foreground,
        skeleton_tolerance=args.skeleton_tolerance, kmeans=kmeans, perception=args.perception,
        recursive=args.recursive, rename=rename, slice_axis=args.slice_axis, target_reading=reading)
    problems = fit_problems + problems
    if not rows:
        for path, reason in problems:
            print(f"problem: {path}: {reason}")
        raise CdtsdeError(f"no pairs to evaluate between {args.pred} and {args.target}")
    payload = {"pred": str(args.pred), "target": str(args.target), "kind": args.kind, "pairs": len(rows),
               "summary": summary, "problems": [{"path": str(p), "reason": r} for p, r in problems]}
    if volumes.rows:
        payload["volumes"] = {"count": len(volumes.rows), "slice_axis": args.slice_axis, "summary": volumes.summary,
                              "rows": volumes.rows}
    write_results(args.out, csv_path, rows, payload)
    print_summary(args.pred.name or str(args.pred), args.kind, summary)
    print(f"{len(rows)} pair(s); per-image rows in {csv_path}, summary in {args.out}")
    if volumes.rows:
        print(format_table({args.pred.name or str(args.pred): volumes.summary}, label="volumes"))
        figure = draw_volumes(args, volumes.files, reading)
        print(f"{len(volumes.rows)} volume(s) scored in 3-D (the \"volumes\" section of {args.out}); "
              f"cuts of {min(len(volumes.rows), FIGURE_VOLUMES)} in {figure}")
    elif args.figure or args.source:
        print("note: --figure and --source draw NIfTI volumes; there were none")
    shown = 20
    for path, reason in problems[:shown]:
        print(f"problem: {reason}" if str(path) in reason else f"problem: {path}: {reason}")
    if len(problems) > shown:
        print(f"... and {len(problems) - shown} more problem(s), all listed in {args.out}")
    return 1 if problems else 0


def draw_volumes(args, files: dict[str, tuple[Path, Path]], reading) -> Path:
    """The figure of `cdtsde.visualize.save_volume_cuts` for the first FIGURE_VOLUMES scored volumes by name
    ({name: (prediction, target)}), the targets read by `reading` as they were scored: the source (with --source: the file of the prediction's name and
    subfolder there), translation and target, cut through the centre of the foreground (the target's
    nonzero voxels with --nonzero-foreground, the --foreground-dir mask of the target's name) or of the
    volume."""
    from ..imagefiles import list_images, read_image, stem
    from ..metrics.folders import read_scored
    from ..metrics.volume import axis_codes_of
    from ..visualize import VolumeRow, save_volume_cuts

    masks = {stem(path): path for path in list_images(args.foreground_dir)} if args.foreground_dir else {}
    figure_rows = []
    for name in sorted(files)[:FIGURE_VOLUMES]:
        pred_path, target_path = files[name]
        target, meta = read_scored(target_path, reading=reading)
        volumes = {"translation": read_scored(pred_path)[0], "target": target}
        source_path = args.source / pred_path.relative_to(args.pred) if args.source else None
        source = read_scored(source_path)[0] if source_path is not None and source_path.is_file() else None
        if source is not None and source.shape == target.shape:
            volumes = {"source": source, **volumes}
        region = None
        if stem(target_path) in masks:
            region = read_image(masks[stem(target_path)])[0] > 0
        elif args.nonzero_foreground:
            region = target > 0
        figure_rows.append(VolumeRow(name, volumes, region, axis_codes_of(meta)))
    path = args.figure or args.out.with_name(f"{args.out.stem}-volumes.png")
    return save_volume_cuts(path, figure_rows)
