"""Write the explorer: one self-contained HTML file with the decoder, the encoded data and the page's code.

The page needs nothing from the network: the template, its JavaScript and a JSON payload
(decoder weights and example images as base64) are inlined into a single file.
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaekit.data import Splits, image_shape_of
from vaekit.errors import VaekitError
from vaekit.explorer.layers import export_decoder, float32_base64
from vaekit.files import atomic_write_bytes
from vaekit.images import display_range, in_unit_range
from vaekit.latent import principal_axes
from vaekit.model import seeded

DEFAULT_MAX_POINTS = 2000
IMAGE_BYTES_BUDGET = 3_000_000  # example images on the page, one byte a value; past it only the first few have theirs
SCRIPTS = ("decoder.js", "pixels.js", "pad.js", "explorer.js")  # in this order: each uses the ones before


def write_explorer(
    model: nn.Module,
    data: Splits | None,
    path: str | Path,
    *,
    split: str = "train",
    max_points: int = DEFAULT_MAX_POINTS,
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """Write the latent explorer for model to path (one offline HTML file); return the path.

    Up to max_points examples of data[split] are encoded (their means) and shown on the
    latent pad, coloured by label; with data=None the pad is empty but everything else works.
    """
    payload = explorer_payload(model, data, split=split, max_points=max_points, title=title, seed=seed)
    html = render_page(payload)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VaekitError(f"cannot write {path}: {error}") from None
    atomic_write_bytes(path, html.encode("utf-8"))  # whole or not at all; a link at path is replaced, not followed
    return path


def explorer_payload(
    model: nn.Module, data: Splits | None, *, split: str, max_points: int, title: str | None, seed: int
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready values."""
    if max_points < 1:
        raise VaekitError(f"the explorer needs at least 1 point on the pad, got max_points={max_points}")
    config = model.config
    image_shape = tuple(config.image_shape) or image_shape_of((config.input_size,))
    if int(np.prod(image_shape)) != config.input_size:
        raise VaekitError(f"image shape {image_shape} does not hold the model's {config.input_size} inputs")
    points, display = encoded_points(model, data, split, max_points, seed)
    kind = "conv vae" if config.model == "conv" else "vae"
    return {
        "title": title or f"{kind} {'-'.join(map(str, config.architecture))}",
        "model": {
            "model": config.model,
            "architecture": list(config.architecture),
            "conv_channels": list(config.conv_channels),
            "nonlinearity": config.nonlinearity,
            "likelihood": config.likelihood.capitalize(),
            "sigma": model.likelihood_sigma,
            "image_shape": list(image_shape),
            "latent_size": config.latent_size,
        },
        "data": {"name": data.name if data is not None else "", "split": split if data is not None else ""},
        "decoder": export_decoder(model),
        "display": list(display),  # the values drawn black and white (images.display_range)
        **points,
    }


def encoded_points(model: nn.Module, data: Splits | None, split: str, max_points: int,
                   seed: int) -> tuple[dict[str, Any], tuple[float, float]]:
    """The pad's points (codes, labels, images, indices in the split) and the plane they are shown on (the page
    projects them), and the values its images draw black and white."""
    latent = model.config.latent_size
    if data is None:
        origin, basis, explained = np.zeros(latent, np.float32), identity_plane(latent), None
        return {"plane": plane_json(origin, basis, explained), "points": None}, display_range(model, decoded_draws(model, seed))
    data.check_fits(model.config.input_size)
    part = data[split]
    index = chosen_indices(len(part), max_points, seed)
    x, y = part.x[index], None if part.y is None else part.y[index]
    x = x.reshape(len(x), -1)  # flat rows (N, D) in (C, H, W) order, as the page reads them, for images too
    mu, _ = model.encode(x.numpy())
    mu = np.asarray(mu, dtype=np.float32)
    origin, basis, explained = principal_plane(mu)
    with_images = min(len(x), IMAGE_BYTES_BUDGET // x.shape[1])
    display = display_range(model, x.numpy())
    return {
        "plane": plane_json(origin, basis, explained),
        "points": {
            "n": len(mu),
            "index": index.tolist(),  # each point's example number in the split, the number the page shows
            "z": float32_base64(mu),
            "labels": None if y is None else y.tolist(),
            "colours": None if y is None else css_label_colours(part.y.numpy()),
            "names": None if y is None else label_names(part.y.numpy(), data.class_names),
            "images": uint8_base64(x[:with_images], display),
            "n_images": with_images,
        },
    }, display


def label_names(labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, str] | None:
    """Each label of the split as the PNG figures name it ("2: cat", `images.label_name`); None where the data name no classes."""
    from vaekit.images import label_name

    if not class_names:
        return None
    return {str(label): label_name(label, class_names) for label in np.unique(labels).tolist()}


def css_label_colours(labels: np.ndarray) -> dict[str, str] | None:
    """Each label of the split in the colour the PNG figures give it (`plots.label_colours`), as CSS;
    None past 20 labels, where the figures use a colour bar and the page its own hues."""
    from matplotlib.colors import to_hex

    from vaekit.plots import label_colours

    classes = np.unique(labels)
    if len(classes) > 20:
        return None
    return {str(label): to_hex(colour) for label, colour in label_colours(classes).items()}


def chosen_indices(size: int, max_points: int, seed: int) -> torch.Tensor:
    """Which examples of the split go on the pad, ascending: all, or a fixed random subset when there are more."""
    if size <= max_points:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values


def principal_plane(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float] | None]:
    """(origin, basis (2, latent), explained variance fractions) of the plane the pad shows.

    A 2-D latent is shown as it is; a larger one on the plane through the data mean along its
    top two principal directions (numpy SVD), each direction's sign fixed for a stable picture.
    """
    latent = mu.shape[1]
    if latent <= 2:
        return np.zeros(latent, np.float32), identity_plane(latent), None
    if len(mu) < 2:  # one code has no principal directions
        return mu.mean(axis=0).astype(np.float32), identity_plane(latent), None
    origin, basis, shares = principal_axes(mu)
    explained = [0.0, 0.0] if np.isnan(shares).any() else shares.tolist()
    return origin.astype(np.float32), basis.astype(np.float32), explained


def identity_plane(latent: int) -> np.ndarray:
    """The first two coordinate axes (a 1-D latent has only the first; its second direction is zero)."""
    return np.eye(2, latent, dtype=np.float32)


def decoded_draws(model: nn.Module, seed: int, n: int = 64) -> np.ndarray | None:
    """n draws from a model of real values without a recorded range (trained elsewhere), decoded, to stretch the page's
    images over; None for any other model, which has a range of its own."""
    if model.config.takes_unit_interval or model.config.value_range:
        return None
    with seeded(seed, model.device):
        return model.sample(n).cpu().numpy()


def plane_json(origin: np.ndarray, basis: np.ndarray, explained: list[float] | None) -> dict[str, Any]:
    return {"origin": origin.tolist(), "basis": basis.tolist(), "explained": explained}


def uint8_base64(x: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> str:
    """Values in value_range as bytes 0..255, base64."""
    values = in_unit_range(x, value_range).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return base64.b64encode(values.tobytes()).decode("ascii")


# -- the HTML ------------------------------------------------------------------------------------


def render_page(payload: dict[str, Any]) -> str:
    """The template with the payload and the scripts inlined."""
    folder = resources.files("vaekit.explorer")
    template = folder.joinpath("template.html").read_text(encoding="utf-8")
    scripts = "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in SCRIPTS)
    # Inside <script>, "</" could close the element early and "<!--<script" keep it open past its end (a folder
    # named so): no "<", ">" or "&" at all, as JSON's escapes, which JSON.parse reads back the same
    data = json.dumps(payload, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    values = {"TITLE": html.escape(payload["title"]), "DATA": data, "SCRIPTS": scripts}
    return re.sub(r"\{\{(TITLE|DATA|SCRIPTS)\}\}", lambda match: values[match.group(1)], template)
