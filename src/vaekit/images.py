"""Pixels and canvases for figures: flat examples to images, images to grids, grids to exact PNG figures.

Examples are flat (N, D) with a (C, H, W) image shape; images here are (N, H, W, C)
floats, a canvas one (H, W, C) float array. Pixel values are drawn as they are, 0 black and
1 white, so MNIST digits are white on black, and photos and RGB look right; real-valued data
are drawn from their lowest value to their highest (`display_range`). Figures are
matplotlib `Figure` objects, never pyplot's: nothing is shown, no backend is switched, and
each figure is freed once saved.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.errors import VaekitError
from vaekit.files import atomic_write_bytes, atomic_write_with

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vaekit.model import VAE

DPI = 100
TARGET_PX = 800  # canvases are enlarged by a whole factor towards this size, never shrunk
RIGHT, TOP, TITLE_LINE_PX = 20, 16, 18  # pixels beside a canvas; the left and bottom margins vary
MIN_FIGURE_PX = 480  # a narrow canvas (a tall column of reconstructions) gets room on its right for the title
AXIS_MARGINS = (70, 60)  # (left, bottom) pixels for tick labels and an axis label
NO_MARGINS = (20, 20)


# -- examples to images --------------------------------------------------------------------------------------------


def to_images(x: np.ndarray | torch.Tensor, image_shape: tuple[int, ...]) -> np.ndarray:
    """Flat examples (N, D) in [0, 1] -> images (N, H, W, C) as float arrays.

    Grey and RGB images are shown as they are, RGBA ones as RGB over white (as the explorer shows
    them too, so that a transparent pixel looks the same in every figure, GIF and page); any other
    number of channels (2, or 5 bands, say) as that many grey images side by side, (N, H, channels * W, 1).
    """
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    channels, height, width = image_shape
    images = x.reshape(len(x), channels, height, width)
    if channels == 4:
        rgb, alpha = images[:, :3], images[:, 3:]
        return (rgb * alpha + (1 - alpha)).transpose(0, 2, 3, 1)
    if channels in (1, 3):
        return images.transpose(0, 2, 3, 1)
    return images.transpose(0, 2, 1, 3).reshape(len(x), height, channels * width, 1)


def enlarged(images: np.ndarray, factor: int) -> np.ndarray:
    """Images (N, H, W, C) with each pixel repeated factor x factor times: bigger, with no new values."""
    return images.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else images


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tile images (N, H, W, C) into one (rows*H, columns*W, C) array, padded with white."""
    n, height, width, channels = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.ones((rows * (height + padding) + padding, columns * (width + padding) + padding, channels), np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def to_pixels(canvas: np.ndarray) -> np.ndarray:
    """A float canvas (H, W, C) in [0, 1] -> uint8 pixels, (H, W) for gray."""
    pixels = (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def save_image_grid(images: np.ndarray, path: str | Path, columns: int | None = None, scale: int = 4) -> Path:
    """Save images (N, H, W, C) in [0, 1] (`to_images`, `model_images`) as a bare PNG grid (no axes), each pixel
    enlarged `scale` times."""
    from PIL import Image

    image = Image.fromarray(to_pixels(image_grid(images, columns)))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = prepare_path(path)
    try:
        atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG"))  # a killed run leaves no half a PNG
    except ValueError as error:
        raise VaekitError(f"cannot write {path}: {error}") from None
    return path


def save_values(x: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """Save an array as float32 .npy (written whole or not at all)."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    buffer = io.BytesIO()
    np.save(buffer, x.astype(np.float32, copy=False))
    path = prepare_path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def image_shape_of(model: VAE) -> tuple[int, int, int]:
    """The model's (C, H, W), or a guess from its input size for a model built without data."""
    from vaekit.data import image_shape_of as guess

    return tuple(model.config.image_shape) or guess((model.input_size,))  # type: ignore[return-value]


def decoded_images(model: VAE, z: np.ndarray | torch.Tensor) -> np.ndarray:
    """Pixel means of p(x|z) as images (N, H, W, C)."""
    return model_images(model, model.decode(torch.as_tensor(z, dtype=torch.float32)))


def model_images(model: VAE, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A model's examples (or decoded means) as images (N, H, W, C) in [0, 1]: its `display_range` drawn black to white."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    return to_images(in_unit_range(x, display_range(model, x)), image_shape_of(model))


def in_unit_range(x: Any, value_range: tuple[float, float]) -> Any:
    """Values (a numpy array or a tensor) mapped from value_range to [0, 1], lowest to 0 and highest to 1."""
    low, high = value_range
    return x if (low, high) == (0.0, 1.0) else (x - low) / (high - low)


def display_range(model: VAE, shown: np.ndarray | torch.Tensor | None = None) -> tuple[float, float]:
    """The values figures draw black and white: [0, 1] for a model of data there (pixels); for real-valued data
    (a Gaussian with an identity mean) the training data's range that `train` records in the config, or, for a
    model trained elsewhere, the range of what is shown."""
    if model.config.takes_unit_interval:
        return 0.0, 1.0
    if model.config.value_range:
        low, high = model.config.value_range
        return low, high
    if shown is None or np.size(shown) == 0:
        return 0.0, 1.0
    return range_to_draw(float(shown.min()), float(shown.max()))


def range_to_draw(low: float, high: float) -> tuple[float, float]:
    """The values drawn black and white for data from low to high: those, or around a constant, which shows mid-grey."""
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def encoded_means(model: VAE, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The means of q(z|x), (N, latent), as numpy; x as the model's methods take it (uint8 pixels too)."""
    mu, _ = model.encode(model.as_examples(x))
    return mu.cpu().numpy()


def label_name(label: Any, class_names: Sequence[str]) -> str:
    """How a figure names a label: "3: cat" where the data name their classes, else "3"."""
    if not class_names or not 0 <= int(label) < len(class_names):
        return str(label)
    return f"{label}: {class_names[int(label)]}"


# -- figure plumbing -------------------------------------------------------------------------------------


def canvas_scale(canvas: np.ndarray) -> int:
    """The whole factor by which a canvas (H, W, C) is enlarged in its figure."""
    return max(1, TARGET_PX // max(canvas.shape[:2]))


def canvas_figure(canvas: np.ndarray, title: str, extent: tuple[float, ...] | None = None,
                  margins: tuple[int, int] = AXIS_MARGINS) -> tuple[Figure, Any]:
    """A figure showing the canvas enlarged canvas_scale times, with a title and (left, bottom) margins in pixels.

    The axes sit on whole pixels, so the saved PNG holds the canvas's exact values. Text and
    margins grow with a canvas wider than 1200 pixels (a 100 x 100 grid of MNIST digits), so
    that they stay readable beside it.
    """
    from matplotlib.figure import Figure

    scale = canvas_scale(canvas)
    height, width = canvas.shape[0] * scale, canvas.shape[1] * scale
    grow = max(1.0, width / 1200)
    left, bottom, right, top, line = (round(grow * px) for px in (*margins, RIGHT, TOP, TITLE_LINE_PX))
    narrow = width + left + right < grow * MIN_FIGURE_PX  # its title starts at the canvas and runs on to the right
    total_width = max(width + left + right, round(grow * MIN_FIGURE_PX))
    title_width = total_width - left - right if narrow else total_width
    title = textwrap.fill(title, width=max(30, round(title_width / grow / 9)))
    total_height = height + bottom + top + line * (title.count("\n") + 1)
    fig = Figure(figsize=(total_width / DPI, total_height / DPI), dpi=DPI)
    ax = fig.add_axes((left / total_width, bottom / total_height, width / total_width, height / total_height))
    ax.tick_params(labelsize=10 * grow)
    ax.xaxis.label.set_fontsize(10 * grow)
    ax.yaxis.label.set_fontsize(10 * grow)
    pixels = to_pixels(canvas)  # 8-bit RGB(A), drawn as it is: no colour map, no resampling in floats
    rgb = np.stack([pixels] * 3, -1) if pixels.ndim == 2 else pixels
    # Above the axis (zorder 3), so that no tick mark's antialiased edge touches a pixel.
    ax.imshow(rgb, interpolation="nearest", extent=extent, aspect="auto", zorder=3)
    for spine in ax.spines.values():
        spine.set_visible(False)  # a frame line would cover the outer pixels
    ax.set_title(title, fontsize=11 * grow, loc="left" if narrow else "center")
    return fig, ax


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG of its exact pixel size, then free it."""
    path = prepare_path(path)
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, facecolor="white"))
    except ValueError as error:
        raise VaekitError(f"cannot write {path}: {error}") from None
    finally:
        fig.clear()
    return path


def prepare_path(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VaekitError(f"cannot create the folder {path.parent}: {error.strerror}") from None
    return path


def heading(title: str, text: str) -> str:
    return f"{title}: {text}" if title else text[0].upper() + text[1:]
