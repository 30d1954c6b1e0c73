"""`cdtsde translate`: translate image files or folders with a trained method (named by its checkpoint)."""

from __future__ import annotations

from pathlib import Path

from .renaming import add_rename_flag, parse_rename
from .sampling import add_sampling_flags, chosen_sampling

COMMAND_FLAGS = {"checkpoint", "method", "input", "output", "overwrite", "skip_existing", "seed", "samples",
                 "batch_size", "native_size", "device", "precision", "recursive", "tiling", "tile_size",
                 "tile_overlap", "tile_batch", "blend", "rename", "volume_noise", "slice_correlation"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("translate", help="translate images with a trained method")
    parser.add_argument("--checkpoint", required=True, type=Path, help="run directory or model directory")
    parser.add_argument("--method", help="run the checkpoint as another method sharing its weights "
                                         "(a prior's checkpoint as sdedit); default: the checkpoint's")
    parser.add_argument("--input", required=True, type=Path, help="an image file or a folder of them")
    parser.add_argument("--output", required=True, type=Path, help="output folder (outside the input folder)")
    parser.add_argument("--recursive", nargs="?", const="*", metavar="PATTERN",
                        help="--input folder: also its subfolders (one per subject), the files whose names match "
                             "PATTERN (e.g. '*_t1.nii.gz'; default every image); the output keeps the subfolders")
    add_rename_flag(parser, "name each translation for the target modality: an input <name>FROM is written as "
                            "<name>TO, the name of the target it stands for (`evaluate` pairs them by name)")
    parser.add_argument("--overwrite", action="store_true", help="replace translations already in --output")
    parser.add_argument("--skip-existing", action="store_true",
                        help="translate only inputs whose translations are not in --output yet (continue a killed run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1, help="samples per input; > 1 also writes a std map")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--native-size", action="store_true", help="do not resize inputs to the training size (models trained on native-scale crops or tiles never resize)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32",
                        help="bf16: the network under bf16 autocast, faster on hardware with bf16 arithmetic "
                             "(1.58x on an AVX512-BF16 CPU) but not equal to float32 (up to 0.015 here)")
    parser.add_argument("--tiling", choices=("auto", "on", "off"), default="auto",
                        help="translate inputs larger than a window window by window and blend them: auto (the "
                             "default) for models trained on native-scale crops or tiles, on for every model, off "
                             "for none (one pass over the whole input)")
    parser.add_argument("--tile-size", type=int, help="window side in pixels (default: the training size)")
    parser.add_argument("--tile-overlap", type=float, default=0.25,
                        help="share of a window that neighbouring windows overlap, in [0, 1) (default 0.25)")
    parser.add_argument("--tile-batch", type=int, default=8, help="windows per network batch (default 8)")
    parser.add_argument("--blend", choices=("gaussian", "linear"), default="gaussian",
                        help="weights blending overlapping windows (default gaussian)")
    parser.add_argument("--volume-noise", choices=("independent", "shared", "correlated"),
                        help="how the slices of a NIfTI volume draw a stochastic method's noise: shared (the same "
                             "draws for every slice, the default: the best 3-D SSIM on validation volumes), "
                             "independent (each slice its own) or correlated (smoothly along the slice axis, by "
                             "--slice-correlation)")
    parser.add_argument("--slice-correlation", type=float, default=0.9,
                        help="--volume-noise correlated: the correlation of adjacent slices' draws, in (0, 1) "
                             "(default 0.9)")
    add_sampling_flags(parser, reserved=COMMAND_FLAGS)
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..errors import CdtsdeError
    from ..imagefiles import list_images, list_images_under, stem
    from ..locks import folder_lock
    from ..training import load_pretrained
    from ..translate import Tiling, VolumeNoise, default_tiling

    for flag in ("samples", "batch_size"):
        if getattr(args, flag) < 1:
            raise CdtsdeError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.input.exists():
        raise CdtsdeError(f"{args.input}: no such file or folder")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise CdtsdeError(f"--device {args.device!r}: not a device name (cpu, cuda, cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CdtsdeError(f"--device {args.device}: no CUDA device is available (torch {torch.__version__}); use --device cpu")
    tiling = Tiling(args.tile_size, args.tile_overlap, args.tile_batch, args.blend)
    try:
        noise = (VolumeNoise(args.volume_noise, args.slice_correlation) if args.volume_noise
                 else VolumeNoise(correlation=args.slice_correlation))
    except CdtsdeError as exc:
        raise CdtsdeError(f"--slice-correlation: {exc}") from exc
    method = load_pretrained(args.checkpoint, device=device, method=args.method)
    if args.tiling == "off" or (args.tiling == "auto" and default_tiling(method) is None):
        tiling = None
    try:
        sampling = method.sampling_options(**chosen_sampling(args, method))
    except CdtsdeError as exc:
        raise CdtsdeError(str(exc).replace("sampling.", "--")) from exc
    if args.recursive and not args.input.is_dir():
        raise CdtsdeError(f"--recursive: {args.input} is not a folder")
    files = (list_images_under(args.input, args.recursive) if args.recursive else list_images(args.input)
             if args.input.is_dir() else [args.input])
    if not files:
        raise CdtsdeError(f"{args.input}: no image files found")
    rename = parse_rename(args.rename)
    unnamed = [path for path in files if rename and not stem(path).endswith(rename[0])]
    if unnamed:
        raise CdtsdeError(f"--rename {args.rename}: {len(unnamed)} input(s) not named with the ending {rename[0]!r} "
                          f"({unnamed[0]}{', ...' if len(unnamed) > 1 else ''}); choose the inputs of that modality "
                          f"(e.g. --recursive '*{rename[0]}.nii.gz')")
    with folder_lock(args.output, "cdtsde translate"):
        return translate_files(args, method, sampling, tiling, noise, files, rename)


def translate_files(args, method, sampling, tiling, noise, files: list[Path], rename: tuple[str, str] | None) -> int:
    """Translate `files` into the (locked) output folder, window by window with `tiling` (None: whole), the
    slices of volumes drawing their noise as `noise` (`cdtsde.translate.VolumeNoise`) says; a file
    that cannot be read, translated or written is reported, and the others are still translated; running out
    of memory stops the run (the next file would not fit either)."""
    from tqdm.auto import tqdm

    from ..errors import CdtsdeError
    from ..memory import OutOfMemory
    from ..translate import check_outputs, translate_file

    total = len(files)
    channels = 1 if method.data.target_kind == "mask" else method.data.target_channels
    # each input's output folder: --output, or with --recursive its subfolder's place below --output
    destination = {path: args.output / path.parent.relative_to(args.input) if args.recursive else args.output
                   for path in files}
    files = [kept for folder in dict.fromkeys(destination.values())
             for kept in check_outputs([path for path in files if destination[path] == folder], folder, args.samples,
                                       args.overwrite, args.input if args.input.is_dir() else None,
                                       args.skip_existing, channels, rename)]
    if len(files) < total:
        print(f"{total - len(files)} of {total} file(s) already translated in {args.output}: skipped")
    failed, diagnostics = [], {}
    for path in tqdm(files, desc="translate", unit="file"):
        try:
            _, found = translate_file(method, path, destination[path], overwrite=args.overwrite, sampling=sampling,
                                      seed=args.seed, samples=args.samples, batch_size=args.batch_size,
                                      resize_to_training=not args.native_size, precision=args.precision,
                                      tiling=tiling, rename=rename, progress=True, noise=noise)
            for key, value in found.items():
                diagnostics[key] = diagnostics.get(key, 0) + value
        except OutOfMemory:  # the next file would not fit either: stop, naming what to lower
            raise
        except (CdtsdeError, ValueError) as exc:
            failed.append((path, str(exc)))
        except OSError as exc:  # a full disk, a folder made read-only meanwhile: this file, not the rest
            where = f" ({exc.filename})" if exc.filename else ""
            failed.append((path, f"{path}: cannot write its translation: {exc.strerror or exc}{where}"))
    print(f"translated {len(files) - len(failed)} of {len(files)} file(s) into {args.output}")
    for key, value in diagnostics.items():
        if value:
            print(f"note: {key} = {value:g}: {method.diagnostics_help.get(key, '')}")
    for path, reason in failed:
        print(f"failed: {reason}" if str(path) in reason else f"failed: {path}: {reason}")
    if failed:
        print(f"{len(failed)} of {len(files)} file(s) failed")
    return 1 if failed else 0
