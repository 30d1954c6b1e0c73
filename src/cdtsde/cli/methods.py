"""`cdtsde methods`: every registered method with the data it needs and what it is."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("methods", help="list the registered translation methods")
    parser.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from ..methods import method_classes

    classes = method_classes()
    width = max(len(cls.name) for cls in classes)
    for cls in classes:
        options = ", ".join(f.name for f in dataclasses.fields(cls.sampling_class)) or "none"
        print(f"{cls.name:{width}s}  {cls.data_kind:11s}  {cls.description}  (sampling options: {options})")
    return 0
