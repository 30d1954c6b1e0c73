"""Tiled translation (cdtsde.tiling, cdtsde.translate.translate_tiled) and out-of-memory errors that name
the batch (cdtsde.memory)."""

import numpy as np
import pytest
import torch
from helpers import tiny_model

from cdtsde.draws import ItemGenerators, mixed_seed
from cdtsde.memory import OutOfMemory, is_out_of_memory
from cdtsde.methods import DataInfo
from cdtsde.methods.identity import Identity, IdentityConfig
from cdtsde.tiling import TileGrid, blend_weights, tiled, window_count, window_starts
from cdtsde.translate import TILE_DRAWS, Tiling, VolumeNoise, translate_slices, translate_tiled

# the network's convolutions sum in another order for another batch size (oneDNN): a window's pixels
# agree to float32 rounding across batch compositions, not bit for bit
BATCH_TOLERANCE = 1e-5


def native_cdtsde(channels=1, size=16):
    """A tiny CDTSDE with perturbed weights (untrained, its zero-initialised output layer would make every
    translation 0 whatever the noise)."""
    model = tiny_model(channels, channels, size=size)
    model.data.training_scale = "native"
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def identity(channels=3, size=16):
    return Identity(IdentityConfig(), DataInfo(source_channels=channels, target_channels=channels, image_size=size,
                                                training_scale="native"))


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
@pytest.mark.parametrize("height,width,window,overlap", [(40, 40, 16, 4), (41, 57, 16, 5), (37, 23, 16, 0)])
def test_constant_windows_blend_to_the_constant_exactly(blend, height, width, window, overlap):
    """Every pixel's weights are normalised by their sum: windows all holding c give back c, bit for bit,
    and windows of ones blend to ones (the weights sum to one everywhere)."""
    image = torch.zeros(2, height, width)
    for value in (0.1, 1.0, -0.7372549):
        c = torch.tensor(value, dtype=torch.float32)
        out = tiled(lambda windows, origins, c=c: {"x": torch.full_like(windows, c)}, image, window, overlap, 3, blend)["x"]
        assert out.shape == (2, height, width)
        assert torch.equal(out, torch.full_like(out, c))


@pytest.mark.parametrize("height,width", [(40, 40), (40, 52), (41, 63), (16, 70)])
def test_identity_through_tiling_returns_the_input_exactly(height, width):
    """16 px windows with overlap 4 (stride 12): 40 = 16 + 2 x 12 is a multiple of the stride, 41 and 63
    are not (the last window sits flush with the border and overlaps more)."""
    method = identity()
    sources = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for blend in ("gaussian", "linear"):
        out = translate_tiled(method, sources, tiling=Tiling(overlap=0.25, batch=3, blend=blend)).images
        assert torch.equal(out, sources)
    slices = ((sources.permute(0, 2, 3, 1) + 1) / 2).numpy()
    whole = translate_slices(method, slices, resize_to_training=False)
    tiled_slices = translate_slices(method, slices, tiling=Tiling(batch=5))
    np.testing.assert_array_equal(tiled_slices.mean, whole.mean)


def test_window_grid_covers_the_image_with_the_overlap():
    assert window_starts(40, 16, 12) == [0, 12, 24]
    assert window_starts(41, 16, 12) == [0, 12, 24, 25]
    assert window_starts(16, 16, 12) == [0] and window_starts(10, 16, 12) == [0]
    grid = TileGrid(41, 70, 16, 4)
    origins = grid.origins()
    assert len(origins) == window_count(41, 70, 16, 4) == 4 * 6
    assert origins == sorted(origins)  # raster order
    covered = torch.zeros(41, 70, dtype=torch.int64)
    for top, left in origins:
        covered[top:top + 16, left:left + 16] += 1
    assert covered.min() >= 1
    tops = sorted({top for top, _ in origins})
    assert all(b - a <= 12 for a, b in zip(tops, tops[1:]))  # neighbours share at least the overlap
    with pytest.raises(ValueError):
        TileGrid(40, 40, 16, 16)
    # weights: positive everywhere, largest in the middle; the ramp is flat outside the overlap
    for blend in ("gaussian", "linear"):
        weights = blend_weights(16, 16, blend, 4)
        assert weights.min() > 0 and weights[7:9, 7:9].min() == weights.max()
    ramp = blend_weights(16, 16, "linear", 4)[8]
    assert torch.allclose(ramp[:5], torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0], dtype=torch.float64))
    assert (ramp[4:12] == 1).all()


def test_zero_overlap_equals_translating_the_windows_one_by_one():
    """An image a multiple of the window, no overlap: every pixel comes from one window, translated with
    its own generator (seed, image index, origin, sample)."""
    torch.manual_seed(0)
    method = native_cdtsde()
    sources = torch.rand(1, 1, 32, 48) * 2 - 1
    out = translate_tiled(method, sources, seed=3, tiling=Tiling(overlap=0, batch=4)).images
    for top in (0, 16):
        for left in (0, 16, 32):
            generator = ItemGenerators(3, 0, TILE_DRAWS, [mixed_seed(top, left, 0)])
            alone = method.translate(sources[:, :, top:top + 16, left:left + 16], generator=generator).images
            torch.testing.assert_close(out[:, :, top:top + 16, left:left + 16], alone, rtol=0, atol=BATCH_TOLERANCE)


def test_stochastic_tiled_output_does_not_depend_on_the_window_batch():
    torch.manual_seed(0)
    method = native_cdtsde()
    sources = torch.rand(2, 1, 40, 41) * 2 - 1
    sampling = method.sampling_options(steps=3, gamma=1.0)
    one = translate_tiled(method, sources, sampling, seed=5, samples=2, tiling=Tiling(batch=1), maps=True)
    many = translate_tiled(method, sources, sampling, seed=5, samples=2, tiling=Tiling(batch=7), maps=True)
    torch.testing.assert_close(one.images, many.images, rtol=0, atol=BATCH_TOLERANCE)
    torch.testing.assert_close(one.std, many.std, rtol=0, atol=BATCH_TOLERANCE)
    assert one.std.shape == (2, 1, 40, 41) and one.std.mean() > 0.01  # two different samples per window
    assert set(one.maps) == set(method.preview_maps(sources[:, :, :16, :16])) and len(one.maps) == 3
    for name, value in one.maps.items():  # Lambda_t stitched alike
        assert value.shape == (2, 1, 40, 41)
        torch.testing.assert_close(value, many.maps[name], rtol=0, atol=BATCH_TOLERANCE)
    other_seed = translate_tiled(method, sources, sampling, seed=6, tiling=Tiling(batch=7)).images
    assert not torch.allclose(other_seed, many.images)


def test_tiled_volume_noise_acts_window_by_window_across_the_slices():
    """Three equal slices of 40 x 41 px in 16 px windows: with shared noise every slice translates alike
    (each window draws as the windows at its place in the other slices); correlated noise does not, and its
    slices do not depend on the window batch either."""
    method = native_cdtsde()
    sources = (torch.rand(1, 1, 40, 41, generator=torch.Generator().manual_seed(0)) * 2 - 1).repeat(3, 1, 1, 1)
    sampling = method.sampling_options(steps=3, gamma=1.0)

    def translated(kind, batch=7):
        return translate_tiled(method, sources, sampling, seed=5, tiling=Tiling(batch=batch),
                               noise=VolumeNoise(kind, 0.8)).images

    shared, correlated = translated("shared"), translated("correlated")
    for index in (1, 2):
        torch.testing.assert_close(shared[index], shared[0], rtol=0, atol=BATCH_TOLERANCE)
        assert not torch.allclose(correlated[index], correlated[0], atol=1e-3)
    torch.testing.assert_close(translated("correlated", batch=2), correlated, rtol=0, atol=BATCH_TOLERANCE)


def test_an_input_smaller_than_the_window_is_translated_whole():
    torch.manual_seed(0)
    method = native_cdtsde()
    sources = torch.rand(1, 1, 12, 16) * 2 - 1
    out = translate_tiled(method, sources, seed=2).images
    alone = method.translate(sources, generator=ItemGenerators(2, 0, TILE_DRAWS, [mixed_seed(0, 0, 0)])).images
    torch.testing.assert_close(out, alone, rtol=0, atol=BATCH_TOLERANCE)
    slices = ((sources.permute(0, 2, 3, 1) + 1) / 2).numpy()
    untouched = translate_slices(method, slices, seed=2)
    np.testing.assert_array_equal(translate_slices(method, slices, seed=2, tiling=Tiling()).mean, untouched.mean)


@pytest.mark.parametrize("failure", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                     RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                  "can't allocate memory: you tried to allocate 9000000000 bytes"),
                                     MemoryError()])
def test_translation_out_of_memory_names_the_window_batch(monkeypatch, failure):
    method = identity()
    assert is_out_of_memory(failure)

    def allocation_fails(*args, **kwargs):
        raise failure

    monkeypatch.setattr(method, "generate", allocation_fails)
    with pytest.raises(OutOfMemory, match=r"batch of 4 window\(s\) of 16 px.*lower the tile batch \(--tile-batch, now 4\)"):
        translate_tiled(method, torch.zeros(1, 3, 40, 40), tiling=Tiling(batch=4))
    with pytest.raises(OutOfMemory, match=r"batch of 2 slice\(s\).*--batch-size \(now 2\)"):
        translate_slices(method, np.zeros((3, 8, 8, 3), np.float32), batch_size=2)
    assert not is_out_of_memory(RuntimeError("shapes do not match"))


GEO_TAGS = [(33550, 12, 3, (10.0, 10.0, 0.0), True),
            (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5800000.0, 0.0), True),
            (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]


def georeference(path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return {tag.code: tag.value for tag in tif.pages[0].tags.values() if tag.code in {t[0] for t in GEO_TAGS}}


def test_cli_tiles_a_multiband_16_bit_geotiff_keeping_format_and_georeference(tmp_path, monkeypatch, capsys):
    """A model trained on native-scale 16 px tiles tiles a larger scene by default; the window batch does
    not change the result; the output keeps 16 bits, three bands and the scene's georeference, and so does
    the standard-deviation map; `--tiling off` is the one pass over the whole scene; running out of memory
    stops the run (exit 2) naming the window batch."""
    import tifffile

    from cdtsde.cli import main
    from cdtsde.methods.cdtsde import CDTSDE
    from cdtsde.training import save_pretrained

    save_pretrained(native_cdtsde(channels=3), tmp_path / "model")
    scene = (np.random.default_rng(0).random((40, 37, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "scene.tif", scene, extratags=GEO_TAGS, photometric="rgb")

    def translate(output, *flags):
        assert main(["translate", "--checkpoint", str(tmp_path / "model"), "--input", str(tmp_path / "scene.tif"),
                     "--output", str(tmp_path / output), "--steps", "2", *flags]) == 0
        return tifffile.imread(tmp_path / output / "scene.tif")

    first = translate("a", "--tile-batch", "1", "--samples", "2")
    second = translate("b", "--tile-batch", "5", "--samples", "2")
    assert first.dtype == np.uint16 and first.shape == (40, 37, 3)
    assert np.abs(first.astype(np.int64) - second).max() <= 2  # 16-bit rounding of BATCH_TOLERANCE
    for name in ("scene.tif", "scene_std.tif"):
        assert georeference(tmp_path / "a" / name) == georeference(tmp_path / "scene.tif")
    assert tifffile.imread(tmp_path / "a" / "scene_std.tif").shape == (40, 37)
    whole = translate("c", "--tiling", "off", "--samples", "2")
    assert whole.shape == first.shape and np.abs(whole.astype(np.int64) - first).max() > 100

    def allocation_fails(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")

    monkeypatch.setattr(CDTSDE, "generate", allocation_fails)
    assert main(["translate", "--checkpoint", str(tmp_path / "model"), "--input", str(tmp_path / "scene.tif"),
                 "--output", str(tmp_path / "d"), "--tile-batch", "6"]) == 2
    error = capsys.readouterr().err
    assert "out of memory translating a batch of 6 window(s) of 16 px (" in error
    assert "can't allocate memory" in error and "lower the tile batch (--tile-batch, now 6)" in error


def test_training_out_of_memory_names_the_batch_size(tmp_path, monkeypatch):
    """A step whose allocation fails ends with an error naming train.batch_size (a CdtsdeError: the CLI
    exits with 2); a batch whose measured activations exceed the memory available is refused before the
    first update, and the trial that measures them leaves the run unchanged."""
    from helpers import InversionPairs

    import cdtsde.training.loop as loop
    from cdtsde.errors import CdtsdeError
    from cdtsde.methods.cdtsde import CDTSDE
    from cdtsde.training import TrainConfig, train

    def settings(**overrides):
        return TrainConfig(**{"max_steps": 2, "batch_size": 4, "sample_every": 0, "checkpoint_every": 2, "seed": 1,
                              **overrides})

    # the trial leaves the run unchanged: the same losses as a run without it (no memory figure known)
    measured = train(tiny_model(), InversionPairs(n=8), settings(), tmp_path / "measured", progress=False)
    monkeypatch.setattr(loop, "available_memory", lambda device: None)
    unmeasured = train(tiny_model(), InversionPairs(n=8), settings(), tmp_path / "unmeasured", progress=False)
    assert measured["losses"] == unmeasured["losses"]

    monkeypatch.setattr(loop, "available_memory", lambda device: 2**20)  # 1 MiB left
    with pytest.raises(OutOfMemory, match=r"train.batch_size 64 needs about .* GiB for its activations alone "
                                          r"\(.* MiB per item, measured on one\).*lower train.batch_size \(now 64\)"):
        train(tiny_model(), InversionPairs(n=8), settings(batch_size=64), tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused" / "state.pt").exists()

    monkeypatch.setattr(loop, "available_memory", lambda device: None)
    original = CDTSDE.forward

    def fails_at_the_second_step(self, batch, *args, **kwargs):
        if len(self.seen) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        self.seen.append(1)
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(CDTSDE, "forward", fails_at_the_second_step)
    method = tiny_model()
    method.seen = []
    with pytest.raises(CdtsdeError, match=r"out of memory in training step 1 at train.batch_size 4 \(CUDA out of "
                                          r"memory.*\); lower train.batch_size \(now 4\)"):
        train(method, InversionPairs(n=8), settings(), tmp_path / "failed", progress=False)


def scene_files(folder):
    """The same 40 x 37 RGB scene as files `opened_rows` reads in each of its ways: a compressed tiled
    16-bit GeoTIFF (`TiffRows`), an uncompressed float32 one in planes (a memory map), an 8-bit PNG
    (decoded whole)."""
    import tifffile
    from PIL import Image

    values = np.random.default_rng(0).random((40, 37, 3))
    tifffile.imwrite(folder / "tiles.tif", (values * 65535).astype(np.uint16), extratags=GEO_TAGS,
                     photometric="rgb", compression="zlib", tile=(16, 16))
    tifffile.imwrite(folder / "planes.tif", np.moveaxis(values, -1, 0).astype(np.float32), extratags=GEO_TAGS,
                     photometric="minisblack", planarconfig="separate")
    Image.fromarray((values * 255).astype(np.uint8)).save(folder / "scene.png")
    return [folder / name for name in ("tiles.tif", "planes.tif", "scene.png")]


@pytest.mark.parametrize("samples", [1, 2])
def test_a_scene_stitched_on_disk_equals_the_translation_in_memory(tmp_path, samples):
    """Forced through `translate_scene` (read by rows, blended into files, written tile by tile), a
    small scene's translation and standard-deviation map equal the in-memory tiled translation bit for bit,
    georeference included; the input is never read more than a window's rows at a time and the temporary
    folder of the blended files is gone afterwards."""
    import tifffile

    import cdtsde.translate as translate
    from cdtsde.data.readers import UnitReader
    from cdtsde.imagefiles import opened_rows
    from cdtsde.translate import translate_file

    method = native_cdtsde(channels=3)
    method.data.source_reading = UnitReader().record()  # as the training data record it
    sampling = method.sampling_options(steps=2)
    read_rows = []

    class Spied:
        def __init__(self, rows):
            self.rows, self.shape = rows, rows.shape

        def __getitem__(self, index):
            read_rows.append(len(range(*index.indices(self.shape[0]))))
            return self.rows[index]

    def spied_rows(path):
        from contextlib import contextmanager

        @contextmanager
        def opened():
            with opened_rows(path) as (rows, meta):
                yield Spied(rows), meta
        return opened()

    for path in scene_files(tmp_path):
        read_rows.clear()
        memory = translate_file(method, path, tmp_path / "memory", tiling=Tiling(batch=4), sampling=sampling,
                                samples=samples)[0]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(translate, "opened_rows", spied_rows)
            disk = translate_file(method, path, tmp_path / "disk", tiling=Tiling(batch=4, on_disk_above=0),
                                  sampling=sampling, samples=samples)[0]
        assert [p.name for p in disk] == [p.name for p in memory] and len(disk) == samples
        assert 0 < max(read_rows) <= 16
        for ours, theirs in zip(disk, memory):
            if ours.suffix == ".tif":
                np.testing.assert_array_equal(tifffile.imread(ours), tifffile.imread(theirs))
                assert georeference(ours) == georeference(theirs)
                assert georeference(ours) == (georeference(path) if path.suffix == ".tif" else {})
            else:
                assert ours.read_bytes() == theirs.read_bytes()
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == sorted(
        p.name for p in (tmp_path / "memory").iterdir())  # no temporary folder left


@pytest.mark.parametrize("names", [("B4", "B3", "B2"), None], ids=["recorded", "unrecorded"])
def test_a_scene_is_named_and_its_bands_described_as_a_translation_in_memory(tmp_path, names):
    """`translate_scene` writes what `write_translation` writes: the bands named by the checkpoint's target
    band names, and by no names (never the input's) without them; the files named for the target modality
    with `rename`, the standard-deviation map included."""
    import tifffile

    from cdtsde.imagefiles import GDAL_METADATA, described_bands
    from cdtsde.translate import translate_file, translate_scene

    def descriptions(path):
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(GDAL_METADATA)
            return {} if tag is None else described_bands(str(tag.value))

    method = native_cdtsde(channels=3)
    method.data.target_band_names = names
    input_names = "".join(f'<Item name="DESCRIPTION" sample="{band}" role="description">{name}</Item>'
                          for band, name in enumerate(("VV", "VH", "ratio")))
    scene = tmp_path / "roi_s1.tif"
    values = np.random.default_rng(0).random((3, 40, 37)).astype(np.float32)
    tifffile.imwrite(scene, values, photometric="minisblack", planarconfig="separate",
                     extratags=GEO_TAGS + [(GDAL_METADATA, 2, 0, f"<GDALMetadata>{input_names}</GDALMetadata>", True)])
    options = {"sampling": method.sampling_options(steps=1), "samples": 2, "rename": ("_s1", "_s2")}
    written = translate_scene(method, scene, tmp_path / "disk", tiling=Tiling(batch=4), **options)[0]
    memory = translate_file(method, scene, tmp_path / "memory", tiling=Tiling(batch=4), **options)[0]
    assert [path.name for path in written] == [path.name for path in memory] == ["roi_s2.tif", "roi_s2_std.tif"]
    assert descriptions(written[0]) == descriptions(memory[0]) == dict(enumerate(names or ()))
    assert descriptions(written[1]) == descriptions(memory[1]) == {0: "standard deviation across samples"}
    np.testing.assert_array_equal(tifffile.imread(written[0]), tifffile.imread(memory[0]))


def test_a_failed_scene_leaves_neither_output_nor_temporaries(tmp_path, monkeypatch, capsys):
    """A translation that fails midway (here: out of memory in the third window batch) removes its blended
    files and writes nothing; with progress on, the bar counts windows. A disk without room for the
    blended files is refused before any work; the folder of them a killed run leaves is removed when the
    outputs are checked."""
    import shutil

    from cdtsde.errors import CdtsdeError
    from cdtsde.methods.cdtsde import CDTSDE
    from cdtsde.translate import SCENE_TEMPORARIES, check_outputs, translate_file

    method = native_cdtsde(channels=3)
    path = scene_files(tmp_path)[0]
    usage = shutil.disk_usage(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda folder: usage._replace(free=40 * 37 * 4 * 3 - 1))
        with pytest.raises(CdtsdeError, match=r"needs about 0 MiB of temporary files in .*, 0 MiB are free"):
            translate_file(method, path, tmp_path / "out", tiling=Tiling(on_disk_above=0))
    original, batches = CDTSDE.translate, []

    def fails_third(self, *args, **kwargs):
        batches.append(1)
        if len(batches) == 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CDTSDE, "translate", fails_third)
    with pytest.raises(OutOfMemory, match="lower the tile batch"):
        translate_file(method, path, tmp_path / "out", tiling=Tiling(batch=2, on_disk_above=0),
                       sampling=method.sampling_options(steps=1), progress=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
    assert "windows:" in capsys.readouterr().err
    killed = tmp_path / "out" / f"{SCENE_TEMPORARIES}x1y2"  # what a killed run leaves
    killed.mkdir()
    (killed / "images.f32").write_bytes(b"0" * 64)
    assert check_outputs([path], tmp_path / "out") == [path] and not killed.exists()


def test_a_row_file_reads_back_what_was_written_and_tiles_into_it_equal_tiles_in_memory(tmp_path):
    """`RowFile` stores (C, H, W) float32 rows in a file; `tiled` blending into it gives the tensor it
    gives in memory, bit for bit."""
    from cdtsde.tiling import RowFile

    values = torch.rand(2, 30, 21, generator=torch.Generator().manual_seed(3))
    rows = RowFile(tmp_path / "rows.f32", (2, 30, 21))
    for top in (0, 7, 18, 26):  # overlapping bands of 11 rows
        rows[:, top:top + 11] = values[:, top:top + 11]
    for channel, top, bottom, left, right in [(slice(None), 0, 30, 0, 21), (1, 5, 9, 3, 20), (0, 28, 30, 0, 1)]:
        assert torch.equal(rows[channel, top:bottom, left:right], values[channel, top:bottom, left:right])
    rows.close()
    image = torch.rand(3, 41, 57, generator=torch.Generator().manual_seed(4))

    def function(windows, origins):
        return {"x": windows.flip(1) * 0.5}

    memory = tiled(function, image, 16, 5, 3)["x"]
    disk = tiled(function, image, 16, 5, 3, storage=lambda name, channels: RowFile(tmp_path / name, (channels, 41, 57)))
    assert torch.equal(disk["x"][:, 0:41, 0:57], memory)
