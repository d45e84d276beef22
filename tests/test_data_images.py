"""Image folders and image-shaped arrays: layout, labels, size, colour, cache, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit.data as data_module
import vaekit.data.image_folder as image_folder_module
from vaekit.config import DataConfig
from vaekit.data import load_data
from vaekit.errors import VaekitError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def save(path: Path, pixels: np.ndarray | tuple, size: tuple[int, int] = (6, 4), mode: str = "RGB") -> None:
    """Write an image: an array, or one colour filling a (width, height) image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels) if isinstance(pixels, np.ndarray) else Image.new(mode, size, pixels)
    image.save(path)


def folder_of(tmp_path: Path, layout: dict[str, tuple]) -> Path:
    """A folder with one image per entry: relative path -> colour."""
    root = tmp_path / "images"
    for relative, colour in layout.items():
        save(root / relative, colour)
    return root


def load(folder: Path, **options) -> data_module.Splits:
    return load_data(DataConfig(data=str(folder), **options))


def all_examples(splits: data_module.Splits) -> tuple[torch.Tensor, torch.Tensor | None]:
    parts = [splits[name] for name in ("train", "valid", "test")]
    y = None if parts[0].y is None else torch.cat([p.y for p in parts])
    return torch.cat([p.x for p in parts]), y


def test_class_folders_become_sorted_labels(tmp_path: Path, isolated_cache: Path) -> None:
    layout = {f"red/{i}.png": RED for i in range(6)} | {f"blue/{i}.png": BLUE for i in range(4)}
    layout |= {f"green/deeper/{i}.png": GREEN for i in range(5)}
    splits = load(folder_of(tmp_path, layout))
    assert splits.class_names == ("blue", "green", "red")
    assert splits.image_shape == (3, 4, 6)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (13, 1, 1)
    x, y = all_examples(splits)
    first_pixel = x.reshape(len(x), 3, 4, 6)[:, :, 0, 0]
    expected = {0: BLUE, 1: GREEN, 2: RED}
    for label, colour in expected.items():
        assert (first_pixel[y == label] == torch.tensor(colour) / 255).all()
    assert torch.bincount(y).tolist() == [4, 5, 6]


def test_a_flat_folder_gives_unlabelled_examples_in_a_fixed_split(tmp_path: Path, isolated_cache: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "flat"
    for i in range(20):
        save(root / f"{i:02d}.png", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    (root / "notes.txt").write_text("not an image: ignored")
    (root / "._00.png").write_bytes(b"macOS metadata, hidden: ignored")
    first, second = load(root), load(root)
    assert first.train.y is None and first.class_names == ()
    assert first.image_shape == (3, 5, 7)
    assert (len(first.train), len(first.valid), len(first.test)) == (16, 2, 2)
    assert torch.equal(first.valid.x, second.valid.x)
    originals = {np.asarray(Image.open(root / f"{i:02d}.png")).transpose(2, 0, 1).tobytes() for i in range(20)}
    x, _ = all_examples(first)
    loaded = {(row.reshape(3, 5, 7).numpy() * 255).round().astype(np.uint8).tobytes() for row in x}
    assert loaded == originals  # lossless, channels first, each image exactly once


def test_grayscale_images_give_one_channel_unless_one_has_colour(tmp_path: Path, isolated_cache: Path) -> None:
    root = tmp_path / "gray"
    for i in range(5):
        save(root / f"{i}.png", 40 * i, mode="L")
    assert load(root).image_shape == (1, 4, 6)
    save(root / "colour.png", RED)
    assert load(root).image_shape == (3, 4, 6)
    forced = load(root, channels=1)
    assert forced.image_shape == (1, 4, 6)
    x, _ = all_examples(forced)
    red_as_gray = round(255 * 299 / 1000)  # Pillow's L = R 299/1000 + G 587/1000 + B 114/1000
    assert set((x * 255).round().int().unique().tolist()) == {0, 40, 80, 120, 160, red_as_gray}


def test_transparent_pixels_become_black(tmp_path: Path, isolated_cache: Path) -> None:
    root = tmp_path / "alpha"
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., 1] = 255  # green everywhere ...
    pixels[:2, :, 3] = 255  # ... opaque in the top half only
    for i in range(3):
        save(root / f"{i}.png", pixels)
    images = load(root).train.x.reshape(-1, 3, 4, 4)
    assert (images[:, 1, :2] == 1).all() and (images[:, :, 2:] == 0).all()


def test_resize_stretches_and_crop_keeps_the_centre(tmp_path: Path, isolated_cache: Path) -> None:
    root = tmp_path / "wide"
    thirds = np.zeros((30, 90, 3), dtype=np.uint8)
    thirds[:, :30] = BLUE
    thirds[:, 30:60] = GREEN
    thirds[:, 60:] = RED
    for i in range(3):
        save(root / f"{i}.png", thirds)
    cropped = load(root, image_size=(10,), fit="crop").train.x.reshape(-1, 3, 10, 10)
    assert (cropped[:, 1] > 0.9).all() and (cropped[:, [0, 2]] < 0.1).all()  # all green
    stretched = load(root, image_size=(10, 12)).train.x.reshape(-1, 3, 10, 12)
    assert (stretched[:, 2, :, 0] > 0.9).all() and (stretched[:, 0, :, -1] > 0.9).all()  # blue left, red right


def test_images_of_different_sizes_need_an_image_size(tmp_path: Path, isolated_cache: Path) -> None:
    root = folder_of(tmp_path, {"a.png": RED, "b.png": RED, "c.png": RED})
    save(root / "b.png", RED, size=(9, 5))
    with pytest.raises(VaekitError, match=r"differ in size \(a.png is 4x6, b.png is 5x9\).*--image-size"):
        load(root)
    assert load(root, image_size=(8, 8)).image_shape == (3, 8, 8)


def test_unreadable_files_are_all_named_in_one_error(tmp_path: Path, isolated_cache: Path) -> None:
    root = folder_of(tmp_path, {f"ok/{i}.png": RED for i in range(3)})
    good = (root / "ok" / "0.png").read_bytes()
    (root / "ok" / "empty.jpg").write_bytes(b"")
    (root / "ok" / "text.png").write_bytes(b"hello, not a PNG")
    (root / "ok" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(VaekitError) as error:
        load(root)
    message = str(error.value)
    assert message.startswith(f"3 file(s) in {root} are not readable images:")
    for name in ("ok/empty.jpg", "ok/text.png", "ok/cut.png"):
        assert name in message
    assert "ok/0.png" not in message


def test_the_decoded_folder_is_cached_and_refreshed_when_a_file_changes(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = folder_of(tmp_path, {f"{i}.png": RED for i in range(5)})
    first = load(root)
    assert len(list((isolated_cache / "images").glob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds these images")

    with monkeypatch.context() as patch:
        patch.setattr(image_folder_module, "decode_image", no_decoding)
        again = load(root)
    assert torch.equal(first.train.x, again.train.x)

    save(root / "3.png", BLUE)
    os.utime(root / "3.png", ns=(10**18, 10**18))  # a time no earlier write can have had
    changed = load(root)
    assert (all_examples(changed)[0] == 1.0).any(dim=0).reshape(3, 4, 6)[2].all()  # the blue image is in
    assert len(list((isolated_cache / "images").glob("*.npz"))) == 1  # the cache of the folder before it changed is gone
    load(root, image_size=(3,))
    assert len(list((isolated_cache / "images").glob("*.npz"))) == 2  # options are part of the key: both kept
    other = folder_of(tmp_path / "elsewhere", {f"{i}.png": GREEN for i in range(5)})  # another folder of the same name
    assert other.name == root.name
    load(other)
    assert len(list((isolated_cache / "images").glob("*.npz"))) == 3


def test_a_damaged_cache_file_is_decoded_again(tmp_path: Path, isolated_cache: Path) -> None:
    root = folder_of(tmp_path, {f"{i}.png": GREEN for i in range(4)})
    first = load(root)
    (cache_file,) = (isolated_cache / "images").glob("*.npz")
    cache_file.write_bytes(b"garbage")
    assert torch.equal(load(root).train.x, first.train.x)


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("VAEKIT_CACHE", str(not_a_folder))
    root = folder_of(tmp_path, {f"{i}.png": RED for i in range(4)})
    assert load(root).image_shape == (3, 4, 6)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"loose.png": RED, "cls/a.png": RED}, r"holds both images \(loose.png, ...\) and class folders \(cls, ...\)"),
        ({"readme.txt": None}, r"holds no images"),
    ],
)
def test_folder_layout_mistakes_are_clear_errors(tmp_path: Path, isolated_cache: Path, layout: dict, message: str) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    for relative, colour in layout.items():
        if colour is None:
            (root / relative).write_text("hello")
        else:
            save(root / relative, colour)
    with pytest.raises(VaekitError, match=message):
        load(root)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": (8,)}, "--image-size applies to image folders only, not to digits"),
        ({"channels": 1}, "--channels applies to image folders only"),
        ({"fit": "crop"}, "--fit applies to image folders only"),
        ({"valid_size": 7}, "--valid-size applies to --data mnist only"),
        ({"mirror": "http://127.0.0.1:1/"}, "--mirror applies to --data mnist only"),
        ({"data_dir": "."}, "--data-dir applies to --data mnist and --data binarized-mnist only"),
    ],
)
def test_data_options_that_do_nothing_for_the_data_are_refused_not_ignored(options: dict, message: str,
                                                                           isolated_cache: Path) -> None:
    with pytest.raises(VaekitError, match=message):
        load_data(DataConfig(data="digits", **options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": (4, 4, 4)}, "--image-size must be HEIGHT,WIDTH"),
        ({"channels": 2}, "--channels must be 1"),
        ({"fit": "pad"}, "--fit"),
    ],
)
def test_bad_image_options_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(VaekitError, match=message):
        DataConfig(data="x", **options)


# (C, H, W) of one image: grey, RGB and RGBA, with squares whose side is itself 1, 3 or 4 and
# so could pass for the channel axis of the other layout.
IMAGE_SHAPES = [(3, 20, 12), (4, 8, 8), (3, 4, 4), (4, 3, 3), (1, 3, 3), (3, 1, 1), (1, 5, 5), (4, 6, 9)]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_arrays_of_images_keep_their_pixels_in_place(tmp_path: Path, layout: str, shape: tuple) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, *shape), dtype=np.uint8)  # (N, C, H, W)
    stored = images.transpose(0, 2, 3, 1) if layout == "NHWC" else images
    path = tmp_path / "images.npz"
    np.savez(path, x=stored)
    splits = load_data(DataConfig(data=str(path)))
    assert splits.image_shape == shape
    x, _ = all_examples(splits)
    as_bytes = {(row.reshape(shape).numpy() * 255).round().astype(np.uint8).tobytes() for row in x}
    assert as_bytes == {image.tobytes() for image in images}


def test_an_rgba_npy_is_four_channels_of_its_height_and_width(tmp_path: Path) -> None:
    pixels = np.zeros((100, 8, 8, 4), dtype=np.uint8)  # (N, H, W, C), as Pillow and matplotlib give RGBA
    pixels[..., 3] = 255  # opaque
    pixels[:, :, :4, 0] = 255  # left half red
    np.save(tmp_path / "rgba.npy", pixels)
    splits = load_data(DataConfig(data=str(tmp_path / "rgba.npy")))
    assert splits.image_shape == (4, 8, 8)
    images = splits.train.x.reshape(-1, 4, 8, 8)
    assert (images[:, 0, :, :4] == 1).all() and (images[:, 0, :, 4:] == 0).all()
    assert (images[:, 3] == 1).all() and (images[:, 1:3] == 0).all()


@pytest.mark.parametrize(
    ("example", "image_shape"),
    [
        ((8, 8, 4), (4, 8, 8)),  # only the last axis can be channels
        ((4, 8, 8), (4, 8, 8)),  # only the first
        ((5, 8, 8), (5, 8, 8)),  # neither: channels first
        ((4, 4, 3), (3, 4, 4)),  # both: the square reading wins
        ((4, 3, 3), (4, 3, 3)),
        ((3, 3, 4), (4, 3, 3)),
        ((4, 8, 3), (3, 4, 8)),  # both, neither square: the smaller is the channels
        ((3, 8, 4), (3, 8, 4)),
        ((4, 4, 4), (4, 4, 4)),  # both square and equal: channels first
        ((784,), (1, 28, 28)),  # flat vectors: a square where they are one,
        ((120,), (1, 10, 12)),  # else the most nearly square block,
        ((22,), (1, 1, 22)),  # else (2 x 11 is too long) a strip
        ((13,), (1, 1, 13)),
    ],
)
def test_the_channel_axis_follows_the_documented_rule(example: tuple, image_shape: tuple) -> None:
    assert data_module.image_shape_of(example) == image_shape


def test_deep_grey_images_keep_their_levels(tmp_path: Path, isolated_cache: Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    grey16 = np.full((4, 6), 32896, dtype=np.uint16)  # 128 x 257: mid-grey in 16 bits
    Image.fromarray(grey16).save(root / "little.png")  # mode I;16
    Image.fromarray(grey16.astype(">u2")).save(root / "big.tif")  # mode I;16B
    Image.fromarray(np.full((4, 6), 0.5, dtype=np.float32)).save(root / "float.tif")  # mode F
    for extra, level in enumerate((0, 65535, 65535)):
        Image.fromarray(np.full((4, 6), level, dtype=np.uint16)).save(root / f"more{extra}.png")
    splits = load(root)
    assert splits.image_shape == (1, 4, 6)  # all grey: one channel
    x, _ = all_examples(splits)
    levels = sorted(set((x[:, 0] * 255).round().int().tolist()))
    assert levels == [0, 128, 255]  # Pillow's own conversion clipped 32896 to 255 and 0.5 to 0


def test_a_float_image_outside_0_1_is_named(tmp_path: Path, isolated_cache: Path) -> None:
    root = tmp_path / "floats"
    root.mkdir()
    for index in range(3):
        Image.fromarray(np.full((4, 6), 0.25 * index, dtype=np.float32)).save(root / f"{index}.tif")
    Image.fromarray(np.full((4, 6), 7.0, dtype=np.float32)).save(root / "bright.tif")
    with pytest.raises(VaekitError, match=r"bright.tif \(a float image needs values in \[0, 1\]; this one has \[7, 7\]\)"):
        load(root)


def test_palette_images_of_greys_are_grey(tmp_path: Path, isolated_cache: Path) -> None:
    root = tmp_path / "gifs"
    for index in range(4):
        save(root / f"{index}.gif", np.full((4, 6), 60 * index, dtype=np.uint8))  # a GIF is a palette image
    with Image.open(root / "1.gif") as image:
        assert image.mode == "P"
    splits = load(root)
    assert splits.image_shape == (1, 4, 6)
    x, _ = all_examples(splits)
    assert sorted(set((x[:, 0] * 255).round().int().tolist())) == [0, 60, 120, 180]
    save(root / "red.gif", np.zeros((4, 6, 3), dtype=np.uint8) + np.uint8([200, 0, 0]))
    assert load(root).image_shape == (3, 4, 6)


def test_photos_are_turned_as_their_exif_orientation_says(tmp_path: Path, isolated_cache: Path) -> None:
    root = tmp_path / "phone"
    root.mkdir()
    stored = np.zeros((8, 12), dtype=np.uint8)
    stored[:, :3] = 255  # a white band on the stored image's left
    for index in range(3):
        exif = Image.Exif()
        exif[0x0112] = 6  # shown turned a quarter clockwise
        Image.fromarray(stored).save(root / f"{index}.png", exif=exif)
    splits = load(root)
    assert splits.image_shape == (1, 12, 8)  # as a viewer shows it: 8 wide, 12 high
    shown = all_examples(splits)[0][0].reshape(12, 8) * 255
    assert torch.equal(shown, torch.from_numpy(np.rot90(stored, k=-1).copy()).float())  # the band on top
