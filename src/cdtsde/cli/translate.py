"""`cdtsde translate`: translate image files or folders with a trained model."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("translate", help="translate images with a trained model")
    parser.add_argument("--checkpoint", required=True, type=Path, help="run directory or model directory")
    parser.add_argument("--input", required=True, type=Path, help="an image file or a folder of them")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=5, help="network evaluations (default 5)")
    parser.add_argument("--gamma", type=float, default=1.0, help="0 deterministic .. 1 stochastic (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1, help="samples per input; > 1 also writes a std map")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--spacing", choices=["uniform", "quadratic"], default="uniform")
    parser.add_argument("--solver", choices=["first-order", "dpm++2m"], default="first-order",
                        help="dpm++2m: second-order, deterministic (needs --gamma 0)")
    parser.add_argument("--native-size", action="store_true", help="do not resize inputs to the training size")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tqdm.auto import tqdm

    from ..errors import CdtsdeError
    from ..io import list_images
    from ..model import load_pretrained
    from ..translate import translate_file

    if args.samples < 1:
        raise CdtsdeError(f"--samples must be >= 1, got {args.samples}")
    if args.steps < 1:
        raise CdtsdeError(f"--steps must be >= 1, got {args.steps}")
    if args.solver == "dpm++2m" and args.gamma != 0:
        raise CdtsdeError("--solver dpm++2m is deterministic: add --gamma 0")
    if not 0 <= args.gamma <= 1:
        raise CdtsdeError(f"--gamma must lie in [0, 1], got {args.gamma}")
    if not args.input.exists():
        raise CdtsdeError(f"{args.input}: no such file or folder")
    model = load_pretrained(args.checkpoint, device=args.device)
    files = list_images(args.input) if args.input.is_dir() else [args.input]
    if not files:
        raise CdtsdeError(f"{args.input}: no image files found")
    args.output.mkdir(parents=True, exist_ok=True)
    failed, clamped = [], 0
    for path in tqdm(files, desc="translate", unit="file"):
        try:
            _, count = translate_file(model, path, args.output, steps=args.steps, gamma=args.gamma, seed=args.seed,
                                      samples=args.samples, batch_size=args.batch_size, resize=not args.native_size,
                                      spacing=args.spacing, solver=args.solver)
            clamped += count
        except (CdtsdeError, ValueError) as exc:
            failed.append((path, str(exc)))
    print(f"translated {len(files) - len(failed)} of {len(files)} file(s) into {args.output}")
    if clamped:
        print(f"note: the sampler clamped rho at {clamped} field pixel-steps (the learned field is not monotone in t there)")
    for path, reason in failed:
        print(f"failed: {reason}" if str(path) in reason else f"failed: {path}: {reason}")
    return 1 if failed else 0
