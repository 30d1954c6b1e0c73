"""`cdtsde train`: train a method from a YAML run configuration."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a translation method from a YAML configuration")
    parser.add_argument("--config", required=True, type=Path,
                        help="run configuration (YAML: method, data, model, sampling, train)")
    parser.add_argument("--method", help="a registered method (`cdtsde methods`); default: the configuration's, "
                                         "else cdtsde")
    parser.add_argument("--output", type=Path, default=None, help="run directory (default: runs/<config name>)")
    parser.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in --output and start again (without it, an existing run is refused)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import contextlib

    from ..locks import folder_lock
    from ..training.run_directory import launched_rank_zero

    output = args.output or Path("runs") / args.config.stem
    # under DDP every rank runs this command; rank 0 holds the folder and reports
    with folder_lock(output, "cdtsde train") if launched_rank_zero() else contextlib.nullcontext():
        return train_into(args, output)


def train_into(args, output: Path) -> int:
    from ..errors import CdtsdeError
    from ..run import build_run, load_run_config, validation_data
    from ..training import train
    from ..training.run_directory import launched_rank_zero
    from ..visualize import previews_of

    speak = launched_rank_zero()
    if not args.resume and args.config.resolve() == (output / "config.yaml").resolve():
        raise CdtsdeError(f"--config {args.config}: is the file the run writes its configuration to in --output "
                          f"{output}; keep your configuration outside the run folder (or choose another --output)")
    config = load_run_config(args.config)
    if args.max_steps is not None:
        config.setdefault("train", {})["max_steps"] = args.max_steps
    if args.method:
        config["method"] = args.method
    method, train_set, preview_set, train_config = build_run(config, base_dir=args.config.resolve().parent)
    for dataset in (train_set, preview_set):
        for path, reason in getattr(dataset, "skipped", []) if speak else []:
            print(f"skipped {path}: {reason}")
    if speak:
        print(f"training {method.name} on {len(train_set)} items -> {output}")
    validation = (validation_data(method, train_set, preview_set, config["data"])
                  if train_config.validation is not None else None)
    result = train(method, train_set, train_config, output, resume=args.resume, preview=previews_of(preview_set),
                   run_config=config, overwrite=args.overwrite, validation=validation)
    losses = result["losses"]
    if result.get("rank", 0) != 0:
        return 0
    if "best_step" in result:
        best = "none" if result["best_step"] is None else f"{result['best_value']:.6g} after step {result['best_step']}"
        print(f"stopped at step {result['step']}: {result['stopped']}; best {result['monitor']}: {best} "
              f"(weights in {output / 'model'}, the last in {output / 'last'})")
    elif losses:
        print(f"step {result['step']}: loss {losses[-1]:.4f} ({result['seconds']:.1f} s); weights in {output / 'model'}")
    else:
        print(f"{method.name} has nothing to train; model in {output / 'model'}")
    return 0
