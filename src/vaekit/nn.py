"""Encoder and decoder networks, built from the model config.

The encoder maps x (..., D) to the parameters (mu, log_sigma) of q(z|x); the decoder maps
z (..., latent) to the logits of p(x|z), (..., D). Both work on flat vectors whatever the
network, so objectives, training and checkpoints are shared: a conv network reshapes to
(N, C, H, W) inside. `NETWORKS` is the registry by model kind.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaekit.config import ModelConfig, conv_feature_sizes, conv_padding

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def mlp(sizes: list[int], nonlinearity: str, dropout: float) -> nn.Sequential:
    """Dense layers between consecutive sizes, each followed by the nonlinearity and dropout."""
    layers: list[nn.Module] = []
    for size_in, size_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(size_in, size_out))
        layers.append(ACTIVATIONS[nonlinearity]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x -> hidden layers -> (mu, log_sigma), the original's encoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        *hidden, latent = config.architecture
        self.hidden = mlp(hidden, config.nonlinearity, config.dropout)
        self.mu = nn.Linear(hidden[-1], latent)
        self.log_sigma = nn.Linear(hidden[-1], latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(x)
        return self.mu(h), self.log_sigma(h)


class MLPDecoder(nn.Module):
    """z -> the encoder's hidden layers mirrored -> logits of the input size."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        sizes = list(reversed(config.architecture))
        self.hidden = mlp(sizes[:-1], config.nonlinearity, config.dropout)
        self.logits = nn.Linear(sizes[-2], sizes[-1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(z))


class ConvEncoder(nn.Module):
    """x -> strided convolutions -> flatten -> dense hidden layers -> (mu, log_sigma).

    As the conv VAEs of DCGAN lineage (Radford et al. 2016): each convolution is followed by the
    nonlinearity; padding (k - 1) // 2, so a stride-2 layer halves the image (rounding as in
    `config.conv_output_size`). The hidden sizes of the architecture, if any, are dense layers.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.image_shape = config.image_shape
        channels_in = [config.image_shape[0]] + [c for c, _, _ in config.conv_layers[:-1]]
        layers: list[nn.Module] = []
        for c_in, (c_out, kernel, stride) in zip(channels_in, config.conv_layers):
            layers += [nn.Conv2d(c_in, c_out, kernel, stride, conv_padding(kernel)), ACTIVATIONS[config.nonlinearity]()]
        self.convs = nn.Sequential(*layers)
        height, width = conv_feature_sizes(config.image_shape, config.conv_layers)[-1]
        *hidden, latent = config.architecture[1:]
        sizes = [config.conv_channels[-1] * height * width, *hidden]
        self.hidden = mlp(sizes, config.nonlinearity, config.dropout)
        self.mu = nn.Linear(sizes[-1], latent)
        self.log_sigma = nn.Linear(sizes[-1], latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leading = x.shape[:-1]
        images = x.reshape(-1, *self.image_shape)  # (N, C, H, W)
        h = self.hidden(self.convs(images).flatten(1))
        # explicit widths: -1 is ambiguous for a batch of no examples (a torchrun rank's empty share)
        return self.mu(h).reshape(*leading, self.mu.out_features), self.log_sigma(h).reshape(*leading, self.mu.out_features)


class ConvDecoder(nn.Module):
    """z -> dense layers -> (C_L, H_L, W_L) features -> transposed convolutions mirroring the encoder -> logits.

    Each transposed convolution undoes one convolution of the encoder; its output_padding is
    chosen so that it gives back exactly the size that convolution took in, so any height and
    width (odd ones such as 7 or 28 -> 14 -> 7 -> 3 included) come back whole.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        sizes = conv_feature_sizes(config.image_shape, config.conv_layers)
        height, width = sizes[-1]
        self.feature_shape = (config.conv_channels[-1], height, width)
        self.output_size = math.prod(config.image_shape)
        *hidden, latent = config.architecture[1:]
        dense_sizes = [latent, *reversed(hidden), config.conv_channels[-1] * height * width]
        self.hidden = mlp(dense_sizes, config.nonlinearity, config.dropout)
        channels_out = [config.image_shape[0]] + [c for c, _, _ in config.conv_layers[:-1]]
        layers: list[nn.Module] = []
        for index in reversed(range(len(config.conv_layers))):
            c_in, kernel, stride = config.conv_layers[index]
            (h_out, w_out), (h_in, w_in) = sizes[index], sizes[index + 1]
            output_padding = (transposed_padding(h_in, h_out, kernel, stride), transposed_padding(w_in, w_out, kernel, stride))
            layers.append(nn.ConvTranspose2d(c_in, channels_out[index], kernel, stride, conv_padding(kernel), output_padding))
            if index > 0:
                layers.append(ACTIVATIONS[config.nonlinearity]())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        leading = z.shape[:-1]
        features = self.hidden(z.reshape(-1, z.shape[-1])).reshape(-1, *self.feature_shape)  # (N, C_L, H_L, W_L)
        return self.deconvs(features).reshape(*leading, self.output_size)  # (..., C * H * W)


def transposed_padding(size_in: int, size_out: int, kernel: int, stride: int) -> int:
    """output_padding that makes a transposed convolution map size_in back to size_out.

    A transposed convolution gives (size_in - 1) * stride - 2 * padding + kernel + output_padding;
    when size_in came from size_out by the matching convolution the difference is in [0, stride).
    """
    return size_out - ((size_in - 1) * stride - 2 * conv_padding(kernel) + kernel)


NETWORKS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
}
