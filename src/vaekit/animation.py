"""Animated GIFs: a morph through encoded examples, and the latent space over logarithmic training time.

The morph (the original's morph_numbers) loops through the codes of one example per label.
While training with snapshots on, the trainer calls `plots.save_snapshot` at steps round(2^(k/2)),
k = 0, 1, 2, ... (the original's base 2, increment 0.5), and at the last step: a 30 x 30 inverse-CDF grid and a
scatter of the validation codes go into RUN/snapshots/, the step in each file's name, and
`snapshot_gifs` makes one GIF of each from every snapshot on disk, so a resumed run's GIFs
start at its first step. GIFs are written with Pillow.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaekit.errors import VaekitError
from vaekit.files import atomic_write_with
from vaekit.images import decoded_images, encoded_means, label_name, prepare_path, to_pixels
from vaekit.latent import loop_path

if TYPE_CHECKING:
    from PIL import Image, ImageFont

    from vaekit.data import Split
    from vaekit.model import VAE

SNAPSHOT_BASE, SNAPSHOT_INCREMENT = 2.0, 0.5
SNAPSHOT_FOLDER = "snapshots"
SNAPSHOT_KINDS = {"manifold": "manifold_ppf30", "latent": "latent_valid"}  # GIF name -> snapshot file prefix
SNAPSHOT_FRAME_MS, LAST_FRAME_MS = 500, 2500
MAX_FRAME_PX = 4096  # a larger snapshot was not drawn here, and every frame would be brought to its size
MORPH_FRAME_MS, MORPH_HOLD_MS = 60, 600  # each example is held a while, so it can be recognised
MORPH_PX = 256  # the morph's images are enlarged by a whole factor towards this size
CAPTION_PX = 30


# -- GIF files ----------------------------------------------------------------------------------------------


def save_gif(frames: Sequence[Image.Image], path: str | Path, durations_ms: Sequence[int]) -> Path:
    """Write frames (all one size) as a looping GIF, each shown for its duration.

    Pillow stores a frame identical to the one before it as a longer showing of that frame.
    """
    if not frames:
        raise VaekitError(f"no frames for {path}")
    path = prepare_path(path)
    frames = [frame if frame.mode == "RGB" else frame.convert("RGB") for frame in frames]  # (no second copy of RGB ones)
    try:
        atomic_write_with(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                           duration=list(durations_ms), loop=0, optimize=False))
    except ValueError as error:
        raise VaekitError(f"cannot write {path}: {error}") from None
    return path


def caption_font(size: int = 18) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib ships: it has the arrows and subscripts the captions use."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def captioned(image: np.ndarray, caption: str, font: ImageFont.FreeTypeFont, width: int = 0) -> Image.Image:
    """An image (H, W, C) in [0, 1], enlarged towards MORPH_PX, above a white band with a caption; the frame is
    `width` pixels wide where the enlarged image is narrower (frames of one GIF share a size)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(to_pixels(image)).convert("RGB")
    scale = max(1, MORPH_PX // max(picture.size))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    frame = Image.new("RGB", (max(picture.width, width), picture.height + CAPTION_PX), "white")
    frame.paste(picture, ((frame.width - picture.width) // 2, 0))
    ImageDraw.Draw(frame).text((frame.width / 2, picture.height + CAPTION_PX / 2), caption, fill="black", font=font, anchor="mm")
    return frame


def caption_width(captions: Iterable[str], font: ImageFont.FreeTypeFont) -> int:
    """Pixels wide that a frame must be for the longest of these captions to fit, with a margin."""
    return max(round(font.getlength(caption)) for caption in captions) + CAPTION_PX


# -- 5. morph (morph_numbers) ----------------------------------------------------------------------------------


def morph_examples(model: VAE, x: torch.Tensor, path: str | Path, frames_per_transition: int = 10,
                   names: Sequence[str] | None = None) -> Path:
    """A looping GIF through the means of q(z|x) of the examples x, in order and back to the first.

    Each of the len(x) transitions has frames_per_transition frames (the first is the example's own
    code); every frame is captioned with the transition, e.g. "9 → 8".
    """
    names = list(names) if names is not None else [f"#{i}" for i in range(len(x))]
    z = loop_path(encoded_means(model, x), frames_per_transition)
    images = decoded_images(model, z)
    font = caption_font()
    captions = [f"{names[start]} → {names[(start + 1) % len(names)]}" for start in range(len(names))]
    width = caption_width(captions, font)
    frames, durations = [], []
    for index, image in enumerate(images):
        frames.append(captioned(image, captions[index // frames_per_transition], font, width))
        durations.append(MORPH_HOLD_MS if index % frames_per_transition == 0 else MORPH_FRAME_MS)
    return save_gif(frames, path, durations)


MAX_NAMED_ORDER = 60  # characters of a morph's label order that its file name lists
MAX_DEFAULT_MORPH_LABELS = 20  # labels a morph goes through unless --order names them


def morph_by_label(model: VAE, split: Split, out_dir: str | Path, order: Sequence[int] | None = None,
                   frames_per_transition: int = 10, tag: str = "", class_names: Sequence[str] = ()) -> Path:
    """Morph through one typical example of each label in `order` (default: every label of the split, highest first,
    at most MAX_DEFAULT_MORPH_LABELS of them), captioned with the labels (and their class names, where the data name them).

    The typical example of a label is the one whose code lies nearest the mean code of its label.
    """
    if split.y is None:
        raise VaekitError("a morph by label needs labels, and this data has none")
    labels = split.y.numpy()
    if order is None:
        order = sorted(np.unique(labels).tolist(), reverse=True)
        if len(order) > MAX_DEFAULT_MORPH_LABELS:  # 300 labels made 3,000 frames and 2 GB of them
            warnings.warn(f"the split has {len(order)} labels: the morph goes through the {MAX_DEFAULT_MORPH_LABELS} highest; "
                          "choose others with --order", stacklevel=2)
            order = order[:MAX_DEFAULT_MORPH_LABELS]
    order = list(order)
    present = set(labels.tolist())
    missing = [label for label in order if label not in present]
    if missing:
        raise VaekitError(f"no example of label {', '.join(map(str, missing))} to morph through")
    mu = encoded_means(model, split.x)
    picks = []
    for label in order:
        members = np.flatnonzero(labels == label)
        distance = np.linalg.norm(mu[members] - mu[members].mean(0), axis=1)
        picks.append(members[distance.argmin()])
    name = "".join(map(str, order)) if all(0 <= label <= 9 for label in order) else "_".join(map(str, order))
    if len(name) > MAX_NAMED_ORDER:  # file names stop at 255 bytes: many labels are counted, not listed, and a
        name = f"{len(order)}_labels_{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"  # hash tells orders apart
    path = Path(out_dir) / f"morph_{name}{tag}.gif"
    return morph_examples(model, split.x[picks], path, frames_per_transition, [label_name(label, class_names) for label in order])


# -- 6. the latent space over logarithmic training time --------------------------------------------------------


def snapshot_steps(last_step: int) -> list[int]:
    """The steps up to last_step at which training snapshots are taken: round(2^(k/2)), k = 0, 1, 2, ..."""
    steps: set[int] = set()
    k = 0
    while (step := round(SNAPSHOT_BASE ** (k * SNAPSHOT_INCREMENT))) <= last_step:
        steps.add(step)
        k += 1
    return sorted(steps)


def is_snapshot_step(step: int) -> bool:
    """Whether step is round(2^(k/2)) for some k >= 0."""
    if step < 1:
        return False
    k = 2 * math.log2(step)
    return any(round(SNAPSHOT_BASE ** (j * SNAPSHOT_INCREMENT)) == step for j in range(max(0, int(k) - 1), int(k) + 3))


def snapshot_files(run_dir: str | Path, prefix: str) -> list[tuple[int, Path]]:
    """(step, file) of every snapshot PNG with this prefix in run_dir/snapshots, in order of step."""
    pattern = re.compile(rf"{re.escape(prefix)}_step(\d+)\.png")
    found = []
    for path in (Path(run_dir) / SNAPSHOT_FOLDER).glob(f"{prefix}_step*.png"):
        match = pattern.fullmatch(path.name)
        if match and path.is_file():  # (a FIFO of that name would hang the reading)
            found.append((int(match.group(1)), path))
    return sorted(found)


def drop_stale_snapshots(run_dir: str | Path, last_step: int) -> None:
    """Delete the snapshots of earlier sessions' last steps, off the schedule (the GIFs leave them out): one per
    session would pile up over many resumes. The schedule's and this last step's stay."""
    for prefix in SNAPSHOT_KINDS.values():
        for step, file in snapshot_files(run_dir, prefix):
            if step < last_step and not is_snapshot_step(step):
                file.unlink(missing_ok=True)


def snapshot_gifs(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Assemble every snapshot on disk into out_dir (default: run_dir)/<kind>_over_training.gif; return them."""
    from PIL import Image

    paths = []
    for kind, prefix in SNAPSHOT_KINDS.items():
        files = snapshot_files(run_dir, prefix)
        if not files:
            continue
        # the schedule's steps and the last: an earlier session's last step, off the schedule, was not the run's
        files = [(step, file) for step, file in files if is_snapshot_step(step) or step == files[-1][0]]
        frames = []
        for _, file in files:
            try:
                with Image.open(file) as image:
                    if max(image.size) > MAX_FRAME_PX:  # a snapshot is about 800 pixels: this one was not written here
                        raise ValueError(f"{image.width}x{image.height} pixels")
                    frame = image.convert("RGB")
            except (OSError, ValueError) as error:  # written before atomic writes, and cut short by a crash
                warnings.warn(f"{file} is not a readable snapshot ({error}): the GIF goes on without it", stacklevel=2)
                continue
            if frames and frame.size != frames[0].size:  # a snapshot from another version of vaekit
                frame = frame.resize(frames[0].size)
            frames.append(frame)
        if not frames:
            continue
        durations = [SNAPSHOT_FRAME_MS] * (len(frames) - 1) + [LAST_FRAME_MS]
        paths.append(save_gif(frames, Path(out_dir or run_dir) / f"{kind}_over_training.gif", durations))
    return paths
