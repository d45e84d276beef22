"""`make demo`: train a small VAE on the built-in digits and write what it learned under --out.

Runs offline in well under three minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

import vaekit
from vaekit.evaluate import average_elbo_terms
from vaekit.explorer import write_explorer
from vaekit.plots import all_plots

DEMO_OUTPUTS = ("runs", "figures", "explorer.html", "test_elbo.json")  # what a run of the demo writes under --out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo", help="folder for the run and its pictures (default: demo)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs (default: 60)")
    args = parser.parse_args()
    out = Path(args.out)
    clear_earlier_outputs(out)
    start = time.perf_counter()

    data_config = vaekit.DataConfig("digits")
    data = vaekit.load_data(data_config)
    torch.manual_seed(0)
    model = vaekit.VAE([data.input_size, 500, 500, 2], image_shape=data.image_shape)
    config = vaekit.TrainConfig(epochs=args.epochs, out=str(out / "runs"), seed=0, snapshots=True)
    result = vaekit.train(model, data, config, data_config)
    model = result.model.cpu()

    figures = out / "figures"
    all_plots(model, data, figures, run_dir=result.run_dir)
    explorer = write_explorer(model, data, out / "explorer.html")
    report = average_elbo_terms(model, data.test.x)
    (out / "test_elbo.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"\ndemo: trained {'-'.join(map(str, model.config.architecture))} on digits in {time.perf_counter() - start:.0f} s")
    print(f"demo: test ELBO {report['elbo']:.2f} nats per example (reconstruction {report['reconstruction']:.2f}, KL {report['kl']:.2f})")
    print(f"demo: run folder  {result.run_dir}")
    print(f"demo: figures     {figures}/ (and the latent space over training: {result.run_dir}/*.gif)")
    print(f"demo: explorer    {explorer}  (open it in a browser; it works offline)")


def clear_earlier_outputs(out: Path) -> None:
    """Remove what an earlier demo wrote under out, and nothing else: the folder may hold the user's own files."""
    for name in DEMO_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
