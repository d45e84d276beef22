"""Figures and GIFs: sizes, frame counts, pixels against the decoder, the snapshot schedule, the CLI."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from vaekit import DataConfig, ModelConfig, TrainConfig, VaekitError, train
from vaekit.animation import (
    MAX_DEFAULT_MORPH_LABELS,
    SNAPSHOT_FOLDER,
    caption_font,
    is_snapshot_step,
    morph_by_label,
    morph_examples,
    snapshot_files,
    snapshot_gifs,
    snapshot_steps,
)
from vaekit.cli import main
from vaekit.data import Split, Splits
from vaekit.images import (
    AXIS_MARGINS,
    RIGHT,
    canvas_figure,
    canvas_scale,
    image_grid,
    decoded_images,
    encoded_means,
    model_images,
    to_images,
    to_pixels,
)
from vaekit.latent import (
    grid_codes,
    grid_coordinates,
    interpolate,
    latent_plane,
    loop_path,
    principal_directions,
    project_to_plane,
)
from vaekit.model import VAE
from vaekit.plots import (
    KINDS,
    FigureSkipped,
    WRITERS,
    PlotOptions,
    all_plots,
    label_colours,
    manifold_canvas,
    prior_draws,
    save_example,
    save_interpolation,
    save_latent_scatter,
    save_manifold_grid,
    save_prior_samples,
    save_snapshot,
    save_reconstructions,
    scatter_figure,
    strip_figure,
)

GRAY, RGB = (1, 8, 8), (3, 8, 8)


def tiny_model(shape: tuple[int, int, int], latent: int = 2) -> VAE:
    """A fresh MLP VAE whose decoder is sharpened, so that different codes give visibly different images."""
    model = VAE(config=ModelConfig(architecture=(int(np.prod(shape)), 16, latent), image_shape=shape))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4)
    return model


def random_splits(shape: tuple[int, int, int], labels: bool = True, n: int = 40) -> Splits:
    generator = torch.Generator().manual_seed(1)

    def split() -> Split:
        x = torch.rand(n, int(np.prod(shape)), generator=generator)
        return Split(x, torch.arange(n) % 10 if labels else None)

    return Splits(split(), split(), split(), image_shape=shape, name="random")


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def gif_frames(path: Path) -> int:
    with Image.open(path) as image:
        return image.n_frames


# -- the manifold grid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [GRAY, RGB])
@pytest.mark.parametrize("ppf, padding", [(False, 0), (True, 0), (False, 1)])
def test_manifold_grid_pixels_are_the_decoder_output_at_the_grid_codes(shape, ppf, padding):
    model = tiny_model(shape)
    coords = grid_coordinates(5, (-3.0, 3.0), ppf)
    canvas, z = manifold_canvas(model, latent_plane(2), coords, padding)
    side = 5 * (8 + padding) + padding
    assert canvas.shape == (side, side, shape[0])
    for row in range(5):
        for column in range(5):
            # columns grow along z1 to the right, rows along z2 upwards
            np.testing.assert_allclose(z[row, column], [coords[column], coords[4 - row]])
            top, left = padding + row * (8 + padding), padding + column * (8 + padding)
            tile = canvas[top : top + 8, left : left + 8]
            # one code alone through the decoder: equal but for float rounding in the batched matrix product
            np.testing.assert_allclose(tile, decoded_images(model, z[row, column][None])[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [GRAY, RGB])
def test_saved_manifold_png_holds_the_decoder_pixels_exactly(tmp_path, shape):
    model = tiny_model(shape)
    path = save_manifold_grid(model, tmp_path / "grid.png", n=5, span=(-2.0, 2.0))
    # 8 x 8 images are enlarged 3 times, to 24, then get 1-pixel gaps: 5 * 25 + 1 = 126 pixels a side,
    # the whole enlarged 6 times to 756
    canvas, _ = manifold_canvas(model, latent_plane(2), grid_coordinates(5, (-2.0, 2.0)), padding=1, factor=3)
    scale = canvas_scale(canvas)
    assert scale == 6
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    left, bottom = AXIS_MARGINS
    assert pixels.shape[1] == 756 + left + RIGHT
    # The image sits `bottom` pixels above the figure's lower edge, `left` pixels from its left edge.
    shown = pixels[pixels.shape[0] - bottom - 756 : pixels.shape[0] - bottom, left : left + 756]
    expected = np.kron(to_pixels(canvas).reshape(126, 126, -1), np.ones((scale, scale, 1), np.uint8))
    np.testing.assert_array_equal(shown, np.broadcast_to(expected, shown.shape))


@pytest.mark.parametrize("shape", [GRAY, RGB])
def test_saved_reconstructions_hold_each_input_above_its_reconstruction(tmp_path, shape):
    model, x = tiny_model(shape), torch.rand(5, int(np.prod(shape)))
    path = save_reconstructions(model, x, tmp_path / "recon.png", n=5)
    images = np.concatenate([to_images(x, shape), to_images(model.reconstruct(x, sample=False), shape)])
    canvas = image_grid(images, 5)  # inputs in the top row, their reconstructions below
    scale, (height, width) = canvas_scale(canvas), canvas.shape[:2]
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    left, bottom = 130, 20  # the figure's margins
    shown = pixels[pixels.shape[0] - bottom - height * scale : pixels.shape[0] - bottom, left : left + width * scale]
    expected = np.kron(to_pixels(canvas).reshape(height, width, -1), np.ones((scale, scale, 1), np.uint8))
    np.testing.assert_array_equal(shown, np.broadcast_to(expected, shown.shape))


def test_scatter_colours_stay_with_their_points():
    points, labels = np.arange(20.0).reshape(10, 2), np.arange(10)  # point i at (2i, 2i + 1), label i
    collection = scatter_figure(points, labels, "", None).axes[0].collections[0]
    colours = label_colours(labels)
    for (x, _), colour in zip(collection.get_offsets(), collection.get_facecolors()):
        np.testing.assert_allclose(colour[:3], colours[int(x) // 2][:3])


def test_inverse_cdf_grid_uses_cell_midpoint_percentiles_of_the_standard_normal():
    coords = grid_coordinates(24, ppf=True)
    expected = [statistics.NormalDist().inv_cdf((i + 0.5) / 24) for i in range(24)]
    np.testing.assert_allclose(coords, expected, atol=1e-9)
    np.testing.assert_allclose(grid_coordinates(20), np.linspace(-4, 4, 20))
    assert grid_coordinates(1, (-4.0, 2.0)).tolist() == [-1.0]  # one tile: the span's centre, where it is drawn
    with pytest.raises(VaekitError, match="at least 1"):
        grid_coordinates(0)


def test_grid_plane_of_a_larger_latent_holds_the_rest_at_the_data_mean():
    mu = np.random.default_rng(0).normal(size=(200, 5)) + np.arange(5)
    plane = latent_plane(5, mu, dims=(1, 3))
    z = grid_codes(plane, np.array([-1.0, 2.0]))
    np.testing.assert_allclose(z[..., [0, 2, 4]], np.broadcast_to(mu.mean(0)[[0, 2, 4]], (2, 2, 3)))
    np.testing.assert_allclose(z[1, :, 1], [-1.0, 2.0])  # bottom row: z2 along the columns
    np.testing.assert_allclose(z[:, 0, 3], [2.0, -1.0])  # first column: z4 grows upwards
    with pytest.raises(VaekitError, match="two different latent dimensions"):
        latent_plane(5, mu, dims=(2, 2))
    with pytest.raises(VaekitError, match="encoded data"):
        latent_plane(5)


def test_principal_plane_follows_the_directions_of_largest_variance():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    mu = 3.0 * rng.normal(size=(500, 1)) * basis[0] + 1.0 * rng.normal(size=(500, 1)) * basis[1] + 7.0
    origin, u, v, share = principal_directions(mu)
    np.testing.assert_allclose(origin, mu.mean(0))
    assert abs(u @ basis[0]) > 0.999 and abs(v @ basis[1]) > 0.999
    assert u[np.abs(u).argmax()] > 0  # a fixed sign, so snapshots of one model do not flip
    assert share == pytest.approx(1.0)
    points, names, how = project_to_plane(mu, "pca")
    assert names == ("PC 1", "PC 2") and "PCA of 6-D means" in how
    # Data lying in a plane keeps its distances.
    np.testing.assert_allclose(np.linalg.norm(points[0] - points[1]), np.linalg.norm(mu[0] - mu[1]))


# -- interpolation and morph paths --------------------------------------------------------------------------------


def test_interpolations_run_from_one_code_to_the_other():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    line = interpolate(a, b, 5)
    np.testing.assert_allclose(line[[0, 2, 4]], [a, (a + b) / 2, b])
    arc = interpolate(a, b, 5, spherical=True)
    np.testing.assert_allclose(arc[[0, -1]], [a, b], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(arc, axis=1), 3.0)  # stays on the circle
    np.testing.assert_allclose(interpolate(a, 2 * a, 3, spherical=True), interpolate(a, 2 * a, 3))
    with pytest.raises(VaekitError, match="at least 2 steps"):
        interpolate(a, b, 1)
    for opposite in (-a, -1.0000001 * a):  # no one great circle: an error, not codes of norm 1e9
        with pytest.raises(VaekitError, match="opposite directions"):
            interpolate(a, opposite, 5, spherical=True)


def test_an_interpolation_of_rows_of_features_is_enlarged_by_their_length_not_their_height_of_1(tmp_path):
    model = VAE([101, 8, 2], likelihood="gaussian", image_shape=(1, 1, 101))  # 101 features: a 1 x 101 strip
    x = torch.rand(2, 101)
    width, height = png_size(save_interpolation(model, x[0], x[1], tmp_path / "i.png"))
    assert width < 4000 and height < 1000  # by the height, 64 times: 153,653 x 7,996 pixels and 6 GB to draw


def test_morph_path_loops_through_the_codes_without_repeating_frames():
    z = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    path = loop_path(z, 4)
    assert path.shape == (12, 2)
    np.testing.assert_allclose(path[[0, 4, 8]], z)
    np.testing.assert_allclose(path[11], [0.25, 0.25])  # on the way back to the first code
    assert len(np.unique(path, axis=0)) == 12


# -- every figure, gray and RGB ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [GRAY, RGB])
def test_each_figure_is_written_with_its_expected_size(tmp_path, shape):
    model, data = tiny_model(shape), random_splits(shape)
    left = AXIS_MARGINS[0]
    # 10 tiles of 8 pixels with 1-pixel gaps: 91 x 19, enlarged 8 times; 130 pixels for the row names.
    assert png_size(save_reconstructions(model, data.test.x, tmp_path / "r.png"))[0] == 91 * 8 + 130 + RIGHT
    # tiles enlarged to 24 pixels, with 1-pixel gaps: 20 tiles 501 pixels, 30 tiles 751 (neither enlarged again)
    assert png_size(save_manifold_grid(model, tmp_path / "m.png", n=20))[0] == 501 + left + RIGHT
    assert png_size(save_manifold_grid(model, tmp_path / "p.png", n=30, ppf=True))[0] == 751 + left + RIGHT
    assert png_size(save_prior_samples(model, tmp_path / "s.png", n=100))[0] == 91 * 8 + 20 + RIGHT
    # tiles enlarged to 64 pixels: the inputs (66 each with their gaps) and 32-pixel spacers around a strip of
    # 20 tiles (1301 pixels): 1497 pixels, wider than 1200, so the 20-pixel margins grow by 1497 / 1200 too
    margin = round(1497 / 1200 * 20)
    assert png_size(save_interpolation(model, data.test.x[0], data.test.x[1], tmp_path / "i.png"))[0] == 1497 + 2 * margin
    assert png_size(save_latent_scatter(model, data.test.x, tmp_path / "l.png", data.test.y)) == (800, 640)
    assert png_size(save_example(data.test.x[0], shape, tmp_path / "e.png")) == (600, 500)


def test_each_label_keeps_its_colour_in_every_split_and_neighbours_differ_in_hue():
    from matplotlib import colormaps

    everyone, without_zero = label_colours(np.arange(10)), label_colours(np.arange(1, 10))
    assert all(without_zero[label] == everyone[label] for label in range(1, 10))
    assert [everyone[label] for label in range(10)] == [colormaps["tab10"](i) for i in range(10)]
    twenty = label_colours(np.arange(20))
    assert len(set(twenty.values())) == 20 and twenty[4] == everyone[4] and twenty[5] == everyone[5]
    assert label_colours(np.array([0, 2, 3]))[2] == everyone[2] and label_colours(np.array([0, 5]))[5] == everyone[5]
    odd = label_colours(np.array([-1, 7, 100]))  # labels outside 0-19: by rank
    assert list(odd.values()) == [everyone[0], everyone[1], everyone[2]]


def test_a_one_dimensional_latent_is_drawn_one_row_per_label():
    z, labels = np.linspace(-2, 2, 60), np.repeat([3, 5, 8], 20)
    ax = strip_figure(z, labels, "", limits=(-4, 4), seed=0).axes[0]
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["3", "5", "8"]
    (points,) = [collection.get_offsets() for collection in ax.collections]
    rows = np.round(points[:, 1])
    assert sorted(zip(points[:, 0], rows)) == sorted(zip(z, np.repeat([0, 1, 2], 20)))  # each z in its label's row
    assert np.abs(points[:, 1] - rows).max() <= 0.35 and (points[:, 1] - rows).std() > 0.1  # spread across it
    assert ax.get_xlim() == (-4, 4)


def test_the_scatter_names_the_classes_where_the_data_name_them(tmp_path, digits):
    z, labels, names = np.linspace(-2, 2, 60), np.repeat([0, 2, 1], 20), ("circle", "square", "triangle")
    ax = strip_figure(z, labels, "", limits=None, seed=0, class_names=names).axes[0]
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["0: circle", "1: square", "2: triangle"]
    ax = scatter_figure(np.column_stack([z, z]), labels, "", None, class_names=names).axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["0: circle", "1: square", "2: triangle"]
    ax = scatter_figure(np.column_stack([z, z]), labels, "", None).axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["0", "1", "2"]
    named = Splits(digits.train, digits.valid, digits.test, digits.image_shape, class_names=tuple("abcdefghij"))
    run = train(VAE([64, 16, 2]), named, TrainConfig(max_steps=2, out=str(tmp_path), progress=False)).run_dir
    assert json.loads((run / "config.json").read_text())["class_names"] == list("abcdefghij")  # from Python, not only the CLI


def test_prior_samples_come_from_the_models_own_prior():
    vamp = VAE([64, 16, 2], prior="vamp", pseudo_inputs=5)
    with torch.no_grad():
        vamp.encoder.mu.bias.copy_(torch.tensor([0.0, 5.0]))  # every component sits near z = (0, 5)
        vamp.encoder.mu.weight.zero_()
    draws = prior_draws(vamp, 400)
    assert abs(float(draws[:, 1].mean()) - 5) < 0.3 and abs(float(draws[:, 0].mean())) < 0.3
    torch.testing.assert_close(prior_draws(vamp, 400), draws, rtol=0, atol=0)  # the same seed, the same codes
    standard = prior_draws(tiny_model(GRAY), 400)
    assert abs(float(standard.mean())) < 0.15 and abs(float(standard.std()) - 1) < 0.1


def test_a_single_mean_of_a_larger_latent_projects_to_the_origin():
    points, names, how = project_to_plane(np.random.default_rng(0).normal(size=(1, 5)), "pca")
    assert points.tolist() == [[0.0, 0.0]] and names == ("PC 1", "PC 2") and "single" in how


@pytest.mark.parametrize("projection", ["pca", "tsne"])
def test_latent_scatter_of_a_larger_latent_is_projected(tmp_path, projection):
    model, data = tiny_model(GRAY, latent=5), random_splits(GRAY)
    path = save_latent_scatter(model, data.test.x, tmp_path / "latent.png", data.test.y, projection=projection, seed=2**62 - 1)
    assert png_size(path) == (800, 640)  # (t-SNE's random_state refused seeds of 2^32 and more)
    with pytest.raises(VaekitError, match="unknown projection"):
        save_latent_scatter(model, data.test.x, tmp_path / "x.png", projection="umap")  # type: ignore[arg-type]


def test_morph_gif_has_the_frames_of_every_transition(tmp_path):
    model, data = tiny_model(GRAY), random_splits(GRAY)
    path = morph_by_label(model, data.test, tmp_path, frames_per_transition=4)
    assert path.name == "morph_9876543210.gif"
    assert gif_frames(path) == 10 * 4
    path = morph_by_label(model, data.test, tmp_path, order=[3, 1], frames_per_transition=5)
    assert gif_frames(path) == 2 * 5
    with pytest.raises(VaekitError, match="no example of label 11"):
        morph_by_label(model, data.test, tmp_path, order=[1, 11])
    with pytest.raises(VaekitError, match="needs labels"):
        morph_by_label(model, random_splits(GRAY, labels=False).test, tmp_path)


def test_morph_frames_of_narrow_images_are_wide_enough_for_their_captions(tmp_path):
    shape = (1, 28, 6)  # enlarged 9 times: 54 pixels wide, narrower than "#1234 → #567"
    names = ["#1234", "#567", "#8"]
    path = morph_examples(tiny_model(shape), torch.rand(3, 28 * 6), tmp_path / "narrow.gif", 2, names=names)
    with Image.open(path) as gif:
        width = gif.size[0]
    assert width >= caption_font().getlength("#1234 → #567") and gif_frames(path) == 3 * 2


def test_all_plots_draws_rgb_data_without_labels(tmp_path):
    model, data = tiny_model(RGB), random_splits(RGB, labels=False)
    options = PlotOptions(ppf_sizes=(6,), frames=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = all_plots(model, data, tmp_path, options)
    names = {path.name for path in paths}
    assert "morph_10_examples.gif" in names  # no labels: a morph through examples drawn at random
    assert gif_frames(tmp_path / "morph_10_examples.gif") == 10 * 3
    assert {"latent_test.png", "manifold_ppf_6x6.png", "example_test_0.png", "prior_samples.png"} <= names
    assert [str(w.message) for w in caught] == ["no training figure: give the run folder to draw the latent space over training"]
    assert all(path.is_file() for path in paths)
    if "matplotlib.pyplot" in sys.modules:  # figures never go through pyplot, so none stay open
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_many_reconstructions_take_more_columns_and_stay_about_square(tmp_path):
    model = tiny_model(GRAY)
    width, height = png_size(save_reconstructions(model, torch.rand(250, 64), tmp_path / "many.png", n=250))
    # 22 a row, not 10 (50 rows of tiles at 1x, too small to label): 24 rows of 9-pixel tiles, enlarged 3 times
    assert 0.7 < height / width < 1.3 and width >= 22 * 9 * 3
    assert png_size(save_reconstructions(model, torch.rand(10, 64), tmp_path / "ten.png")) == png_size(
        save_reconstructions(model, torch.rand(10, 64), tmp_path / "ten_in_a_row.png", columns=10))


def test_the_title_of_a_narrow_figure_stays_inside_it():
    # 300 reconstructions of 8 x 8 digits, ten a row: a canvas 60 rows tall and 91 pixels wide
    title = "digits test: 300 inputs (odd rows) above their reconstructions (even rows)"
    fig, ax = canvas_figure(np.zeros((541, 91, 1)), title)
    FigureCanvasAgg(fig).draw()
    box = ax.title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_rgba_images_are_shown_over_white():
    # two pixels (C, H, W) = (4, 1, 2): a transparent green and a half-transparent red
    x = np.array([[0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5]])
    np.testing.assert_allclose(to_images(x, (4, 1, 2))[0, 0], [[1.0, 1.0, 1.0], [1.0, 0.5, 0.5]])


def test_images_of_other_channel_counts_show_their_channels_side_by_side(tmp_path):
    x = np.arange(2 * 24).reshape(2, 24) / 48  # two examples of 2 channels of 4 x 3 pixels
    images = to_images(x, (2, 4, 3))
    assert images.shape == (2, 4, 6, 1)
    np.testing.assert_array_equal(images[1, :, 3:, 0], x[1].reshape(2, 4, 3)[1])
    options = PlotOptions(ppf_sizes=(6,), frames=3)
    two_channels = all_plots(tiny_model((2, 8, 8)), random_splits((2, 8, 8)), tmp_path / "two", options)
    grey = all_plots(tiny_model(GRAY), random_splits(GRAY), tmp_path / "grey", options)
    assert sorted(path.name for path in two_channels) == sorted(path.name for path in grey)


@pytest.mark.parametrize("options, message", [
    (dict(steps=1), "at least 2 --steps"),
    (dict(order=(3,)), "at least two labels in --order"),
    (dict(dims=(1, 1)), "two different latent dimensions"),
    (dict(ppf_sizes=(6, 0)), "--ppf-sizes must be at least 1"),
])
def test_bad_figure_options_are_refused_before_any_figure_is_drawn(options, message):
    with pytest.raises(VaekitError, match=message):
        PlotOptions(**options)


def test_dimensions_the_latent_lacks_are_refused_before_any_figure_is_drawn(tmp_path):
    with pytest.raises(VaekitError, match="the latent has dimensions 0..2"):
        all_plots(tiny_model(GRAY, latent=3), random_splits(GRAY), tmp_path, PlotOptions(dims=(0, 3)))
    assert list(tmp_path.iterdir()) == []


def test_figures_name_classes_and_a_morph_notes_the_labels_its_split_lacks(tmp_path, monkeypatch):
    import vaekit.animation

    data = random_splits(GRAY)
    data = Splits(data.train, data.valid, Split(data.test.x[:5], data.test.y[:5]), GRAY, "shapes", tuple(f"class{i}" for i in range(10)))
    captions = []
    monkeypatch.setattr(vaekit.animation, "morph_examples", lambda model, x, path, frames, names: captions.append(names) or path)
    with pytest.warns(UserWarning, match="holds no example of label 5: class5, 6: class6, 7: class7, 8: class8, 9: class9"):
        all_plots(tiny_model(GRAY), data, tmp_path, kinds=["morph"])
    assert captions == [["4: class4", "3: class3", "2: class2", "1: class1", "0: class0"]]


def test_a_morph_by_label_of_one_label_is_skipped_and_of_many_labels_has_a_short_name(tmp_path):
    data = random_splits(GRAY)
    one_label = Splits(data.train, data.valid, Split(data.test.x, torch.zeros_like(data.test.y)), GRAY)
    with pytest.warns(FigureSkipped, match="no morph figure: the test split holds one label only"):
        assert all_plots(tiny_model(GRAY), one_label, tmp_path / "one", kinds=["morph", "prior"])  # the prior's still drawn
    many = Split(data.test.x, torch.arange(len(data.test.x)) * 1000)  # a file name listing them would pass 255 bytes
    assert len(many.x) > MAX_DEFAULT_MORPH_LABELS
    path = morph_by_label(tiny_model(GRAY), many, tmp_path, order=many.y.tolist()[::-1], frames_per_transition=1)
    assert path.name.startswith(f"morph_{len(many.x)}_labels_") and gif_frames(path) == len(many.x)
    reversed_order = morph_by_label(tiny_model(GRAY), many, tmp_path, order=many.y.tolist(), frames_per_transition=1)
    assert reversed_order != path  # another order of as many labels: another file
    with pytest.warns(UserWarning, match=f"the split has {len(many.x)} labels: the morph goes through the 20 highest"):
        capped = morph_by_label(tiny_model(GRAY), many, tmp_path, frames_per_transition=1)  # unless --order names them
    assert capped.name.startswith("morph_20_labels_") and gif_frames(capped) == 20


def test_all_plots_refuses_unknown_kinds_and_data_of_another_size(tmp_path):
    model = tiny_model(GRAY)
    assert set(WRITERS) == set(KINDS)
    with pytest.raises(VaekitError, match="unknown kind of figure"):
        all_plots(model, random_splits(GRAY), tmp_path, kinds=["histogram"])
    with pytest.raises(VaekitError, match="the model takes 64"):
        all_plots(model, random_splits(RGB), tmp_path)


# -- the latent space over training ----------------------------------------------------------------------------


def test_snapshot_steps_follow_the_logarithmic_schedule():
    assert snapshot_steps(1024) == [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024]
    expected = {round(2 ** (k / 2)) for k in range(60)}
    scheduled = [step for step in range(0, 20001) if is_snapshot_step(step)]
    assert scheduled == sorted(s for s in expected if s <= 20000) == snapshot_steps(20000)


def train_tiny(tmp_path: Path, name: str, max_steps: int, snapshots: bool, run_dir: Path | None = None):
    data = random_splits(GRAY, n=64)
    config = TrainConfig(epochs=None, max_steps=max_steps, batch_size=16, out=str(tmp_path / name), progress=False,
                         snapshots=snapshots)
    torch.manual_seed(0)  # the same initial weights for every run
    return train(VAE(config=ModelConfig(architecture=(64, 16, 2), image_shape=GRAY)), data, config, run_dir=run_dir)


def test_training_snapshots_leave_the_weights_alone_and_make_gifs(tmp_path):
    plain = train_tiny(tmp_path, "plain", 9, snapshots=False)
    seen = train_tiny(tmp_path, "seen", 9, snapshots=True)
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), seen.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    files = sorted(path.name for path in (seen.run_dir / SNAPSHOT_FOLDER).iterdir())
    steps = [1, 2, 3, 4, 6, 8, 9]  # round(2^(k/2)), and the last step
    assert files == sorted([f"latent_valid_step{s:07d}.png" for s in steps] + [f"manifold_ppf30_step{s:07d}.png" for s in steps])
    for gif in ("latent_over_training.gif", "manifold_over_training.gif"):
        assert gif_frames(seen.run_dir / gif) == len(steps)
    assert not (plain.run_dir / SNAPSHOT_FOLDER).exists()


def test_resumed_run_makes_its_gifs_from_the_schedule_and_its_last_step(tmp_path):
    first = train_tiny(tmp_path, "run", 5, snapshots=True)
    assert gif_frames(first.run_dir / "manifold_over_training.gif") == 5  # steps 1, 2, 3, 4 and the last, 5
    resumed = train_tiny(tmp_path, "run", 9, snapshots=True, run_dir=first.run_dir)
    assert resumed.progress.step == 9
    assert gif_frames(first.run_dir / "manifold_over_training.gif") == 7  # 1, 2, 3, 4, 6, 8, 9: the first session's 5 is off the schedule
    kept = sorted(path.name for path in (first.run_dir / SNAPSHOT_FOLDER).glob("manifold*"))
    assert kept == [f"manifold_ppf30_step{s:07d}.png" for s in (1, 2, 3, 4, 6, 8, 9)]  # its file goes too: none piles up
    assert len(snapshot_gifs(first.run_dir, tmp_path / "copy")) == 2
    on_schedule = train_tiny(tmp_path, "run", 11, snapshots=True, run_dir=first.run_dir)  # 11 = round(2^3.5): a snapshot step
    kept = sorted(path.name for path in (on_schedule.run_dir / SNAPSHOT_FOLDER).glob("manifold*"))
    assert kept == [f"manifold_ppf30_step{s:07d}.png" for s in (1, 2, 3, 4, 6, 8, 11)]  # the second session's 9 goes too


def test_a_crash_while_snapshotting_a_checkpointed_step_loses_no_frame(tmp_path, monkeypatch):
    import vaekit.plots

    class Crash(Exception):
        pass

    def crash_at_step_4(model, data, run_dir, step):
        if step == 4:  # as a SIGKILL there: had the checkpoint of step 4 been written first, no resume would draw it
            raise Crash
        return real_save_snapshot(model, data, run_dir, step)

    real_save_snapshot = vaekit.plots.save_snapshot
    data = random_splits(GRAY, n=64)
    config = TrainConfig(epochs=None, max_steps=6, batch_size=16, checkpoint_every=4, out=str(tmp_path), progress=False, snapshots=True)
    model = VAE(config=ModelConfig(architecture=(64, 16, 2), image_shape=GRAY))
    monkeypatch.setattr(vaekit.plots, "save_snapshot", crash_at_step_4)
    with pytest.raises(Crash):
        train(model, data, config)
    monkeypatch.undo()
    (run_dir,) = tmp_path.iterdir()
    train(VAE(config=model.config), data, config, run_dir=run_dir)
    assert [step for step, _ in snapshot_files(run_dir, "latent_valid")] == [1, 2, 3, 4, 6]


def test_a_snapshot_cut_short_by_a_crash_does_not_stop_the_gifs(tmp_path):
    first = train_tiny(tmp_path, "run", 5, snapshots=True)
    (broken,) = first.run_dir.rglob("manifold*step0000003.png")
    broken.write_bytes(b"")  # as a SIGKILL mid-write left it before PNGs were written atomically
    with pytest.warns(UserWarning, match="not a readable snapshot"):
        paths = snapshot_gifs(first.run_dir)
    assert len(paths) == 2 and gif_frames(first.run_dir / "manifold_over_training.gif") == 4


def test_snapshots_that_are_no_files_or_far_too_large_are_left_out_of_the_gifs(tmp_path):
    import os

    from PIL import Image

    first = train_tiny(tmp_path, "run", 5, snapshots=True)
    (fifo,) = first.run_dir.rglob("manifold*step0000003.png")
    fifo.unlink()
    os.mkfifo(fifo)  # as a tar archive may carry one: opening it would wait for a writer for ever
    (huge,) = first.run_dir.rglob("latent*step0000001.png")
    Image.new("L", (5000, 10)).save(huge)  # every frame would be brought to the first one's size
    with pytest.warns(UserWarning, match=r"step0000001.png is not a readable snapshot \(5000x10 pixels\)"):
        snapshot_gifs(first.run_dir)
    assert gif_frames(first.run_dir / "manifold_over_training.gif") == 4
    assert gif_frames(first.run_dir / "latent_over_training.gif") == 4


def test_figures_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    model, data = tiny_model(GRAY), random_splits(GRAY)
    save_reconstructions(model, data.test.x, tmp_path / "r.png", n=2)
    before = (tmp_path / "r.png").read_bytes()

    def killed(figure, fname, *args, **kwargs):
        Path(fname).write_bytes(b"half a PNG")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", killed)
    with pytest.raises(VaekitError, match="No space left"):
        save_reconstructions(model, data.test.x, tmp_path / "r.png", n=4)
    assert (tmp_path / "r.png").read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_snapshot_leaves_the_random_stream_alone(tmp_path):
    model, data = tiny_model(GRAY, latent=3), random_splits(GRAY)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    paths = save_snapshot(model, data, tmp_path, 7)
    assert torch.equal(torch.get_rng_state(), before)
    assert [path.name for path in paths] == ["manifold_ppf30_step0000007.png", "latent_valid_step0000007.png"]
    one_d = save_snapshot(tiny_model(GRAY, latent=1), data, tmp_path, 8)  # no plane for a grid: the scatter only
    assert [path.name for path in one_d] == ["latent_valid_step0000008.png"]
    one_example = Splits(data.train, Split(data.valid.x[:1], data.valid.y[:1]), data.test, GRAY)  # no principal directions
    assert len(save_snapshot(model, one_example, tmp_path, 9)) == 2  # the grid on the first two dimensions


# -- the command line ---------------------------------------------------------------------------------------------


def test_cli_plot_all_writes_every_kind(tmp_path, capsys):
    from vaekit.data import load_data

    data_config = DataConfig("digits")
    config = TrainConfig(epochs=None, max_steps=4, out=str(tmp_path), progress=False, snapshots=True)
    model = VAE(config=ModelConfig(architecture=(64, 16, 2), image_shape=(1, 8, 8)))
    run_dir = train(model, load_data(data_config), config, data_config).run_dir
    out = tmp_path / "figures"
    assert main(["plot", str(run_dir), "--all", "--out", str(out), "--ppf-sizes", "6,8", "--frames", "2"]) == 0
    names = {path.name for path in out.iterdir()}
    assert names == {
        *(f"reconstructions_{s}_step4.png" for s in ("train", "valid", "test")),
        *(f"latent_{s}_step4.png" for s in ("train", "valid", "test")),
        "manifold_linear_20x20_step4.png", "manifold_ppf_6x6_step4.png", "manifold_ppf_8x8_step4.png",
        *(n for n in names if n.startswith("interpolation_") and n.endswith("_step4.png")),
        "morph_9876543210_step4.gif", "latent_over_training.gif", "manifold_over_training.gif",
        "example_test_0.png", "prior_samples_step4.png",
    }
    assert len([n for n in names if n.startswith("interpolation_")]) == 1
    assert gif_frames(out / "morph_9876543210_step4.gif") == 20
    assert "wrote 15 figures" in capsys.readouterr().err

    assert main(["plot", str(run_dir), "--kind", "morph", "--order", "1,12", "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip() == "vaekit: error: no example of label 12 to morph through"
    assert main(["plot", str(tmp_path / "missing"), "--all"]) == 1
    assert "is not a vaekit run folder" in capsys.readouterr().err
    shutil.rmtree(run_dir / SNAPSHOT_FOLDER)  # now a run without snapshots: a figure asked for by name that cannot be drawn
    assert main(["plot", str(run_dir), "--kind", "training", "--out", str(tmp_path / "none")]) == 1
    assert "vaekit: error: no training figure" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot", str(run_dir), "--kind", "histogram"])


def test_uint8_pixels_are_drawn_and_encoded_as_the_model_takes_them(tmp_path):
    model, data = tiny_model(GRAY), random_splits(GRAY)
    pixels = (data.test.x * 255).round().to(torch.uint8)
    scaled = pixels.float() / 255
    np.testing.assert_array_equal(encoded_means(model, pixels), encoded_means(model, scaled))
    for x, name in ((pixels, "bytes"), (scaled, "floats")):
        save_reconstructions(model, x, tmp_path / f"{name}.png", n=4)
        save_interpolation(model, x[0], x[1], tmp_path / f"line_{name}.png")
    for kind in ("", "line_"):  # the same figure: the inputs drawn scaled, not saturated
        with Image.open(tmp_path / f"{kind}bytes.png") as a, Image.open(tmp_path / f"{kind}floats.png") as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_label_for_each_example_or_a_clear_error(tmp_path):
    model, data = tiny_model(GRAY), random_splits(GRAY)
    with pytest.raises(VaekitError, match="39 labels for 40 examples"):
        save_latent_scatter(model, data.test.x, tmp_path / "s.png", data.test.y[:-1])


def test_morph_by_label_takes_a_folder_name_as_a_string(tmp_path):
    path = morph_by_label(tiny_model(GRAY), random_splits(GRAY).test, str(tmp_path), order=[1, 7], frames_per_transition=2)
    assert path == tmp_path / "morph_17.gif" and gif_frames(path) == 4


def test_one_example_must_fill_its_image_shape(tmp_path):
    with pytest.raises(VaekitError, match=r"one example of 64 values is no image of shape \(1, 28, 28\)"):
        save_example(np.zeros(64), (1, 28, 28), tmp_path / "e.png")


def test_figures_of_an_early_stopped_run_carry_the_step_of_the_weights_they_show(tmp_path):
    from vaekit.cli import trained_steps
    from vaekit.data import load_data

    data_config = DataConfig("digits")
    config = TrainConfig(epochs=8, patience=2, lr=0.2, batch_size=512, out=str(tmp_path), progress=False)  # too fast: it gets worse
    torch.manual_seed(0)
    result = train(VAE(config=ModelConfig(architecture=(64, 16, 2), image_shape=(1, 8, 8))), load_data(data_config), config, data_config)
    progress = result.progress
    best_step = next(entry["step"] for entry in progress.history if entry["epoch"] == progress.best_epoch)
    assert best_step < progress.step  # stopped after its best epoch: model.safetensors holds the best epoch's weights
    assert trained_steps(result.run_dir) == best_step

    import os

    checkpoint = result.run_dir / "checkpoint.safetensors"
    checkpoint.unlink()
    os.mkfifo(checkpoint)  # as a tar archive may carry: opening it would hang plot, past Ctrl-C
    assert trained_steps(result.run_dir) is None  # the figures go without a step in their names


def test_plot_options_refuse_what_no_figure_can_draw():
    for options, message in ((dict(split="validation"), "unknown split 'validation'; choose one of train, valid, test"),
                             (dict(dims=(1, 1)), "--dims needs two different latent dimensions"), (dict(steps=1), "at least 2 --steps")):
        with pytest.raises(VaekitError, match=message):
            PlotOptions(**options)


@pytest.mark.parametrize(("flags", "message"), [(["--dims", "1"], "expected 2 comma-separated"), (["--range=2,2"], "LO < HI")])
def test_plot_flags_of_the_wrong_shape_are_refused_by_the_parser(flags, message, capsys):
    from vaekit.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["plot", "RUN", "--all", *flags])
    assert message in capsys.readouterr().err


def test_real_valued_data_are_drawn_from_their_lowest_value_to_their_highest():
    real = dict(likelihood="gaussian", gaussian_mean="identity", image_shape=(1, 2, 2))
    recorded = VAE([4, 3, 2], value_range=(-2.0, 6.0), **real)
    assert model_images(recorded, np.array([[-2.0, 2.0, 6.0, 10.0]], np.float32)).reshape(-1).tolist() == [0.0, 0.5, 1.0, 1.5]
    assert to_pixels(model_images(recorded, np.array([[10.0, -9.0, 2.0, 6.0]], np.float32))[0]).tolist() == [[255, 0], [128, 255]]
    unrecorded = VAE([4, 3, 2], **real)  # built and trained outside vaekit.train: what is shown is stretched
    assert model_images(unrecorded, np.array([[1.0, 3.0, 5.0, 9.0]], np.float32)).reshape(-1).tolist() == [0.0, 0.25, 0.5, 1.0]
    pixels = VAE([4, 3, 2], image_shape=(1, 2, 2), likelihood="gaussian")  # values in [0, 1] are drawn as they are
    assert model_images(pixels, np.array([[0.2, 0.4, 0.6, 0.8]], np.float32)).reshape(-1).tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_reconstructions_of_real_values_share_one_scale_with_their_inputs(tmp_path):
    x = torch.linspace(-3, 5, 8 * 4).reshape(8, 4)
    model = VAE([4, 3, 2], likelihood="gaussian", gaussian_mean="identity", image_shape=(1, 2, 2))
    with torch.no_grad():
        model.decoder.logits.weight.zero_()
        model.decoder.logits.bias.fill_(3.0)  # every reconstruction is 3 everywhere: (3 - -3) / 8 of the way to white
    path = save_reconstructions(model, x, tmp_path / "r.png", n=8)
    canvas = np.asarray(Image.open(path).convert("L"))
    assert (canvas == 191).sum() >= 8 * 4  # 8 tiles of 2 x 2 (each enlarged); a scale of their own would draw them mid-grey
