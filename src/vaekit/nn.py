"""Encoder and decoder networks, built from the architecture list.

The encoder maps x (N, D) to the parameters (mu, log_sigma) of q(z|x); the decoder maps
z (N, latent) to the logits of p(x|z). `NETWORKS` is the registry by model kind.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.config import ModelConfig

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


NETWORKS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (MLPEncoder, MLPDecoder),
}
