"""`cdtsde evaluate`: score a folder of predictions against a folder of targets."""

from __future__ import annotations

from pathlib import Path


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
    parser = subparsers.add_parser("evaluate", help="metrics of predictions against targets (paired by file name)")
    parser.add_argument("--pred", required=True, type=Path, help="folder of predictions")
    parser.add_argument("--target", required=True, type=Path, help="folder of targets")
    parser.add_argument("--kind", choices=["image", "mask"], default="image",
                        help="image: intensity metrics; mask: class-index masks, scored per class")
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
                        help="folder of target-modality training images the K-Means clusters are fit on")
    parser.add_argument("--recursive", action="store_true",
                        help="also the subfolders (one per subject): files pair by their path below --pred and --target")
    parser.add_argument("--rename", metavar="FROM:TO",
                        help="pair a prediction named for its input modality with its target's name: "
                             "<name>FROM against <name>TO (BraTS _t1:_t2, IXI -T1:-T2); targets not ending "
                             "in TO (the other modalities) are left out")


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
    import csv
    import json

    from ..atomic import atomic_path
    from ..errors import CdtsdeError
    from ..metrics import PV_EL_DEFECT, format_mask_table, format_table
    from ..metrics.folders import evaluate_folders, fit_kmeans_on_folder

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
    rename = None
    if args.rename:
        rename = tuple(args.rename.split(":"))
        if len(rename) != 2 or not all(rename):
            raise CdtsdeError(f"--rename: expected FROM:TO name endings (e.g. _t1:_t2), got {args.rename!r}")
    for folder in (args.pred, args.target):
        if not folder.is_dir():
            raise CdtsdeError(f"{folder}: not a folder")
    if args.kind == "mask":
        image_only = {"--perception": args.perception, "--kmeans": args.kmeans,
                      "--nonzero-foreground": args.nonzero_foreground, "--foreground-dir": args.foreground_dir}
        given = [flag for flag, value in image_only.items() if value]
        if given:
            raise CdtsdeError(f"{given[0]} compares images: use it with --kind image (masks are scored per class)")
    if args.kmeans:
        if args.kmeans_fit is None or not args.kmeans_fit.is_dir():
            raise CdtsdeError("--kmeans needs --kmeans-fit FOLDER: target-modality training images to fit the "
                              f"clusters on (got {args.kmeans_fit})")
        if min(args.kmeans) < 2:
            raise CdtsdeError(f"--kmeans: cluster counts must be >= 2, got {args.kmeans}")
    elif args.kmeans_fit is not None:
        raise CdtsdeError("--kmeans-fit without --kmeans: give the cluster counts, e.g. --kmeans 3 5")
    if args.source is not None and not args.source.is_dir():
        raise CdtsdeError(f"--source {args.source}: not a folder")
    csv_path = args.out.with_suffix(".csv")
    check_out(args.out, csv_path, args.overwrite)
    kmeans, fit_problems = [], []
    if args.kmeans:
        if args.kmeans_fit.resolve() == args.target.resolve():
            print("warning: --kmeans-fit is the target folder itself: the clusters see the test targets")
        kmeans, fit_problems = fit_kmeans_on_folder(args.kmeans_fit, args.kmeans)
    rows, summary, problems, volumes = evaluate_folders(
        args.pred, args.target, kind=args.kind, foreground_dir=args.foreground_dir,
        nonzero_foreground=args.nonzero_foreground, classes=classes, foreground=foreground,
        skeleton_tolerance=args.skeleton_tolerance, kmeans=kmeans, perception=args.perception,
        recursive=args.recursive, rename=rename, slice_axis=args.slice_axis)
    problems = fit_problems + problems
    if not rows:
        for path, reason in problems:
            print(f"problem: {path}: {reason}")
        raise CdtsdeError(f"no pairs to evaluate between {args.pred} and {args.target}")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"pred": str(args.pred), "target": str(args.target), "kind": args.kind, "pairs": len(rows),
               "summary": summary, "problems": [{"path": str(p), "reason": r} for p, r in problems]}
    if volumes.rows:
        payload["volumes"] = {"count": len(volumes.rows), "slice_axis": args.slice_axis, "summary": volumes.summary,
                              "rows": volumes.rows}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    if args.kind == "mask":
        print(format_mask_table(summary))
    else:
        print(format_table({args.pred.name or str(args.pred): summary}))
    print(f"{len(rows)} pair(s); per-image rows in {csv_path}, summary in {args.out}")
    if volumes.rows:
        print(format_table({args.pred.name or str(args.pred): volumes.summary}, label="volumes"))
        figure = draw_volumes(args, volumes.files)
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


def draw_volumes(args, files: dict[str, tuple[Path, Path]]) -> Path:
    """The figure of `cdtsde.visualize.save_volume_cuts` for the first FIGURE_VOLUMES scored volumes by name
    ({name: (prediction, target)}): the source (with --source: the file of the prediction's name and
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
        target, meta = read_scored(target_path)
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
