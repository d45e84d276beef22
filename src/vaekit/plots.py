"""Pictures of a model: image grids now; the figures of vae-tf build on these helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaekit.errors import VaekitError


def to_images(x: np.ndarray | torch.Tensor, image_shape: tuple[int, ...]) -> np.ndarray:
    """Flat examples (N, D) in [0, 1] -> images (N, H, W, C) as float arrays."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    channels, height, width = image_shape
    return x.reshape(len(x), channels, height, width).transpose(0, 2, 3, 1)


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


def save_image_grid(
    x: np.ndarray | torch.Tensor, image_shape: tuple[int, ...], path: str | Path, columns: int | None = None, scale: int = 4
) -> Path:
    """Save flat examples as a PNG grid, each pixel enlarged `scale` times."""
    from PIL import Image

    grid = image_grid(to_images(x, image_shape), columns)
    pixels = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    image = Image.fromarray(pixels)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    except (OSError, ValueError) as error:
        raise VaekitError(f"cannot write {path}: {error}") from None
    return path
