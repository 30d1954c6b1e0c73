"""`cdtsde data make` (write a procedural paired folder) and `cdtsde data inspect` (counts, sizes,
value ranges, pairing problems and a PNG grid of example pairs)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..atomic import atomic_path
from ..errors import CdtsdeError
from ..imagefiles import folders_below, list_images

INSPECT_SAMPLE = 32


def held_out_units(dataset) -> str:
    """The split's groups (subjects, scenes or `groups`), so that a grouped split can be checked by eye."""
    for kind in ("groups", "subjects", "scenes"):
        names = getattr(dataset, kind, None)
        if names and all(isinstance(name, str) for name in names):
            shown = ", ".join(names[:8]) + (f", ... ({len(names)})" if len(names) > 8 else "")
            return f"; {kind}: {shown}"
    return ""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="make or inspect paired datasets")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    make = actions.add_parser(
        "make", help="write a procedural paired folder (source/, target/, dataset.yaml)"
    )
    make.add_argument("--task", required=True, choices=("mri-phantom", "el-cell", "sar-landcover"))
    make.add_argument("--n", type=int, default=200, help="number of pairs (default 200)")
    make.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument(
        "--heterogeneity", type=float, default=0.5, help="spatial variation of the mapping, 0..1"
    )
    make.add_argument("--output", required=True, type=Path)
    make.set_defaults(func=run_make)

    inspect = actions.add_parser("inspect", help="summarise a dataset and draw example pairs")
    inspect.add_argument(
        "path", type=Path, help="a paired folder, or a YAML spec (or a config with a 'data' key)"
    )
    inspect.add_argument("--grid", type=Path, help="PNG of example pairs (default: <name>-pairs.png here)")
    inspect.add_argument("--examples", type=int, default=4, help="pairs in the grid (default 4)")
    inspect.set_defaults(func=run_inspect)


def run_make(args) -> int:
    from ..data.procedural import write_paired_folder

    if args.n < 1:
        raise CdtsdeError(f"--n must be at least 1, got {args.n}")
    output = write_paired_folder(args.task, args.n, args.size, args.seed, args.output, args.heterogeneity)
    print(f"wrote {args.n} {args.task} pairs to {output} (spec: {output / 'dataset.yaml'})")
    return 0


def load_spec(path: Path) -> tuple[dict, Path]:
    """(spec, base directory for its relative paths) from a folder or a YAML file."""
    if path.is_dir():
        if (path / "dataset.yaml").is_file():
            return load_spec(path / "dataset.yaml")
        return {"kind": folder_kind(path), "root": str(path.resolve())}, path
    if not path.is_file():
        raise CdtsdeError(f"{path}: no such file or folder")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CdtsdeError(f"{path}: not valid YAML ({exc})") from exc
    if isinstance(document, dict) and isinstance(document.get("data"), dict):
        document = document["data"]
    if not isinstance(document, dict):
        raise CdtsdeError(f"{path}: expected a dataset spec mapping with a 'kind' key")
    return document, path.parent


def folder_kind(path: Path) -> str:
    """Dataset kind of a bare folder, from its layout."""
    if (path / "train" / "img").is_dir() and (path / "train" / "ann").is_dir():
        return "el-masks"
    if any(next(folder.glob("*.nii*"), None) for folder in folders_below(path)):
        return "nifti"
    if list_images(path):  # images directly inside: one modality alone
        return "image-folder"
    return "paired-folder"


def run_inspect(args) -> int:
    from ..data import build_dataset

    spec, base = load_spec(args.path)
    spec = {**spec, "verify": True}
    examples, skipped = [], []
    for split in ("train", "val", "test"):
        try:
            dataset = build_dataset(spec, split, base_dir=base)
        except CdtsdeError as exc:
            print(f"{split:5s}: unavailable ({exc})")
            continue
        skipped += dataset.skipped
        if len(dataset) == 0:
            print(f"{split:5s}: 0 pairs")
            continue
        sample = [dataset[i] for i in range(0, len(dataset), max(1, len(dataset) // INSPECT_SAMPLE))]
        sides = [side for side in ("source", "target", "image") if side in sample[0]]
        sizes = sorted({tuple(item[sides[0]].shape[1:]) for item in sample})
        ranges = {
            side: (min(float(i[side].min()) for i in sample), max(float(i[side].max()) for i in sample))
            for side in sides
        }
        counts = (f"{len(dataset)} images, {dataset.channels} ch" if "image" in sides else
                  f"{len(dataset)} pairs, source {dataset.source_channels} ch, target {dataset.target_channels} ch")
        print(
            f"{split:5s}: {counts}, sizes {', '.join(f'{h}x{w}' for h, w in sizes)}, "
            + ", ".join(f"{side} range [{low:.3f}, {high:.3f}]" for side, (low, high) in ranges.items())
            + f" (of {len(sample)} sampled)"
            + held_out_units(dataset)
        )
        context = getattr(dataset, "context_slices", 0)  # a NIfTI slice's neighbours: drawn is the slice itself
        examples += [
            ({**item, "source": item["source"][context:context + 1]} if context else item,
             getattr(dataset, "target_classes", None))
            for item in sample[: max(0, args.examples - len(examples))]
        ]
    for path, reason in dict.fromkeys(skipped):
        print(f"skipped: {path}: {reason}")
    if examples:
        grid = args.grid or Path(f"{args.path.resolve().name}-pairs.png")
        draw_grid(examples, grid)
        print(f"example pairs: {grid}")
    if skipped:
        print(f"{len(dict.fromkeys(skipped))} file(s) skipped")
        return 1
    return 0 if examples else 1


def draw_grid(examples, path: Path) -> None:
    """One row per pair: source | target (masks shown as decoded class maps); one image per row for
    one-sided data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.masks import decode_classes
    from ..intensity import model_to_unit

    sides = [side for side in ("source", "target", "image") if side in examples[0][0]]
    figure, axes = plt.subplots(len(examples), len(sides), figsize=(2.5 * len(sides), 2.5 * len(examples)),
                                squeeze=False)
    for row, (item, classes) in enumerate(examples):
        for column, side in enumerate(sides):
            axis = axes[row, column]
            if side == "target" and classes:
                axis.imshow(
                    decode_classes(item["target"]), cmap="tab10", vmin=0, vmax=9, interpolation="nearest"
                )
            else:
                image = model_to_unit(item[side]).permute(1, 2, 0).numpy()
                image = image[..., 0] if image.shape[-1] != 3 else image
                axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
            axis.set_title(f"{item['name']} {side}", fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
