"""The decoder as a list of layer specs that the page's JavaScript runs, float32.

Each spec is a dict with a `type` ("linear", "activation", "reshape" or "conv_transpose2d")
and what that type needs; weights travel as base64 of little-endian float32 bytes, in PyTorch's
own layout. Values flow between layers as one example's flat vector in PyTorch's row-major
order, so a reshape to (C, H, W) moves nothing. Adding a layer type means one exporter here,
one branch in `run_layers`, one builder in `decoder.js`, one test.

`run_layers` is the same forward pass in PyTorch; `export_decoder` runs it against
`model.decode` so that a decoder whose forward pass is not the walk below is refused
instead of being drawn wrongly.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaekit.distributions import Bernoulli, Gaussian
from vaekit.errors import VaekitError
from vaekit.nn import ConvDecoder, MLPDecoder

Spec = dict[str, Any]

CHECK_TOLERANCE = 1e-4  # max |difference| between the export's means and model.decode's, relative to their largest
CHECK_Z_SCALE = 3.0  # check codes drawn from N(0, 3^2): past the data, into the saturating regions


def export_decoder(model: nn.Module) -> list[Spec]:
    """The layer specs of model.decoder followed by the likelihood's mean, checked against model.decode."""
    specs = [layer_spec(module) for module in decoder_modules(model.decoder)]
    specs = [spec for spec in specs if spec is not None]
    specs += mean_layers(model)
    check_export(model, specs)
    return specs


def decoder_modules(decoder: nn.Module) -> list[nn.Module]:
    """The decoder's modules in the order its forward pass applies them."""
    if isinstance(decoder, MLPDecoder):
        return [*decoder.hidden, decoder.logits]
    if isinstance(decoder, ConvDecoder):
        return [*decoder.hidden, nn.Unflatten(1, decoder.feature_shape), *decoder.deconvs]
    if isinstance(decoder, nn.Sequential):
        return list(decoder)
    raise VaekitError(
        f"the explorer cannot export a decoder of type {type(decoder).__name__}; it knows MLPDecoder, "
        "ConvDecoder and nn.Sequential of Linear, ConvTranspose2d, Unflatten and Flatten layers and activations"
    )


def layer_spec(module: nn.Module) -> Spec | None:
    """One module as a spec; None for a module that does nothing at inference (dropout)."""
    for cls, exporter in LAYER_EXPORTERS.items():
        if type(module) is cls:
            return exporter(module)
    raise VaekitError(f"the explorer cannot export a decoder layer of type {type(module).__name__}")


def linear_spec(module: nn.Linear) -> Spec:
    weight = module.weight.detach()  # (out, in): each output's weights are contiguous for the dot product
    bias = module.bias.detach() if module.bias is not None else torch.zeros(module.out_features)
    return {
        "type": "linear",
        "in": module.in_features,
        "out": module.out_features,
        "weight": float32_base64(weight),
        "bias": float32_base64(bias),
    }


def conv_transpose2d_spec(module: nn.ConvTranspose2d) -> Spec:
    """A transposed convolution with one group and no dilation (the kind ConvDecoder builds); padding is zeros."""
    for name, value, supported in [("groups", module.groups, 1), ("dilation", tuple(module.dilation), (1, 1))]:
        if value != supported:
            raise VaekitError(f"the explorer runs ConvTranspose2d layers with {name}={supported} only, got {name}={value}")
    weight = module.weight.detach()  # (in_channels, out_channels, kh, kw): PyTorch's layout, kept
    bias = module.bias.detach() if module.bias is not None else torch.zeros(module.out_channels)
    return {
        "type": "conv_transpose2d",
        "in_channels": module.in_channels,
        "out_channels": module.out_channels,
        "kernel": list(module.kernel_size),
        "stride": list(module.stride),
        "padding": list(module.padding),
        "output_padding": list(module.output_padding),
        "weight": float32_base64(weight),
        "bias": float32_base64(bias),
    }


def unflatten_spec(module: nn.Unflatten) -> Spec:
    """Unflatten of the features after the batch dimension: a reshape of each example."""
    if module.dim not in (1, -1) or not all(isinstance(size, int) for size in module.unflattened_size):
        raise VaekitError(f"the explorer runs Unflatten of dimension 1 into sizes only, got {module}")
    return {"type": "reshape", "shape": list(module.unflattened_size)}


def flatten_spec(module: nn.Flatten) -> Spec:
    if (module.start_dim, module.end_dim) != (1, -1):
        raise VaekitError(f"the explorer runs Flatten of every dimension after the batch only, got {module}")
    return {"type": "reshape", "shape": [-1]}


def activation_spec(name: str, **params: Any) -> Callable[[nn.Module], Spec]:
    """An exporter for an activation module, copying the named attributes as parameters."""

    def export(module: nn.Module) -> Spec:
        values = {key: getattr(module, attribute) for key, attribute in params.items()}
        return {"type": "activation", "name": name, **values}

    return export


LAYER_EXPORTERS: dict[type[nn.Module], Callable[[Any], Spec | None]] = {
    nn.Linear: linear_spec,
    nn.ConvTranspose2d: conv_transpose2d_spec,
    nn.Unflatten: unflatten_spec,
    nn.Flatten: flatten_spec,
    nn.Dropout: lambda module: None,
    nn.Identity: lambda module: None,
    nn.ELU: activation_spec("elu", alpha="alpha"),
    nn.ReLU: activation_spec("relu"),
    nn.Tanh: activation_spec("tanh"),
    nn.Softplus: activation_spec("softplus", beta="beta", threshold="threshold"),
    nn.Sigmoid: activation_spec("sigmoid"),
    nn.LeakyReLU: activation_spec("leaky_relu", slope="negative_slope"),
    nn.GELU: activation_spec("gelu", approximate="approximate"),
    nn.SiLU: activation_spec("silu"),
}


def mean_layers(model: nn.Module) -> list[Spec]:
    """The map from the decoder's output to the pixel means of p(x|z): a sigmoid for both likelihoods, or none for
    a Gaussian with an identity mean (real-valued data)."""
    with torch.no_grad():
        likelihood = model.likelihood(torch.zeros(1, model.latent_size, device=model.device))
    if isinstance(likelihood, Gaussian) and not model.config.takes_unit_interval:
        return []
    if isinstance(likelihood, (Bernoulli, Gaussian)):  # Bernoulli(logits).mean and Gaussian's mean: sigmoid(logits)
        return [{"type": "activation", "name": "sigmoid"}]
    raise VaekitError(f"the explorer cannot draw the means of a {type(likelihood).__name__} likelihood")


# -- the same forward pass in PyTorch ------------------------------------------------------------


ACTIVATION_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "elu": lambda x, alpha: F.elu(x, alpha),
    "relu": lambda x: F.relu(x),
    "tanh": torch.tanh,
    "softplus": lambda x, beta, threshold: F.softplus(x, beta, threshold),
    "sigmoid": torch.sigmoid,
    "leaky_relu": lambda x, slope: F.leaky_relu(x, slope),
    "gelu": lambda x, approximate: F.gelu(x, approximate=approximate),
    "silu": F.silu,
}


def run_layers(specs: list[Spec], z: torch.Tensor) -> torch.Tensor:
    """Apply the specs to codes z (N, latent) in float32: what the page computes; flat pixel means (N, D)."""
    h = z.to(torch.float32)
    for spec in specs:
        if spec["type"] == "linear":  # on the flat vector, whatever shape came before (as the page)
            weight = base64_float32(spec["weight"]).reshape(spec["out"], spec["in"])
            h = h.reshape(len(h), -1) @ torch.from_numpy(weight).T + torch.from_numpy(base64_float32(spec["bias"]))
        elif spec["type"] == "activation":
            params = {key: value for key, value in spec.items() if key not in ("type", "name")}
            h = ACTIVATION_FUNCTIONS[spec["name"]](h, **params)
        elif spec["type"] == "reshape":
            h = h.reshape(len(h), *spec["shape"])
        elif spec["type"] == "conv_transpose2d":
            h = run_conv_transpose2d(spec, h)
        else:
            raise VaekitError(f"unknown layer type {spec['type']!r} in an explorer export")
    return h.reshape(len(h), -1)


def run_conv_transpose2d(spec: Spec, h: torch.Tensor) -> torch.Tensor:
    if h.ndim != 4:
        raise VaekitError(f"a transposed convolution needs (C, H, W) inputs, got a shape of {tuple(h.shape[1:])}")
    kh, kw = spec["kernel"]
    weight = base64_float32(spec["weight"]).reshape(spec["in_channels"], spec["out_channels"], kh, kw)
    bias = base64_float32(spec["bias"])
    return F.conv_transpose2d(h, torch.from_numpy(weight), torch.from_numpy(bias), tuple(spec["stride"]),
                              tuple(spec["padding"]), tuple(spec["output_padding"]))


def check_export(model: nn.Module, specs: list[Spec], n: int = 8) -> None:
    """Refuse the export unless its forward pass reproduces model.decode."""
    z = torch.randn(n, model.latent_size, generator=torch.Generator().manual_seed(0)) * CHECK_Z_SCALE
    try:
        exported = run_layers(specs, z)
    except RuntimeError as error:  # shapes that do not chain: the walk missed or misordered a layer
        raise VaekitError(f"the explorer's export of this decoder does not run: {error}") from None
    expected = model.decode(z.to(model.device)).cpu().reshape(n, -1)  # an image model gives (N, C, H, W)
    tolerance = CHECK_TOLERANCE * float(expected.abs().max().clamp(min=1e-30))  # real values may be far from 1, either way
    if exported.shape != expected.shape or not (exported - expected).abs().max() <= tolerance:
        raise VaekitError("the explorer's export of this decoder does not reproduce model.decode; its forward pass is not a plain chain of layers")


# -- float32 arrays as text ----------------------------------------------------------------------


def float32_base64(values: torch.Tensor | np.ndarray) -> str:
    """Little-endian float32 bytes of the values, row-major, as base64."""
    array = values.cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def base64_float32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()
