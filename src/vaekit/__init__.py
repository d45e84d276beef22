"""vaekit: variational autoencoders in PyTorch.

    import vaekit
    data = vaekit.load_data(vaekit.DataConfig("digits"))
    vae = vaekit.VAE([64, 500, 500, 2])
    result = vaekit.train(vae, data, vaekit.TrainConfig(epochs=20))
    vae = vaekit.load(result.run_dir)
    report = vaekit.estimate_nll(vae, data.test.x, k=5000)   # {"nll": ..., "elbo": ..., ...}, nats
"""

from vaekit.config import DataConfig, ModelConfig, TrainConfig
from vaekit.data import Splits, load_data
from vaekit.errors import VaekitError
from vaekit.evaluate import elbo, estimate_nll
from vaekit.model import VAE, load
from vaekit.train import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "DataConfig",
    "ModelConfig",
    "Splits",
    "TrainConfig",
    "TrainResult",
    "VaekitError",
    "elbo",
    "estimate_nll",
    "load",
    "load_data",
    "train",
]
