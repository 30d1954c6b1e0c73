"""The data spec as typed dataclasses (cdtsde.data.specs): the settings conversion it relies on (Literal
choices, Annotated rules, fixed-length lists, required keys), every key's refusal by name, the defaults
the builders now take from the classes, and docs/data.md listing exactly each kind's keys."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Annotated, Literal

import pytest
from helpers import REPO

from cdtsde.data import build_dataset
from cdtsde.data.specs import DATA_SPECS, DataSpec, ElMasksSpec, ProceduralSpec, data_spec
from cdtsde.errors import CdtsdeError
from cdtsde.settings import Rule, _hints, from_plain, to_plain

DOCS = REPO / "docs" / "data.md"
REQUIRED = {"root": "data", "list": "pairs.txt"}  # a value for each key a kind cannot do without


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example:
    name: str
    mode: Literal["fast", "exact"] = "fast"
    level: Literal[0, 1] = 0
    odd: Annotated[int, Rule("an odd integer", lambda value: value % 2 == 1)] = 1
    window: tuple[float, float] = (0.0, 1.0)
    limit: Annotated[int, Rule("an integer >= 1", lambda value: value >= 1)] | None = None


@pytest.mark.parametrize(("plain", "message"), [
    ({}, "example.name is required"),
    ({"name": "a", "mode": "slow"}, "example.mode must be one of 'fast', 'exact', got 'slow'"),
    ({"name": "a", "level": True}, "example.level must be one of 0, 1, got True"),  # a bool is no choice of 1
    ({"name": "a", "odd": 4}, "example.odd must be an odd integer, got 4"),
    ({"name": "a", "odd": "3"}, "example.odd must be an odd integer, got '3'"),  # the rule says the whole form
    ({"name": "a", "window": [0, 1, 2]}, r"example.window must be a list of 2 items, got \[0, 1, 2\]"),
    ({"name": "a", "window": [0, "x"]}, r"example.window\[1\] must be a number, got 'x'"),
    ({"name": "a", "limit": 0}, "example.limit must be an integer >= 1, got 0"),  # not "matches none of"
    ({"name": "a", "speed": 1}, "unknown example option.s.: speed; expected level, limit, mode, name, odd, window"),
])
def test_settings_refuse_choices_rules_lengths_and_missing_keys_by_name(plain, message):
    with pytest.raises(ValueError, match=message):
        from_plain(Example, plain, "example")


def test_settings_accept_and_convert_what_the_annotations_allow():
    built = from_plain(Example, {"name": "a", "mode": "exact", "level": 1, "odd": 3, "window": [-1, 2],
                                 "limit": None}, "example")
    assert built == Example(name="a", mode="exact", level=1, odd=3, window=(-1.0, 2.0))
    assert isinstance(built.window[0], float)
    assert from_plain(Example, to_plain(built), "example") == built


def spec_fields(cls) -> dict:
    return {field.name: _hints(cls)[field.name] for field in dataclasses.fields(cls) if field.name != "kind"}


def plain_type(annotation):
    """int or float when a setting is a number (behind Annotated and `| None`), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else None
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation if annotation in (int, float) else None


def minimal(kind: str) -> dict:
    cls = DATA_SPECS[kind]
    required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING} - {"kind"}
    spec = {"kind": kind, **{key: REQUIRED[key] for key in required}}
    return {**spec, "list": "pairs.txt"} if kind == "list-file" else spec


@pytest.mark.parametrize("kind", DATA_SPECS)
def test_every_numeric_key_of_every_kind_refuses_minus_one_nan_and_a_string_by_name(kind):
    checked = 0
    for key, annotation in spec_fields(DATA_SPECS[kind]).items():
        number = plain_type(annotation)
        if number is None:
            continue
        for bad in (-1, "1", *([float("nan")] if number is float else [])):
            with pytest.raises(CdtsdeError, match=rf"^data\.{key} must be .*, got {re.escape(repr(bad))}"):
                data_spec({**minimal(kind), key: bad})
            checked += 1
    assert checked >= 3  # size, seed-like counts, fractions: every kind has numbers


@pytest.mark.parametrize("kind", DATA_SPECS)
def test_every_kind_refuses_an_unknown_key_and_a_missing_required_one(kind):
    with pytest.raises(CdtsdeError, match=r"unknown data option\(s\): sise; expected .*\bsize\b"):
        data_spec({**minimal(kind), "sise": 64})
    for key in set(minimal(kind)) - {"kind"}:
        with pytest.raises(CdtsdeError, match=rf"data\.{key}\b.* is required"):
            data_spec({k: v for k, v in minimal(kind).items() if k != key})


def test_a_spec_without_kind_or_with_an_unknown_kind_names_the_kinds():
    with pytest.raises(CdtsdeError, match="data must be a mapping with a 'kind' key, one of paired-folder"):
        data_spec({"root": "x"})
    with pytest.raises(CdtsdeError, match=r"data.kind must be one of .*image-folder, got 'folder'"):
        build_dataset({"kind": "folder"}, "train")


def test_el_masks_defaults_read_the_pv_el_cracks_layout_and_a_key_given_replaces_its_default():
    spec = data_spec({"kind": "el-masks", "root": "pv"})
    assert isinstance(spec, ElMasksSpec) and (spec.source_dir, spec.target_dir) == ("img", "ann")
    assert spec.class_count == 5 and (spec.split_dirs.train, spec.split_dirs.val, spec.split_dirs.test) == (
        "train", "val", "val")
    assert data_spec({"kind": "el-masks", "root": "pv", "classes": 2}).class_count == 2
    assert data_spec({"kind": "paired-folder", "root": "p"}).split_dirs is None  # train/ val/ test/ if present


def test_a_typed_spec_builds_the_same_dataset_as_its_plain_form():
    plain = {"kind": "procedural", "task": "el-cell", "n": 30, "n_test": 4, "size": 16, "seed": 3, "hflip": False}
    typed = ProceduralSpec(kind="procedural", task="el-cell", n=30, n_test=4, size=16, seed=3, hflip=False)
    assert data_spec(plain) == typed
    for split, count in (("train", 30), ("val", 3), ("test", 4)):  # n_val defaults to n/10
        from_plain_set, typed_set = build_dataset(plain, split), build_dataset(typed, split)
        assert len(from_plain_set) == len(typed_set) == count
        assert (from_plain_set[count - 1]["target"] == typed_set[count - 1]["target"]).all()
        assert from_plain_set[0]["name"] == typed_set[0]["name"]


def documented_keys(cells: str) -> list[str]:
    """The keys a table cell names: backticked identifiers, alone or as `key: value`."""
    return re.findall(r"`([a-z_][a-z0-9_]*)(?::[^`]*)?`", cells)


def docs_tables() -> tuple[list[str], dict[str, list[str]]]:
    """(the keys of the 'Keys for every kind' table, {kind: keys of its row}) from docs/data.md; a row
    "as `other`" takes the other kind's keys too."""
    text = DOCS.read_text()
    common_section = text.split("## Keys for every kind")[1].split("## Kinds")[0]
    common = [key for line in common_section.splitlines() if line.startswith("| `")
              for key in documented_keys(line.split("|")[1])]
    rows = {}
    for line in text.split("## Kinds")[1].strip().split("\n\n")[0].splitlines():
        if not line.startswith("| `"):
            continue
        cells = line.split("|")
        for kind in re.findall(r"`([a-z-]+)`", cells[1]):
            rows[kind] = documented_keys(cells[2])
            inherited = re.match(r"\s*as `([a-z-]+)`", cells[2])
            if inherited:
                rows[kind] += rows[inherited.group(1)]
    return common, rows


def test_the_docs_list_exactly_the_keys_of_every_kind():
    """docs/data.md cannot drift from the dataclasses: the common table lists DataSpec's keys, each kind's
    row every key of its class, and no row names a key of another kind that its own kind lacks."""
    common, rows = docs_tables()
    assert sorted(common) == sorted(spec_fields(DataSpec))
    assert set(rows) == set(DATA_SPECS) | {"unpaired"}  # unpaired wraps two specs (cdtsde.run)
    every_key = {key for cls in DATA_SPECS.values() for key in spec_fields(cls)}
    for kind, cls in DATA_SPECS.items():
        keys = set(spec_fields(cls)) - set(common)
        assert keys <= set(rows[kind]), f"docs/data.md: the {kind} row lacks {sorted(keys - set(rows[kind]))}"
        foreign = (set(rows[kind]) & every_key) - set(spec_fields(cls))
        assert not foreign, f"docs/data.md: the {kind} row names {sorted(foreign)}, which {kind} does not take"
