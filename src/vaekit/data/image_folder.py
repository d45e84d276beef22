"""A folder of images as a data set, laid out as torchvision's ImageFolder; decoded once and cached."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.config import DataConfig
from vaekit.data.locations import cache_folder
from vaekit.data.splits import Split, Splits, pixels_in_unit_range, split_arrays, to_labels
from vaekit.errors import VaekitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "F")  # and "I;16" with its byte orders "I;16B", "I;16L", "I;16N"
IMAGE_CACHE_VERSION = 2  # bump when decoding changes, so old cache files are not reused
EXIF_ORIENTATION = 0x0112  # values 5-8 say the stored pixels are the shown image turned a quarter


def load_image_folder(folder: Path, config: DataConfig, seed: int = 0) -> Splits:
    """The images under folder as one data set, split 80 / 10 / 10 with a fixed seed.

    Layout as torchvision's ImageFolder: sub-folders are classes (sorted names -> labels 0..K-1,
    images found at any depth below each), or, without sub-folders, a flat folder of unlabelled
    images. Every image is brought to config.image_size (`fit`: stretched, or scaled and centre-
    cropped) and to config.channels; the decoded bytes are cached under the cache folder, keyed
    by the files' names, sizes and times and the options, so a second load reads one file. A cache
    of the same folder and options made before its files changed is removed when the new one is written.
    """
    files, labels, class_names = list_images(folder)
    reading, contents = image_cache_keys(folder, files, config)
    cache_path = cache_folder() / "images" / f"{folder.name}-{reading}-{contents}.npz"
    cached = read_image_cache(cache_path)
    if cached is None:
        pixels = decode_images(folder, files, config)
        write_image_cache(cache_path, pixels)
        for stale in cache_path.parent.glob(f"{glob.escape(folder.name)}-{reading}-*.npz"):  # this folder's, before it changed
            if stale != cache_path:
                stale.unlink(missing_ok=True)
    else:
        pixels = cached
    y = np.asarray(labels, dtype=np.int64) if class_names else None
    parts = split_arrays(pixels, y, 0.1, 0.1, seed, folder)
    splits = {
        split: Split(pixels_in_unit_range(x.reshape(len(x), -1)), to_labels(y_part, len(x), str(folder)))
        for split, (x, y_part) in parts.items()
    }
    return Splits(**splits, image_shape=tuple(pixels.shape[1:]), name=folder.name, class_names=tuple(class_names))


def list_images(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files (paths relative to folder, sorted), their labels and the class names; a flat folder has no classes."""
    top_level = sorted(path.relative_to(folder) for path in folder.iterdir() if is_image_file(path, folder))
    per_class = {
        sub.name: sorted(path.relative_to(folder) for path in sub.rglob("*") if is_image_file(path, folder))
        for sub in sorted(folder.iterdir())
        if sub.is_dir() and not sub.name.startswith(".")
    }
    per_class = {name: found for name, found in per_class.items() if found}
    if per_class and top_level:
        raise VaekitError(
            f"{folder} holds both images ({top_level[0]}, ...) and class folders ({next(iter(per_class))}, ...); "
            "put every image in a class folder, or use a flat folder"
        )
    if not per_class:
        if not top_level:
            raise VaekitError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) nor class folders of images")
        return top_level, [0] * len(top_level), []
    files = [path for found in per_class.values() for path in found]
    labels = [label for label, found in enumerate(per_class.values()) for _ in found]
    return files, labels, list(per_class)


def is_image_file(path: Path, folder: Path) -> bool:
    """A file with an image suffix, not hidden (no part of its path below folder starts with a dot)."""
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not hidden


def image_cache_keys(folder: Path, files: list[Path], config: DataConfig) -> tuple[str, str]:
    """Two hashes of what the decoded tensor depends on: how the folder is read (where it is, the options) and
    what it holds (each file's name, size and time)."""
    options = {"version": IMAGE_CACHE_VERSION, "size": config.image_size, "channels": config.channels, "fit": config.fit}
    reading = hashlib.sha256(f"{folder.resolve()}\n{json.dumps(options, sort_keys=True)}\n".encode())
    contents = hashlib.sha256()
    for relative in files:
        stat = (folder / relative).stat()
        contents.update(f"{relative.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return reading.hexdigest()[:12], contents.hexdigest()[:12]


def decode_images(folder: Path, files: list[Path], config: DataConfig) -> np.ndarray:
    """All images as one uint8 array (N, C, H, W); unreadable files are named in one error.

    A first pass reads only the headers (mode and size) to settle the channels and the size;
    the second decodes each image straight into its place, so memory holds the result only.
    """
    from PIL import Image

    headers = in_threads(lambda relative: read_header(folder / relative), files)
    readable = [header for header in headers if not isinstance(header, str)] or [("L", (1, 1))]
    channels = config.channels or (1 if all(is_grey(mode) for mode, _ in readable) else 3)
    height, width = target_size(files, headers, config)
    pixels = np.empty((len(files), channels, height, width), dtype=np.uint8)

    def fill(index: int) -> str | None:
        if isinstance(headers[index], str):
            return headers[index]
        try:
            pixels[index] = decode_image(folder / files[index], channels, (height, width), config.fit)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # damaged, truncated, huge
            return str(error) or type(error).__name__
        return None

    broken = [f"{relative} ({reason})" for relative, reason in zip(files, in_threads(fill, range(len(files)))) if reason]
    if broken:
        shown = "; ".join(broken[:10]) + (f"; and {len(broken) - 10} more" if len(broken) > 10 else "")
        raise VaekitError(f"{len(broken)} file(s) in {folder} are not readable images: {shown}")
    return pixels


def in_threads(fn, items) -> list:
    """fn over items in a thread pool, in order: Pillow decodes without holding the GIL."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def read_header(path: Path) -> tuple[str, tuple[int, int]] | str:
    """(mode, (height, width)) of an image as it is shown, without decoding its pixels (but a palette's),
    or the reason it cannot be read. A palette of greys gives mode "L"."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode, height, width = image.mode, image.height, image.width
            if mode in ("P", "PA") and has_grey_palette(image):
                mode = "L"
            if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                height, width = width, height
            return mode, (height, width)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__


def is_grey(mode: str) -> bool:
    return mode in GRAYSCALE_MODES or mode.startswith("I;16")


def has_grey_palette(image: Any) -> bool:
    """Whether every colour of a palette image's palette is a grey (r = g = b): GIFs are palette images."""
    colours = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    return bool((colours == colours[:, :1]).all())


def target_size(files: list[Path], headers: list, config: DataConfig) -> tuple[int, int]:
    """(height, width) from --image-size, else the images' own size, which must then be the same for all."""
    if config.image_size:
        return config.image_size[0], config.image_size[-1]
    first_of_size: dict[tuple[int, int], Path] = {}
    for relative, header in zip(files, headers):
        if not isinstance(header, str):
            first_of_size.setdefault(header[1], relative)
    if len(first_of_size) > 1:
        shown = ", ".join(f"{relative} is {h}x{w}" for (h, w), relative in list(first_of_size.items())[:3])
        raise VaekitError(f"the images differ in size ({shown}); choose one with --image-size HEIGHT,WIDTH")
    return next(iter(first_of_size), (1, 1))  # (1, 1) when none is readable: the error then names them all


def decode_image(path: Path, channels: int, size: tuple[int, int], fit: str) -> np.ndarray:
    """One image file as uint8 (C, H, W): grayscale or RGB (transparent parts over black), as it is shown
    (turned by its EXIF orientation, as phones store photos), brought to size."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            image = Image.fromarray(eight_bit(np.asarray(image), image.mode))
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            black = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(black, image.convert("RGBA"))
        image = image.convert("L" if channels == 1 else "RGB")
    height, width = size
    if (image.height, image.width) != size:
        if fit == "crop":
            image = ImageOps.fit(image, (width, height), Image.Resampling.BICUBIC)
        else:
            image = image.resize((width, height), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)


def eight_bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Grey pixels of more than 8 bits as uint8 0-255: 16-bit integers (modes "I;16..." and "I") scaled
    by 255/65535, floats (mode "F") taken as values in [0, 1]. (Pillow's own conversion would clip them.)"""
    if mode == "F":
        low, high = float(pixels.min()), float(pixels.max())
        if not (0 <= low and high <= 1):  # NaN fails too
            raise ValueError(f"a float image needs values in [0, 1]; this one has [{low:g}, {high:g}]")
        scaled = pixels.astype(np.float64) * 255
    else:
        if pixels.min() < 0 or pixels.max() > 65535:
            raise ValueError("a 32-bit integer image needs 16-bit values, 0-65535")
        scaled = pixels.astype(np.float64) * (255 / 65535)
    return np.round(scaled).astype(np.uint8)


def read_image_cache(path: Path) -> np.ndarray | None:
    """The cached uint8 pixels, or None if there is no usable cache file."""
    try:
        with np.load(path, allow_pickle=False) as loaded:
            return loaded["pixels"]
    except (OSError, ValueError, KeyError, EOFError, zlib.error):
        return None


def write_image_cache(path: Path, pixels: np.ndarray) -> None:
    """Save the pixels atomically; a cache that cannot be written costs time on the next load, not this one."""
    from vaekit.files import atomic_write_with

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object, or numpy would append .npz to the name
            np.savez(handle, pixels=pixels)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, write)
    except (OSError, VaekitError):
        pass
