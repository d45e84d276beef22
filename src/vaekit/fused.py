"""The dense VAE's training cost and its gradient, written out by hand: no autograd graph.

For the model of vae-tf (dense layers, q(z|x) = N(mu, sigma^2), the prior N(0, I), a Bernoulli
p(x|z) on logits, the ELBO with its KL in closed form; Kingma & Welling 2014, appendix B) the
gradient is a few lines of matrix algebra. Writing them out lets a training step skip what
autograd's generality costs on a CPU, where a step of 784-500-500-50 at batch 128 takes
milliseconds: recording the graph, one backward node per operator, fresh gradient tensors
every step, and the casts autocast inserts around every product under bf16. Here each
product writes straight into the weights' `.grad`, and under bf16 each weight is cast once per step:
an epoch of 784-500-500-50 at batch 128 runs 1.06-1.11x (fp32) and 1.02-1.15x (bf16) faster than
through autograd on a 2-core CPU (benchmarks/throughput.py, README's performance section).

It also does what the trainer does between the gradient and the optimizer's step, the finite check
and clipping, each gradient as it is written, while it is still in the cache.

`applies` says when this path can train a run; the trainer uses autograd for everything else
(other likelihoods, priors or objectives, dropout, conv models, several processes).
The numbers are autograd's: tests/test_fused.py compares the two gradients. The maths is one
function of explicit tensors, `elbo_and_gradients`, which `--compile` hands to torch.compile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.compiling import Compiled
from vaekit.config import TrainConfig
from vaekit.model import VAE


def elu_grad(grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Back through h = elu(a): d elu/da = 1 for a > 0, else exp(a), from a. (h + 1 also equals exp(a),
    but in bf16 it has lost its digits where h is near -1.)"""
    return torch.ops.aten.elu_backward(grad, 1.0, 1, 1, False, a)


def relu_grad(grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.threshold_backward(grad, h, 0)


def tanh_grad(grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """d tanh/da = 1 - tanh(a)^2, from the output h."""
    return torch.ops.aten.tanh_backward(grad, h)


# The hidden-unit nonlinearities: (forward, backward from the pre-activation a and the output h). The
# backwards are autograd's own kernels for these functions: the same numbers, in one pass, in fp32 and bf16.
HAND_WRITTEN_ACTIVATIONS = {"elu": (F.elu, elu_grad), "relu": (F.relu, relu_grad), "tanh": (torch.tanh, tanh_grad)}


def applies(model: VAE, config: TrainConfig, world_size: int) -> bool:
    """Whether this hand-written path computes exactly the cost that `objectives.loss` would for this run."""
    return config.fused and why_not(model, config, world_size) is None


def why_not(model: VAE, config: TrainConfig, world_size: int) -> str | None:
    """What keeps this run off the hand-written path (None when nothing does), in the words of its flags."""
    settings = model.config
    reasons = [
        (world_size > 1, "torchrun's processes reduce gradients through autograd's hooks"),
        (settings.model != "mlp", f"--model {settings.model}"),
        (settings.likelihood != "bernoulli", f"--likelihood {settings.likelihood}"),
        (settings.prior != "standard", f"--prior {settings.prior}"),
        (settings.nonlinearity not in HAND_WRITTEN_ACTIVATIONS, f"--nonlinearity {settings.nonlinearity} (elu, relu and tanh have one)"),
        (settings.dropout != 0, "--dropout"),
        (config.objective != "elbo", f"--objective {config.objective}"),
        (config.free_bits != 0, "--free-bits"),
        (not is_as_built(model), "a model changed after VAE built it (a subclass, a frozen weight, a swapped module, "
                                 "a hook, a method replaced or a module's setting changed)"),
    ]
    return next((reason for failed, reason in reasons if failed), None)


def is_as_built(model: VAE) -> bool:
    """Whether the model is the network its config builds, every weight trainable, nothing attached: not a
    subclass with methods of its own, nor a model whose modules were swapped or added, whose weights were
    frozen, whose modules' settings (ELU's alpha, say) were changed, or which has hooks (on modules or weights,
    or on every module) or methods replaced on an instance, after it was built. Autograd trains all of these
    as they are; this path would not see them."""
    with torch.device("meta"):  # the structure alone: no memory, no draws from the random stream
        built = VAE(config=model.config)
    return (
        type(model) is VAE
        and structure(model) == structure(built)
        and all(p.requires_grad for p in model.parameters())
        and not has_hooks_or_replaced_methods(model)
    )


def structure(model: nn.Module) -> list[tuple[str, type, str | tuple[int, ...]]]:
    """Every module's name, type and settings (its extra_repr), and every parameter's name and shape."""
    modules = [(name, type(module), module.extra_repr()) for name, module in model.named_modules()]
    return modules + [(name, nn.Parameter, tuple(p.shape)) for name, p in model.named_parameters()]


MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def has_hooks_or_replaced_methods(model: nn.Module) -> bool:
    """Whether a hook would run in autograd's forward or backward (on a module, on every module, or on a
    weight), or a module has a method of its own instance in place of its class's (`vae.likelihood = ...`)."""
    everywhere = torch.nn.modules.module
    if any(getattr(everywhere, f"_global{name}", None) for name in MODULE_HOOKS):
        return True
    for module in model.modules():
        if any(getattr(module, name, None) for name in MODULE_HOOKS):
            return True
        if any(callable(value) and hasattr(type(module), name) for name, value in vars(module).items()):
            return True
    return any(getattr(p, name, None) for p in model.parameters() for name in TENSOR_HOOKS)


class DenseElbo:
    """Computes the minibatch cost of `objectives.loss` (the ELBO, the KL weighted by beta, plus the L2
    penalty) and writes its gradient into every parameter's `.grad`, overwriting what was there, each
    value clamped to [-clip, clip] as `train.clip_values` would (0 clamps nothing).

    With precision "bf16" the products run in bfloat16 as under autocast, on weights cast once per
    step; mu, log_sigma, the logits, the cost and the gradients handed to the optimizer are float32.
    With `config.compile`, `elbo_and_gradients` runs through torch.compile (`vaekit.compiling`).
    """

    def __init__(self, model: VAE, config: TrainConfig):
        self.model = model
        encoder = [m for m in model.encoder.hidden if isinstance(m, nn.Linear)]
        decoder = [m for m in model.decoder.hidden if isinstance(m, nn.Linear)] + [model.decoder.logits]
        self.layers = [*encoder, model.encoder.mu, model.encoder.log_sigma, *decoder]
        self.latent_size = model.encoder.mu.out_features
        self.settings = dict(encoder_layers=len(encoder), nonlinearity=model.config.nonlinearity,
                             dtype=torch.bfloat16 if config.precision == "bf16" else torch.float32, l2=config.l2)
        kind = (tuple(tuple(layer.weight.shape) for layer in self.layers), *self.settings.items())  # what its graphs depend on
        self.compute = Compiled(elbo_and_gradients, kind) if config.compile else elbo_and_gradients

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, beta: float, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cost, mean reconstruction term, mean KL, finite) of batch x (N, D), where finite is a boolean tensor:
        whether the cost and every gradient value were finite (before clipping, as `train.all_finite` says).
        The clipped gradient of cost lands in `.grad`."""
        weights, biases = [layer.weight for layer in self.layers], [layer.bias for layer in self.layers]
        for p in weights + biases:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        eps = self.noise((len(x), self.latent_size), x.device)
        return self.compute(weights, biases, [w.grad for w in weights], [b.grad for b in biases], x, eps, float(beta), float(clip), **self.settings)

    def noise(self, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """eps ~ N(0, I), from the trainer's shared stream as `DiagonalGaussian.rsample` draws it."""
        if self.model.noise is not None:
            return self.model.noise(torch.Size(shape), torch.float32)
        return torch.randn(shape, device=device)


def elbo_and_gradients(weights: list[torch.Tensor], biases: list[torch.Tensor], weight_grads: list[torch.Tensor],
                       bias_grads: list[torch.Tensor], x: torch.Tensor, eps: torch.Tensor, beta: float, clip: float, *,
                       encoder_layers: int, nonlinearity: str, dtype: torch.dtype,
                       l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cost (the ELBO's, plus l2 * sum(w^2) / 2 over the weight matrices), its two ELBO terms, whether
    the cost and its gradient were finite, and the gradient, clamped to [-clip, clip] unless clip is 0,
    written into weight_grads and bias_grads.

    The layers are in the order encoder hidden layers (encoder_layers of them), mu, log_sigma,
    decoder hidden layers, logits; eps is the reparameterization noise, one row per example.
    """
    activation, activation_grad = HAND_WRITTEN_ACTIVATIONS[nonlinearity]
    n = len(x)
    low = [w.to(dtype) for w in weights]  # one cast per step
    mu_layer, log_sigma_layer = encoder_layers, encoder_layers + 1
    decoder_layers = list(range(encoder_layers + 2, len(weights)))
    sums = []  # of each gradient before its clip (which would turn an infinity finite): the finite check's

    def finish_gradient(gradient: torch.Tensor) -> None:
        sums.append(gradient.sum())
        if clip > 0:
            gradient.clamp_(-clip, clip)

    def linear(i: int, h: torch.Tensor) -> torch.Tensor:
        """h W^T + b, in the working precision."""
        return torch.addmm(biases[i].to(dtype), h, low[i].t())

    def linear_backward(i: int, h: torch.Tensor, grad: torch.Tensor, input_grad: bool = True) -> torch.Tensor | None:
        """Write d cost/dW = grad^T h and d cost/db = sum of grad over the batch; return d cost/dh = grad W."""
        grad_low = grad.to(dtype)
        if dtype == torch.float32:
            torch.mm(grad_low.t(), h, out=weight_grads[i])
        else:
            weight_grads[i].copy_(torch.mm(grad_low.t(), h))
        if l2 > 0:  # w * l2, not alpha=l2: torch.compile's inductor drops the alpha of an add it folds into a product (pytorch/pytorch#167313)
            weight_grads[i].add_(weights[i] * l2)
        torch.sum(grad, 0, dtype=torch.float32, out=bias_grads[i])
        finish_gradient(weight_grads[i])
        finish_gradient(bias_grads[i])
        return torch.mm(grad_low, low[i]) if input_grad else None

    # forward: the encoder's hidden layers, q(z|x), one draw of z, the decoder
    encoder_a, encoder_h = [], [x.to(dtype)]  # each hidden layer's pre-activation a and output h = activation(a)
    for i in range(encoder_layers):
        encoder_a.append(linear(i, encoder_h[-1]))
        encoder_h.append(activation(encoder_a[-1]))
    mu = linear(mu_layer, encoder_h[-1]).float()
    log_sigma = linear(log_sigma_layer, encoder_h[-1]).float()
    sigma = log_sigma.exp()
    z = torch.addcmul(mu, sigma, eps)
    decoder_a, decoder_h = [], [z.to(dtype)]
    for i in decoder_layers[:-1]:
        decoder_a.append(linear(i, decoder_h[-1]))
        decoder_h.append(activation(decoder_a[-1]))
    logits = linear(decoder_layers[-1], decoder_h[-1]).float()

    # the cost: -log p(x|z) (the cross-entropy) + beta KL(q(z|x) || N(0, I)), averaged over the batch
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
    variance = sigma.square()
    kl = 0.5 * (mu.square().sum() + variance.sum() - 2 * log_sigma.sum()) / n - 0.5 * mu.shape[1]
    cost = reconstruction + beta * kl
    if l2 > 0:
        cost = cost + l2 * sum(w.square().sum() for w in weights) / 2

    # backward: d cost / d logits = (sigmoid(logits) - x) / N, then layer by layer
    grad = torch.sigmoid(logits).sub_(x).div_(n)
    for position, i in reversed(list(enumerate(decoder_layers))):
        grad = linear_backward(i, decoder_h[position], grad)
        if position > 0:
            grad = activation_grad(grad, decoder_a[position - 1], decoder_h[position])
    grad_z = grad.float()
    # z = mu + sigma eps; KL = 1/2 sum(mu^2 + sigma^2 - 1 - 2 log_sigma) per example (beta / n multiplies, as l2 does)
    grad_mu = grad_z + mu * (beta / n)
    grad_log_sigma = (grad_z * eps).mul_(sigma) + (variance - 1) * (beta / n)
    grad = linear_backward(mu_layer, encoder_h[-1], grad_mu)
    grad += linear_backward(log_sigma_layer, encoder_h[-1], grad_log_sigma)
    for i in reversed(range(encoder_layers)):
        grad = activation_grad(grad, encoder_a[i], encoder_h[i + 1])
        grad = linear_backward(i, encoder_h[i], grad, input_grad=i > 0)
    # a sum is NaN or infinite whenever one of its terms is: one number says whether all were finite
    finite = torch.isfinite(cost + torch.stack(sums).sum())
    return cost, reconstruction, kl, finite
