"""The dense VAE's training cost and its gradient, written out by hand: no autograd graph.

For the model of vae-tf (dense layers, q(z|x) = N(mu, sigma^2), the prior N(0, I), a Bernoulli
p(x|z) on logits, the ELBO with its KL in closed form; Kingma & Welling 2014, appendix B) the
gradient is a few lines of matrix algebra. Writing them out lets a training step skip what
autograd's generality costs on a CPU, where a step of 784-500-500-50 at batch 128 takes
milliseconds: recording the graph, one backward node per operator, fresh gradient tensors
every step, and the casts autocast inserts around every product under bf16. Here each
product writes straight into the weights' `.grad`, and under bf16 each weight is cast once per step:
an epoch of 784-500-500-50 at batch 128 runs 1.1x faster than through autograd on a 2-core CPU,
in fp32 and bf16 alike (benchmarks/throughput.py).

`applies` says when this path can train a run; the trainer uses autograd for everything else
(other likelihoods, priors or objectives, dropout, conv models, several processes).
The numbers are autograd's: tests/test_fused.py compares the two gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.config import TrainConfig
from vaekit.model import VAE
from vaekit.objectives import l2_penalty


def elu_grad(grad: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Back through h = elu(a), from its output: d elu/da = 1 for a > 0, else exp(a) = h + 1."""
    return torch.addcmul(grad, grad, h.clamp(max=0))


def relu_grad(grad: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return grad * (h > 0)


def tanh_grad(grad: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """d tanh/da = 1 - tanh(a)^2."""
    return torch.addcmul(grad, grad, h.square(), value=-1)


# The hidden-unit nonlinearities whose derivative follows from their output: (forward, backward).
NONLINEARITIES = {"elu": (F.elu, elu_grad), "relu": (F.relu, relu_grad), "tanh": (torch.tanh, tanh_grad)}


def applies(model: VAE, config: TrainConfig, world_size: int) -> bool:
    """Whether this hand-written path computes exactly the cost that `objectives.loss` would for this run."""
    settings = model.config
    return (
        config.fused
        and world_size == 1  # DDP reduces gradients through autograd's hooks
        and settings.model == "mlp"
        and settings.likelihood == "bernoulli"
        and settings.prior == "standard"
        and settings.nonlinearity in NONLINEARITIES
        and settings.dropout == 0
        and config.objective == "elbo"
        and config.free_bits == 0
    )


class DenseElbo:
    """Computes the minibatch cost of `objectives.loss` (the ELBO, the KL weighted by beta, plus the L2
    penalty) and writes its gradient into every parameter's `.grad`, overwriting what was there.

    With precision "bf16" the products run in bfloat16 as under autocast, on weights cast once per
    step; mu, log_sigma, the logits, the cost and the gradients handed to the optimizer are float32.
    """

    def __init__(self, model: VAE, config: TrainConfig):
        self.model, self.l2 = model, config.l2
        self.parameters = list(model.parameters())  # walking the modules every step would cost more than a KL
        self.encoder_layers = [m for m in model.encoder.hidden if isinstance(m, nn.Linear)]
        self.mu_layer, self.log_sigma_layer = model.encoder.mu, model.encoder.log_sigma
        self.decoder_layers = [m for m in model.decoder.hidden if isinstance(m, nn.Linear)] + [model.decoder.logits]
        self.activation, self.activation_grad = NONLINEARITIES[model.config.nonlinearity]
        self.dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cost, mean reconstruction term, mean KL) of batch x (N, D); the gradient of cost lands in `.grad`."""
        for p in self.parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        n = len(x)
        weights = {layer: layer.weight.to(self.dtype) for layer in self.all_layers()}  # one cast per step

        # forward: the encoder's hidden layers, q(z|x), one draw of z, the decoder
        encoder_h = [x.to(self.dtype)]
        for layer in self.encoder_layers:
            encoder_h.append(self.activation(self.linear(layer, weights, encoder_h[-1])))
        mu = self.linear(self.mu_layer, weights, encoder_h[-1]).float()
        log_sigma = self.linear(self.log_sigma_layer, weights, encoder_h[-1]).float()
        sigma = log_sigma.exp()
        eps = self.noise(mu)
        z = torch.addcmul(mu, sigma, eps)
        decoder_h = [z.to(self.dtype)]
        for layer in self.decoder_layers[:-1]:
            decoder_h.append(self.activation(self.linear(layer, weights, decoder_h[-1])))
        logits = self.linear(self.decoder_layers[-1], weights, decoder_h[-1]).float()

        # the cost: -log p(x|z) (the cross-entropy) + beta KL(q(z|x) || N(0, I)), averaged over the batch
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        variance = sigma.square()
        kl = 0.5 * (mu.square().sum() + variance.sum() - 2 * log_sigma.sum()) / n - 0.5 * mu.shape[1]
        cost = reconstruction + beta * kl

        # backward: d cost / d logits = (sigmoid(logits) - x) / N, then layer by layer
        grad = torch.sigmoid(logits).sub_(x).div_(n)
        for index in reversed(range(len(self.decoder_layers))):
            grad = self.linear_backward(self.decoder_layers[index], weights, decoder_h[index], grad)
            if index > 0:
                grad = self.activation_grad(grad, decoder_h[index])
        grad_z = grad.float()
        # z = mu + sigma eps; KL = 1/2 sum(mu^2 + sigma^2 - 1 - 2 log_sigma) per example
        grad_mu = grad_z.add(mu, alpha=beta / n)
        grad_log_sigma = (grad_z * eps).mul_(sigma).add_(variance - 1, alpha=beta / n)
        grad = self.linear_backward(self.mu_layer, weights, encoder_h[-1], grad_mu)
        grad += self.linear_backward(self.log_sigma_layer, weights, encoder_h[-1], grad_log_sigma)
        for index in reversed(range(len(self.encoder_layers))):
            grad = self.activation_grad(grad, encoder_h[index + 1])
            grad = self.linear_backward(self.encoder_layers[index], weights, encoder_h[index], grad, input_grad=index > 0)

        if self.l2 > 0:  # l2 * sum(w^2) / 2 over the weight matrices, whose gradient is l2 * w
            cost = cost + self.l2 * l2_penalty(self.model)
            for layer in self.all_layers():
                layer.weight.grad.add_(layer.weight, alpha=self.l2)
        return cost, reconstruction, kl

    def all_layers(self) -> list[nn.Linear]:
        return [*self.encoder_layers, self.mu_layer, self.log_sigma_layer, *self.decoder_layers]

    def linear(self, layer: nn.Linear, weights: dict[nn.Linear, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        """h W^T + b, in the working precision."""
        return torch.addmm(layer.bias.to(self.dtype), h, weights[layer].t())

    def linear_backward(self, layer: nn.Linear, weights: dict[nn.Linear, torch.Tensor], h: torch.Tensor,
                        grad: torch.Tensor, input_grad: bool = True) -> torch.Tensor | None:
        """Write d cost/dW = grad^T h and d cost/db = sum of grad over the batch; return d cost/dh = grad W."""
        grad_low = grad.to(self.dtype)
        if self.dtype == torch.float32:
            torch.mm(grad_low.t(), h, out=layer.weight.grad)
        else:
            layer.weight.grad.copy_(torch.mm(grad_low.t(), h))
        torch.sum(grad, 0, dtype=torch.float32, out=layer.bias.grad)
        return torch.mm(grad_low, weights[layer]) if input_grad else None

    def noise(self, mu: torch.Tensor) -> torch.Tensor:
        """eps ~ N(0, I) shaped like mu, from the trainer's shared stream as `DiagonalGaussian.rsample` draws it."""
        if self.model.noise is not None:
            return self.model.noise(mu.shape, mu.dtype)
        return torch.randn(mu.shape, dtype=mu.dtype, device=mu.device)
