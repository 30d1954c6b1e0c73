"""`--rename FROM:TO`, one flag of `translate` (name each translation for the target modality) and
`evaluate` (pair a prediction named for its input modality with its target): the endings of the input
modality's file names and of the target modality's (BraTS `_t1:_t2`, IXI `-T1:-T2`)."""

from __future__ import annotations

from ..errors import CdtsdeError


def add_rename_flag(parser, purpose: str) -> None:
    parser.add_argument("--rename", metavar="FROM:TO", help=f"{purpose} (BraTS _t1:_t2, IXI -T1:-T2)")


def parse_rename(text: str | None) -> tuple[str, str] | None:
    """"_t1:_t2" -> ("_t1", "_t2"); None for a flag not given."""
    if text is None:
        return None
    rename = tuple(text.split(":"))
    if len(rename) != 2 or not all(rename):
        raise CdtsdeError(f"--rename: expected FROM:TO name endings (e.g. _t1:_t2), got {text!r}")
    return rename
