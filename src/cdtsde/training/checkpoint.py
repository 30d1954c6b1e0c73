"""Checkpoints of any method: `config.json` (format version, package version, method name, what the
method knows about its data, its configuration, its default sampling options and the SHA-256 of the
weights file) beside the weights in `model.safetensors`, as diffusers keeps a config next to its weights.
The weights file's bytes depend only on the weights (`safetensors_bytes`), so identical runs record the same
SHA-256. Loading verifies the checksum and refuses non-finite weights, naming the file.

A checkpoint written before methods had names (no "method" key: the CDTSDE model configuration itself)
loads as CDTSDE.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from .. import __version__
from ..atomic import atomic_path
from ..data.readers import reading_from_record
from ..errors import CdtsdeError
from ..methods import DataInfo, Method, method_class
from ..settings import from_plain, to_plain

FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# the keys of the first format's CDTSDE model configuration that describe the data
LEGACY_DATA_KEYS = ("source_channels", "target_channels", "target_kind", "image_size")


def checkpoint_record(method: Method) -> dict:
    return {"format_version": FORMAT_VERSION, "cdtsde_version": __version__, "method": method.name,
            "data": to_plain(method.data), "config": to_plain(method.config), "sampling": to_plain(method.sampling)}


def check_reading(data: DataInfo) -> None:
    """The readings a checkpoint records are ones `translate` and `evaluate` can rebuild: an unknown kind or
    setting fails when the checkpoint is written or loaded, named, not at its first translation."""
    for where in ("source_reading", "target_reading"):
        if getattr(data, where) is not None:
            reading_from_record(getattr(data, where), f"data.{where}")


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safetensors_bytes(tensors: dict, metadata: dict[str, str]) -> bytes:
    """The safetensors file of `tensors` and `metadata`, with the metadata keys sorted: safetensors keeps the
    metadata in a hash map whose order changes from process to process, so the same weights would otherwise
    give different bytes (and checksums). The format is an 8-byte little-endian header length, the JSON
    header padded with spaces to a multiple of 8 bytes, then the tensor data; the data offsets in the header
    are relative to the data, so rewriting the header leaves them valid."""
    from safetensors.torch import save

    written = memoryview(save(tensors, metadata=metadata))
    length = struct.unpack("<Q", written[:8])[0]
    header = json.loads(bytes(written[8:8 + length]))
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + written[8 + length:]


def check_finite(tensors: dict, where: Path) -> None:
    bad = [key for key, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise CdtsdeError(f"{where}: {len(bad)} tensor(s) hold NaN or infinite values ({', '.join(bad[:3])}"
                          f"{', ...' if len(bad) > 3 else ''}): the model diverged or the file is damaged")


def save_pretrained(method: Method, directory: str | Path, state_dict: dict | None = None) -> Path:
    """Write `model.safetensors` (the given state dict, e.g. EMA weights, or the method's own, without what
    only training needs: `Method.inference_state_dict`), then `config.json` with the weights' SHA-256,
    each atomically. Non-finite weights are refused."""
    check_reading(method.data)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = method.inference_state_dict(state_dict or method.state_dict())
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    check_finite(tensors, directory / WEIGHTS_FILE)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        tmp.write_bytes(safetensors_bytes(tensors, {"format": "pt", "library": "cdtsde", "method": method.name}))
        checksum = file_sha256(tmp)
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps({**checkpoint_record(method), "weights_sha256": checksum}, indent=2))
    return directory


def upgrade_record(record: dict) -> dict:
    """A first-format record (the CDTSDE model configuration) in the current format."""
    if "method" in record:
        return record
    return {"format_version": 1, "method": "cdtsde",
            "data": {key: record[key] for key in LEGACY_DATA_KEYS if key in record},
            "config": {key: value for key, value in record.items() if key not in LEGACY_DATA_KEYS}, "sampling": {}}


def method_from_record(record: dict, where: str) -> Method:
    """Build the (untrained) method a checkpoint record describes."""
    record = upgrade_record(record)
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise CdtsdeError(f"{where}: written in checkpoint format {record['format_version']} by a newer cdtsde "
                          f"({record.get('cdtsde_version')}); this version reads up to format {FORMAT_VERSION}")
    cls = method_class(record["method"])
    try:
        config = from_plain(cls.config_class, record.get("config"), "model")
        # a record without nifti_orientation predates RAS reading: its model saw volumes in their stored directions
        data = from_plain(DataInfo, {"nifti_orientation": "axes", **(record.get("data") or {})}, "data")
        check_reading(data)
        method = cls(config, data)
        method.sampling = from_plain(cls.sampling_class, record.get("sampling"), "sampling")
    except (ValueError, TypeError, CdtsdeError) as exc:
        raise CdtsdeError(f"{where}: invalid {record['method']} configuration ({exc})") from exc
    return method


def load_pretrained(path: str | Path, device: str | torch.device = "cpu", method: str | None = None) -> Method:
    """Load a method saved by `save_pretrained`; `path` is the model directory or a training run directory
    (its `model/` sub-directory is used). `method` runs the checkpoint as another method that shares its
    configuration and weights (`Method.runs_checkpoints_of`: a prior's checkpoint as `sdedit`)."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "model" / CONFIG_FILE).is_file():
        path = path / "model"
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for required in (config_path, weights_path):
        if not required.is_file():
            raise CdtsdeError(f"{path}: not a cdtsde checkpoint ({required.name} missing)")
    try:
        record = json.loads(config_path.read_text())
    except ValueError as exc:
        raise CdtsdeError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise CdtsdeError(f"{config_path}: expected a JSON object")
    loaded = method_from_record(record, str(config_path))
    recorded = record.get("weights_sha256")  # absent in checkpoints written before checksums
    if recorded is not None and file_sha256(weights_path) != recorded:
        raise CdtsdeError(f"{weights_path}: does not match the SHA-256 that {config_path.name} records (the file is "
                          f"damaged, was replaced, or its write was interrupted); re-copy or re-export the model")
    try:
        weights = load_file(str(weights_path))
    except Exception as exc:  # safetensors header errors
        raise CdtsdeError(f"{weights_path}: cannot load weights ({exc})") from exc
    check_finite(weights, weights_path)
    try:
        missing, unexpected = loaded.load_state_dict(weights, strict=False)
    except Exception as exc:  # mis-shaped tensors
        raise CdtsdeError(f"{weights_path}: cannot load weights ({exc})") from exc
    missing = [key for key in missing if not key.startswith(loaded.training_state_prefixes)]
    if missing or unexpected:
        problems = [f"missing {', '.join(missing[:5])}" if missing else "", f"unexpected {', '.join(unexpected[:5])}"
                    if unexpected else ""]
        raise CdtsdeError(f"{weights_path}: cannot load weights (not this {loaded.name} configuration's tensors: "
                          f"{'; '.join(p for p in problems if p)})")
    if method is not None and method != loaded.name:
        try:
            loaded = method_class(method).from_method(loaded)
        except CdtsdeError as exc:
            raise CdtsdeError(f"{path}: a {loaded.name} checkpoint; {exc}") from exc
    return loaded.to(device).eval()
