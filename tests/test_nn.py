"""Encoder and decoder networks: shapes for every image size, exact geometry, the registry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vaekit.config import NONLINEARITIES, ModelConfig, conv_feature_sizes, conv_padding
from vaekit.errors import VaekitError
from vaekit.nn import ACTIVATIONS, NETWORKS, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, transposed_padding


def conv_config(image_shape: tuple[int, int, int], latent: int = 5, hidden: tuple[int, ...] = (), **options) -> ModelConfig:
    size = image_shape[0] * image_shape[1] * image_shape[2]
    return ModelConfig(architecture=(size, *hidden, latent), model="conv", image_shape=image_shape, **options)


def test_every_nonlinearity_the_config_offers_is_built() -> None:
    assert sorted(ACTIVATIONS) == sorted(NONLINEARITIES)  # (the explorer's tests cover each of ACTIVATIONS)


def test_registry_names_both_model_kinds() -> None:
    assert NETWORKS == {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}


def test_mlp_networks_map_rows_to_latent_parameters_and_back() -> None:
    config = ModelConfig(architecture=(64, 32, 16, 3))
    mu, log_sigma = MLPEncoder(config)(torch.rand(7, 64))
    assert mu.shape == log_sigma.shape == (7, 3)
    assert MLPDecoder(config)(torch.randn(4, 7, 3)).shape == (4, 7, 64)


@pytest.mark.parametrize(
    "image_shape",
    [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 28, 20), (1, 15, 9)],
    ids=lambda shape: "x".join(map(str, shape)),
)
def test_conv_networks_give_back_exactly_the_image_size(image_shape: tuple[int, int, int]) -> None:
    channels = (8, 16) if min(image_shape[1:]) < 16 else (8, 16, 32)
    config = conv_config(image_shape, conv_channels=channels)
    x = torch.rand(6, config.input_size)
    mu, log_sigma = ConvEncoder(config)(x)
    assert mu.shape == log_sigma.shape == (6, 5)
    logits = ConvDecoder(config)(mu)
    assert logits.shape == (6, config.input_size)


def test_conv_feature_sizes_follow_the_convolution_formula() -> None:
    # kernel 4, stride 2, padding 1: floor(size / 2); kernel 3, stride 2, padding 1: ceil(size / 2)
    assert conv_feature_sizes((1, 28, 28), [(8, 4, 2)] * 3) == [(28, 28), (14, 14), (7, 7), (3, 3)]
    assert conv_feature_sizes((1, 28, 28), [(8, 3, 2)] * 3) == [(28, 28), (14, 14), (7, 7), (4, 4)]
    assert conv_feature_sizes((3, 8, 12), [(8, 5, 1), (8, 4, 2)]) == [(8, 12), (8, 12), (4, 6)]


def test_conv_layers_are_built_as_configured() -> None:
    config = conv_config((3, 32, 32), conv_channels=(8, 16, 32), conv_kernels=(5, 3, 3), conv_strides=(1, 2, 2))
    convs = [m for m in ConvEncoder(config).convs if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (3, 8, 5, 1), (8, 16, 3, 2), (16, 32, 3, 2)
    ]
    deconvs = [m for m in ConvDecoder(config).deconvs if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels, d.kernel_size[0], d.stride[0]) for d in deconvs] == [
        (32, 16, 3, 2), (16, 8, 3, 2), (8, 3, 5, 1)
    ]


def test_conv_hidden_sizes_are_dense_layers_between_features_and_latent() -> None:
    config = conv_config((1, 8, 8), hidden=(40, 20), conv_channels=(4, 8))
    encoder_linears = [m for m in ConvEncoder(config).hidden if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in encoder_linears] == [(8 * 2 * 2, 40), (40, 20)]
    decoder_linears = [m for m in ConvDecoder(config).hidden if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in decoder_linears] == [(5, 20), (20, 40), (40, 8 * 2 * 2)]


def test_conv_networks_treat_leading_dimensions_as_a_batch() -> None:
    config = conv_config((3, 16, 16), conv_channels=(4, 8))
    decoder = ConvDecoder(config)
    z = torch.randn(3, 4, 5)  # (k, N, latent), as importance sampling draws them
    assert torch.allclose(decoder(z), decoder(z.reshape(12, 5)).reshape(3, 4, -1), atol=1e-6)
    encoder = ConvEncoder(config)
    x = torch.rand(2, 4, config.input_size)
    assert torch.allclose(encoder(x)[0], encoder(x.reshape(8, -1))[0].reshape(2, 4, 5), atol=1e-6)


def test_conv_encoder_reads_flat_rows_as_channels_first_images() -> None:
    config = conv_config((3, 8, 8), conv_channels=(4,), conv_kernels=(1,), conv_strides=(1,))
    encoder = ConvEncoder(config)
    with torch.no_grad():
        conv = encoder.convs[0]
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 2] = 1.0  # feature 0 copies the blue channel
    seen: list[torch.Tensor] = []
    encoder.convs.register_forward_hook(lambda module, inputs, output: seen.append(output))
    image = torch.zeros(1, 3, 8, 8)
    image[0, 2, 1, 5] = 1.0  # blue, row 1, column 5
    encoder(image.reshape(1, -1))
    features = seen[0]
    assert features[0, 0, 1, 5] == 1.0 and features[0, 0].sum() == 1.0


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 6),
    stride=st.integers(1, 4),
)
def test_transposed_convolution_inverts_the_size_of_its_convolution(size: int, kernel: int, stride: int) -> None:
    if size < stride or size + 2 * conv_padding(kernel) < kernel:
        return  # the config refuses these (tested below)
    down = nn.Conv2d(1, 1, kernel, stride, conv_padding(kernel))
    out = down(torch.zeros(1, 1, size, size)).shape[-1]
    extra = transposed_padding(out, size, kernel, stride)
    assert 0 <= extra < stride  # PyTorch's condition on output_padding
    up = nn.ConvTranspose2d(1, 1, kernel, stride, conv_padding(kernel), extra)
    assert up(torch.zeros(1, 1, out, out)).shape[-1] == size


def test_an_image_too_small_for_the_strides_is_a_clear_error() -> None:
    with pytest.raises(VaekitError, match=r"images of 8x8 are too small for 4 convolutions.*layer 4 would get 1x1"):
        conv_config((1, 8, 8), conv_channels=(4, 8, 16, 32))
    with pytest.raises(VaekitError, match="a kernel of 100 is more than twice layer 1's 8x8 inputs"):
        conv_config((1, 8, 8), conv_kernels=(100,))  # (three steps of it ran for minutes)
    conv_config((1, 8, 8), conv_channels=(4, 8, 16), conv_kernels=(4,))  # the third layer's 4 on 2x2 inputs is fine
