"""Figures of a trained VAE, the pictures of vae-tf, for any image shape (gray or RGB).

One public function per figure, each writing one PNG and returning its path:
`save_reconstructions` (the original's plotSubset), `save_latent_scatter` (plotInLatent),
`save_manifold_grid` (exploreLatent, linear or at percentiles of N(0, 1)), `save_interpolation`,
`save_example` (justMNIST) and `save_prior_samples`, and `save_snapshot`, which the trainer calls to draw the
latent space over training; the GIFs (morph, latent space over training) are made in `animation.py`. `all_plots` writes every kind, as the original's all_plots did.
Pixels and figure plumbing (matplotlib's Agg canvas, never pyplot) are in `images.py`.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.animation import SNAPSHOT_FOLDER, SNAPSHOT_KINDS, morph_by_label, morph_examples, snapshot_gifs
from vaekit.config import FIGURE_KINDS, SPLITS, SplitName
from vaekit.errors import VaekitError
from vaekit.images import (
    DPI,
    NO_MARGINS,
    canvas_figure,
    decoded_images,
    display_range,
    encoded_means,
    enlarged,
    heading,
    image_grid,
    image_shape_of,
    in_unit_range,
    label_name,
    model_images,
    save_figure,
    to_images,
)
from vaekit.latent import (
    LatentPlane,
    Projection,
    grid_codes,
    grid_coordinates,
    interpolate,
    latent_plane,
    project_to_plane,
)
from vaekit.model import evaluating, seeded

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vaekit.data import Split, Splits
    from vaekit.model import VAE

SCATTER_SIZE = (8.0, 6.4)  # inches: 800 x 640 pixels
MIN_GRID_TILE_PX = 24  # a manifold grid's tiles are at least this many pixels (vae-tf's 20 x 20 grid drew about 50)
MIN_STRIP_TILE_PX = 64  # an interpolation's tiles are at least this many (vae-tf drew about 90 at 20 steps)
EXAMPLE_SIZE = (6.0, 5.0)  # inches: 600 x 500 pixels
MAX_TSNE_POINTS = 2000  # t-SNE is quadratic in time: a larger split is subsampled
TRAINING_IMAGES = 8  # TensorBoard's images of a run: 8 reconstructions and 8 x 8 samples
MIN_TRAINING_TILE_PX = 28  # their tiles are enlarged to at least this


# -- 1. reconstructions (plotSubset) ---------------------------------------------------------------------


def save_reconstructions(model: VAE, x: torch.Tensor, path: str | Path, n: int = 10, title: str = "",
                         columns: int | None = None, sample: bool = False) -> Path:
    """The first n inputs, each row of them above its row of reconstructions, `columns` a row (default: 10, or
    for many examples as many as keep the figure about square, so that its rows stay tall enough to label).

    A reconstruction decodes the mean of q(z|x), or a draw from it with sample=True (the original's `vae`).
    """
    x = torch.as_tensor(x)[:n]
    if len(x) == 0:
        raise VaekitError("no examples to reconstruct")
    x = model.as_examples(x)  # the inputs as the model sees them: uint8 pixels scaled, say
    with seeded(0, model.device):
        recon = model.reconstruct(x, sample=sample)
    columns = min(columns or max(10, math.ceil(math.sqrt(2 * len(x)))), len(x))
    images = model_images(model, torch.cat([x.cpu(), torch.as_tensor(recon).reshape(len(x), -1).cpu()]))  # one scale for both
    inputs, recons = images[: len(x)], images[len(x) :]
    blank = np.ones((1, *images.shape[1:]), np.float32)
    rows = []
    for start in range(0, len(x), columns):
        for part in (inputs[start : start + columns], recons[start : start + columns]):
            rows.append(np.concatenate([part] + [blank] * (columns - len(part))))
    canvas = image_grid(np.concatenate(rows), columns)
    which = "a draw from q(z|x)" if sample else "the mean of q(z|x)"
    fig, ax = canvas_figure(canvas, heading(title, f"inputs above their reconstructions, decoded from {which}"), margins=(130, 20))
    row_height = canvas.shape[0] / len(rows)
    ax.set_yticks([row_height * (i + 0.5) for i in range(len(rows))], ["input", "reconstruction"] * (len(rows) // 2))
    ax.set_xticks([])
    return save_figure(fig, path)


# -- 2. latent scatter (plotInLatent) ---------------------------------------------------------------------


def save_latent_scatter(model: VAE, x: torch.Tensor, path: str | Path, labels: torch.Tensor | np.ndarray | None = None,
                        title: str = "", projection: Projection = "pca", limits: tuple[float, float] | None = None,
                        seed: int = 0, class_names: Sequence[str] = ()) -> Path:
    """Encoded means of x as points coloured by label; a larger latent than 2-D is projected (PCA or t-SNE).

    class_names name the labels in the legend (label k is class_names[k]), as an image folder's sub-folders do.
    """
    mu = encoded_means(model, x)
    labels = None if labels is None else np.asarray(labels)
    if labels is not None and len(labels) != len(mu):
        raise VaekitError(f"{len(labels)} labels for {len(mu)} examples: give one label per example")
    sampled = ""
    if projection == "tsne" and mu.shape[1] > 2 and len(mu) > MAX_TSNE_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(mu), MAX_TSNE_POINTS, replace=False))
        mu, labels = mu[keep], None if labels is None else labels[keep]
        sampled = f" ({MAX_TSNE_POINTS} of {len(x)} at random)"
    if mu.shape[1] == 1:
        return save_figure(strip_figure(mu[:, 0], labels, title, limits, seed, class_names), path)
    points, (x_name, y_name), how = project_to_plane(mu, projection, seed)
    fig = scatter_figure(points, labels, heading(title, f"means of q(z|x) of {len(points)} examples{sampled}, {how}"), limits,
                         class_names)
    fig.axes[0].set_xlabel(x_name)
    fig.axes[0].set_ylabel(y_name)
    return save_figure(fig, path)


def strip_figure(z: np.ndarray, labels: np.ndarray | None, title: str, limits: tuple[float, float] | None, seed: int,
                 class_names: Sequence[str] = ()) -> Figure:
    """A 1-D latent's scatter: z along x, one row per label, each point placed at random across its row
    so that the points of a row do not hide one another."""
    classes, rows = (np.array([]), np.zeros(len(z), int)) if labels is None else np.unique(labels, return_inverse=True)
    spread = np.random.default_rng(seed).uniform(-0.35, 0.35, len(z))
    points = np.column_stack([z, rows + spread])
    fig = scatter_figure(points, labels, heading(title, f"means of q(z|x) of {len(z)} examples, 1-D latent"), None, class_names)
    ax = fig.axes[0]
    ax.set_aspect("auto")
    if limits is not None:
        ax.set_xlim(*limits)
    ax.set_yticks(range(len(classes)), [label_name(c, class_names) for c in classes])
    ax.set_xlabel("z₁")
    ax.set_ylabel("label" if labels is not None else "")
    return fig


def scatter_figure(points: np.ndarray, labels: np.ndarray | None, title: str, limits: tuple[float, float] | None,
                   class_names: Sequence[str] = ()) -> Figure:
    """An 800 x 640 scatter; a legend for up to 20 labels, a colour bar for more."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=SCATTER_SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    order = np.random.default_rng(0).permutation(len(points))  # so that no class hides those drawn before it
    xs, ys = points[order, 0], points[order, 1]
    style: dict[str, Any] = dict(s=float(np.clip(4000 / max(len(points), 1), 3, 30)), alpha=0.7, linewidths=0)
    if labels is None:
        ax.scatter(xs, ys, color="tab:blue", **style)
    elif len(classes := np.unique(labels)) <= 20:
        colour = label_colours(classes)
        ax.scatter(xs, ys, c=[colour[label] for label in labels[order]], **style)
        handles = [Line2D([], [], ls="", marker="o", ms=8, color=colour[c], label=label_name(c, class_names)) for c in classes]
        ax.legend(handles=handles, title="label", loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    else:
        fig.colorbar(ax.scatter(xs, ys, c=labels[order], cmap="viridis", **style), ax=ax, label="label")
    if limits is not None:
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
    ax.set_aspect("equal", adjustable="box" if limits else "datalim")
    ax.grid(alpha=0.25)
    ax.set_title(textwrap.fill(title, 80), fontsize=11)
    return fig


def label_colours(classes: np.ndarray) -> dict[Any, tuple[float, ...]]:
    """A colour for each of up to 20 classes, the same in every figure: labels 0-19 by their value (so a
    split without some class colours the others as every other split does), other labels by their rank.

    tab20's dark shades come first (they are tab10's colours), then its light ones, so that neighbouring
    labels differ in hue."""
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    shades = [palette(i) for i in range(0, 20, 2)] + [palette(i) for i in range(1, 20, 2)]
    by_value = np.issubdtype(classes.dtype, np.integer) and classes.min() >= 0 and classes.max() < 20
    return {c: shades[int(c) if by_value else rank] for rank, c in enumerate(classes)}


# -- 3. manifold grid (exploreLatent) -----------------------------------------------------------------------


def manifold_canvas(model: VAE, plane: LatentPlane, coords: np.ndarray, padding: int = 0, factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Decode the grid of codes on the plane (see latent.grid_codes).

    Returns the canvas, n x n tiles enlarged `factor` times with `padding` white pixels between them, and z of
    shape (n, n, latent).
    """
    z = grid_codes(plane, coords)
    n = len(coords)
    return image_grid(enlarged(decoded_images(model, z.reshape(n * n, -1)), factor), columns=n, padding=padding), z


def save_manifold_grid(model: VAE, path: str | Path, n: int = 20, span: tuple[float, float] = (-4.0, 4.0),
                       ppf: bool = False, plane: LatentPlane | None = None, title: str = "") -> Path:
    """Decode an n x n grid of z over a linear span, or (ppf) at percentiles of N(0, 1), into one image."""
    plane = plane or latent_plane(model.latent_size)
    # Tiny images (8 x 8 digits) have ink up to their edges: without a gap the tiles run together, and with
    # a gap at their own size the gaps are an eighth of a large grid. So they are enlarged first, then spaced.
    side = max(image_shape_of(model)[1:])
    padding, factor = (1, math.ceil(MIN_GRID_TILE_PX / side)) if side < 16 else (0, 1)
    coords = grid_coordinates(n, span, ppf)
    canvas, _ = manifold_canvas(model, plane, coords, padding, factor)
    where = "at percentiles of N(0, 1)" if ppf else f"over [{span[0]:g}, {span[1]:g}]²"
    text = heading(title, f"decoded z on a {n}×{n} grid {where}" + (f", on {plane.description}" if plane.description else ""))
    if ppf:  # the axes are the prior's cumulative probability: every cell holds the same prior mass
        fig, ax = canvas_figure(canvas, text, extent=(0, 1, 0, 1))
        ticks = [0.05, 0.25, 0.5, 0.75, 0.95]
        ax.set_xticks(ticks, [f"{t:.0%}" for t in ticks])
        ax.set_yticks(ticks, [f"{t:.0%}" for t in ticks])
        ax.set_xlabel(f"{plane.names[0]} (percentile of N(0, 1))")
        ax.set_ylabel(f"{plane.names[1]} (percentile of N(0, 1))")
    else:  # tiles centred on their z, so the ticks read latent coordinates
        half = (span[1] - span[0]) / max(n - 1, 1) / 2  # n = 1: one tile over the whole span
        low, high = coords[0] - half, coords[-1] + half
        fig, ax = canvas_figure(canvas, text, extent=(low, high, low, high))
        ax.set_xlabel(plane.names[0])
        ax.set_ylabel(plane.names[1])
    return save_figure(fig, path)


# -- 4. interpolation ------------------------------------------------------------------------------------------


def save_interpolation(model: VAE, x_a: torch.Tensor, x_b: torch.Tensor, path: str | Path, n: int = 20,
                       spherical: bool = False, title: str = "") -> Path:
    """A strip of n images decoded on the way from the mean of q(z|x_a) to that of q(z|x_b), the inputs at its ends."""
    x = model.as_examples(torch.stack([torch.as_tensor(x_a), torch.as_tensor(x_b)]))
    mu = encoded_means(model, x)
    # a long strip is not enlarged to fit the page: its tiles are, by their longer side (a 1 x D row of features by 64 would be a gigapixel)
    factor = max(1, math.ceil(MIN_STRIP_TILE_PX / max(image_shape_of(model)[1:])))
    decoded = model.decode(torch.as_tensor(interpolate(mu[0], mu[1], n, spherical), dtype=torch.float32))
    images = enlarged(model_images(model, torch.cat([x.cpu(), decoded.reshape(n, -1).cpu()])), factor)  # one scale for all
    inputs, strip = images[:2], image_grid(images[2:], columns=n)
    ends = [image_grid(inputs[i : i + 1]) for i in (0, 1)]
    spacer = np.ones((strip.shape[0], max(2, inputs.shape[2] // 2), strip.shape[2]), np.float32)
    canvas = np.concatenate([ends[0], spacer, strip, spacer, ends[1]], axis=1)
    kind = "spherical" if spherical else "linear"
    fig, ax = canvas_figure(canvas, heading(title, f"the inputs at both ends, between them the {kind} interpolation "
                                                   f"of their codes in {n} steps, decoded"), margins=(20, 30))
    tile, gap = strip.shape[1] / n, ends[0].shape[1] + spacer.shape[1]
    centres = [ends[0].shape[1] / 2, gap + tile / 2, gap + strip.shape[1] - tile / 2, canvas.shape[1] - ends[1].shape[1] / 2]
    ax.set_xticks(centres, ["input", "start", "end", "input"])
    ax.set_yticks([])
    return save_figure(fig, path)


# -- 7. one example (justMNIST) and draws from the prior ---------------------------------------------------


def save_example(x: torch.Tensor | np.ndarray, image_shape: tuple[int, ...], path: str | Path, title: str = "",
                 value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """One example with pixel rows and columns on its axes and a colour bar of its values, value_range black to white."""
    from matplotlib import ticker
    from matplotlib.figure import Figure

    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    x = x / 255 if x.dtype == np.uint8 else x  # pixels 0-255, as the model's methods take them
    if x.size != np.prod(image_shape):
        raise VaekitError(f"one example of {x.size} values is no image of shape {tuple(image_shape)}")
    (image,) = to_images(x.reshape(1, -1), image_shape)
    _, height, width = image_shape
    low, high = value_range
    fig = Figure(figsize=EXAMPLE_SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if image.shape[-1] == 1:  # ticks at pixel centres, row 0 on top
        shown = ax.imshow(image[..., 0], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        fig.colorbar(shown, ax=ax, label="pixel value" if value_range == (0.0, 1.0) else "value")
    else:
        ax.imshow(np.clip(in_unit_range(image, value_range), 0, 1), interpolation="nearest")
    spacing = max(1, round(max(height, width) / 7))  # every 4 pixels for 28 x 28, as the original
    ax.xaxis.set_major_locator(ticker.MultipleLocator(spacing))
    ax.yaxis.set_major_locator(ticker.MultipleLocator(spacing))
    ax.set_xlabel("pixel column")
    ax.set_ylabel("pixel row")
    ax.set_title(title, fontsize=11)
    return save_figure(fig, path)


def save_prior_samples(model: VAE, path: str | Path, n: int = 100, seed: int = 0, title: str = "") -> Path:
    """n draws z ~ p(z), the model's own prior, decoded to pixel means, in a square grid."""
    canvas = image_grid(decoded_images(model, prior_draws(model, n, seed)))
    fig, ax = canvas_figure(canvas, heading(title, f"{n} draws of z from the prior {prior_name(model)}, decoded"), margins=NO_MARGINS)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def prior_draws(model: VAE, n: int, seed: int = 0) -> torch.Tensor:
    """n codes drawn from the model's prior p(z), (n, latent) on the CPU, the same for the same seed."""
    with seeded(seed, model.device), evaluating(model), torch.no_grad():
        return model.prior.sample(n).cpu()


def prior_name(model: VAE) -> str:
    match model.config.prior:
        case "vamp":
            return f"(a VampPrior of {model.config.pseudo_inputs} pseudo-inputs)"
        case "standard":
            return "N(0, I)"
    return model.config.prior


# -- 6. the latent space over training: the snapshots the trainer takes (animation.py makes their GIFs) ----------


SNAPSHOT_GRID = 30  # the original's 30 x 30 inverse-CDF grid
SNAPSHOT_POINTS = 2000  # validation examples in each scatter
SNAPSHOT_LIMITS = (-6.0, 6.0)  # fixed axes, so that the frames can be compared (the original's)


def save_snapshot(model: VAE, data: Splits, run_dir: str | Path, step: int) -> list[Path]:
    """Save the inverse-CDF grid and the validation codes at this step into run_dir/snapshots/.

    Runs on its own random stream, so a run with snapshots trains exactly as one without.
    """
    folder = Path(run_dir) / SNAPSHOT_FOLDER
    valid = data.valid
    x = valid.x[:SNAPSHOT_POINTS]
    y = None if valid.y is None else valid.y[:SNAPSHOT_POINTS]
    devices = [model.device] if model.device.type == "cuda" else []
    paths = []
    with torch.random.fork_rng(devices=devices):
        if model.latent_size >= 2:  # a 1-D latent has no plane for a grid
            paths.append(save_manifold_grid(model, folder / f"{SNAPSHOT_KINDS['manifold']}_step{step:07d}.png",
                                            SNAPSHOT_GRID, ppf=True, plane=snapshot_plane(model, x), title=f"step {step}"))
        paths.append(save_latent_scatter(model, x, folder / f"{SNAPSHOT_KINDS['latent']}_step{step:07d}.png", y,
                                         f"step {step}, {data.name} valid".strip(", "), limits=SNAPSHOT_LIMITS))
    return paths


def training_images(model: VAE, x: torch.Tensor, n: int = TRAINING_IMAGES) -> dict[str, np.ndarray]:
    """What TensorBoard shows of a model in training, as (H, W, C) canvases in [0, 1]: "reconstructions", the first
    n examples of x above their reconstructions (decoded from the mean of q(z|x)), and "samples", n x n draws
    from the prior. The draws are the same at every call (their own seeded stream): one epoch's samples
    decode the same codes as the last's, and the run trains exactly as it would without them."""
    shape = image_shape_of(model)
    x = x[:n]
    with evaluating(model), seeded(0, model.device):
        recon = model.reconstruct(x, sample=False)
        samples = model.sample(n * n)
    factor = max(1, math.ceil(MIN_TRAINING_TILE_PX / max(shape[1:])))  # 8x8 digits would be specks
    pairs = enlarged(np.concatenate([model_images(model, x), model_images(model, recon)]), factor)
    return {"reconstructions": image_grid(pairs, columns=len(x)),
            "samples": image_grid(enlarged(model_images(model, samples), factor), columns=n)}


def snapshot_plane(model: VAE, x: torch.Tensor) -> LatentPlane:
    """The grid's plane: the latent itself, or the codes' top two principal directions; with fewer than two
    validation examples (no directions of spread), the first two latent dimensions."""
    if model.latent_size == 2:
        return latent_plane(2)
    if len(x) < 2:
        return latent_plane(model.latent_size, dims=(0, 1))
    return latent_plane(model.latent_size, encoded_means(model, x))


# -- all of them (all_plots) ---------------------------------------------------------------------------------

KINDS = FIGURE_KINDS  # reconstructions, latent, manifold, manifold-ppf, interpolation, morph, training, example, prior


@dataclass(frozen=True)
class PlotOptions:
    """Choices for all_plots; the defaults are the original's."""

    n: int = 10  # examples per reconstruction figure
    projection: Projection = "pca"  # for a latent larger than 2-D
    dims: tuple[int, int] | None = None  # two latent dimensions for the grids; None: the top principal directions
    grid: int = 20  # the linear grid's side
    span: tuple[float, float] = (-4.0, 4.0)  # the linear grid's range on both axes
    ppf_sizes: tuple[int, ...] = (24, 30, 60, 100)  # sides of the inverse-CDF grids
    steps: int = 20  # images in the interpolation strip
    spherical: bool = False  # interpolate on the great circle instead of the line
    order: tuple[int, ...] | None = None  # labels to morph through; None: every label, highest first (9, 8, ..., 0), at most 20
    frames: int = 10  # morph frames per transition
    split: SplitName = "test"  # the split for the example, the grids' plane, the interpolation and the morph
    seed: int = 0

    def __post_init__(self) -> None:
        # checked before any figure is drawn, so that a bad option does not stop `--all` half-way
        counts = {"--n": self.n, "--grid": self.grid, "--frames": self.frames, "--ppf-sizes": min(self.ppf_sizes, default=0)}
        for flag, value in counts.items():
            if value < 1:
                raise VaekitError(f"{flag} must be at least 1, got {value}")
        if self.steps < 2:
            raise VaekitError(f"an interpolation needs at least 2 --steps, got {self.steps}")
        if self.order is not None and len(self.order) < 2:
            raise VaekitError(f"a morph needs at least two labels in --order, got {','.join(map(str, self.order))}")
        if self.split not in SPLITS:
            raise VaekitError(f"unknown split {self.split!r}; choose one of {', '.join(SPLITS)}")
        if self.dims is not None and (len(set(self.dims)) != 2 or min(self.dims) < 0):
            raise VaekitError(f"--dims needs two different latent dimensions, counted from 0, got {','.join(map(str, self.dims))}")

    def check_fits(self, model: VAE) -> None:
        if self.dims is not None and max(self.dims) >= model.latent_size:
            raise VaekitError(f"--dims {','.join(map(str, self.dims))}: the latent has dimensions 0..{model.latent_size - 1}")


def all_plots(model: VAE, data: Splits, out_dir: str | Path, options: PlotOptions = PlotOptions(),
              kinds: Iterable[str] = KINDS, step: int | None = None, run_dir: str | Path | None = None) -> list[Path]:
    """Write every kind of figure of `kinds` into out_dir; return the files written.

    `step` (the model's training step) goes into the file names. The latent space over training
    comes from the snapshots a run made while training (`run_dir`, trained with snapshots on).
    A kind the model or data cannot give (a grid of a 1-D latent, say) is skipped with a FigureSkipped warning.
    """
    kinds = list(kinds)
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise VaekitError(f"unknown kind of figure {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    data.check_fits(model.input_size)
    options.check_fits(model)
    out_dir, tag = Path(out_dir), "" if step is None else f"_step{step}"
    paths: list[Path] = []
    for kind in kinds:
        try:
            paths += WRITERS[kind](model, data, out_dir, options, tag, run_dir)
        except Skipped as reason:
            warnings.warn(f"no {kind} figure: {reason}", FigureSkipped, stacklevel=2)
    return paths


class Skipped(Exception):
    """A kind of figure that this model, data or run cannot give."""


class FigureSkipped(UserWarning):
    """The warning of a kind of figure that all_plots skipped."""


def named(data: Splits, split: str) -> str:
    return f"{data.name} {split}".strip()


def write_reconstructions(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:
    return [save_reconstructions(model, data[split].x, out / f"reconstructions_{split}{tag}.png", options.n, named(data, split))
            for split in SPLITS]


def write_latent(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:
    return [save_latent_scatter(model, data[split].x, out / f"latent_{split}{tag}.png", data[split].y, named(data, split),
                                options.projection, seed=options.seed, class_names=data.class_names) for split in SPLITS]


def grid_plane(model: VAE, data: Splits, options: PlotOptions) -> LatentPlane:
    if model.latent_size < 2:
        raise Skipped("a grid needs a latent of at least 2 dimensions")
    mu = encoded_means(model, data[options.split].x) if model.latent_size > 2 else None
    return latent_plane(model.latent_size, mu, options.dims)


def write_manifold(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:
    plane = grid_plane(model, data, options)
    return [save_manifold_grid(model, out / f"manifold_linear_{options.grid}x{options.grid}{tag}.png", options.grid, options.span, plane=plane)]


def write_manifold_ppf(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:
    plane = grid_plane(model, data, options)
    return [save_manifold_grid(model, out / f"manifold_ppf_{n}x{n}{tag}.png", n, ppf=True, plane=plane) for n in options.ppf_sizes]


def write_interpolation(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:
    split = data[options.split]
    a, b = pick_pair(split, options.seed)
    if split.y is None:
        what, name = f"#{a} → #{b}", f"{a}_to_{b}"
    else:
        ya, yb = int(split.y[a]), int(split.y[b])
        what = f"#{a} (label {label_name(ya, data.class_names)}) → #{b} (label {label_name(yb, data.class_names)})"
        name = f"{ya}_to_{yb}"
    title = f"{named(data, options.split)} {what}"
    return [save_interpolation(model, split.x[a], split.x[b], out / f"interpolation_{name}{tag}.png", options.steps, options.spherical, title)]


def pick_pair(split: Split, seed: int) -> tuple[int, int]:
    """Two examples at random, of different labels where there are labels."""
    if len(split) < 2:
        raise Skipped("the split holds fewer than two examples")
    rng = np.random.default_rng(seed)
    a = int(rng.integers(len(split)))
    others = np.flatnonzero(split.y.numpy() != int(split.y[a])) if split.y is not None else np.array([])
    if len(others) == 0:
        others = np.delete(np.arange(len(split)), a)
    return a, int(rng.choice(others))


def write_morph(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:

    split = data[options.split]
    if split.y is None and options.order is None:  # no labels: morph through examples drawn at random instead
        if len(split) < 2:
            raise Skipped("the split holds fewer than two examples")
        picks = np.sort(np.random.default_rng(options.seed).choice(len(split), min(10, len(split)), replace=False))
        return [morph_examples(model, split.x[picks], out / f"morph_{len(picks)}_examples{tag}.gif", options.frames,
                               [f"#{i}" for i in picks])]
    if options.order is None:
        if len(split.y.unique()) < 2:
            raise Skipped(f"the {options.split} split holds one label only: nothing to morph between (give --order)")
        note_labels_missing_from(data, options.split)
    return [morph_by_label(model, split, out, options.order, options.frames, tag, data.class_names)]


def note_labels_missing_from(data: Splits, split: str) -> None:
    """Warn of labels of the data that the split holds no example of, and that a default morph will leave out."""
    known = set(range(len(data.class_names))) if data.class_names else {int(y) for part in SPLITS
                                                                         if data[part].y is not None for y in data[part].y.unique()}
    missing = sorted(known - {int(y) for y in data[split].y.unique()})
    if missing:
        names = ", ".join(label_name(label, data.class_names) for label in missing)
        warnings.warn(f"the {split} split holds no example of label {names}: the morph goes through the others", stacklevel=3)


def write_training(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:

    if run_dir is None:
        raise Skipped("give the run folder to draw the latent space over training")
    paths = snapshot_gifs(Path(run_dir), out)
    if not paths:
        raise Skipped(f"{run_dir} holds no snapshots; train with --snapshots to record the latent space over training")
    return paths


def write_example(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:
    split = data[options.split]
    label = "" if split.y is None else f" (label {label_name(int(split.y[0]), data.class_names)})"
    return [save_example(split.x[0], data.image_shape, out / f"example_{options.split}_0.png", f"{named(data, options.split)} example #0{label}",
                         display_range(model, split.x[0]))]


def write_prior(model: VAE, data: Splits, out: Path, options: PlotOptions, tag: str, run_dir: Any) -> list[Path]:
    return [save_prior_samples(model, out / f"prior_samples{tag}.png", seed=options.seed)]


WRITERS: dict[str, Callable[..., list[Path]]] = {
    "reconstructions": write_reconstructions,
    "latent": write_latent,
    "manifold": write_manifold,
    "manifold-ppf": write_manifold_ppf,
    "interpolation": write_interpolation,
    "morph": write_morph,
    "training": write_training,
    "example": write_example,
    "prior": write_prior,
}
