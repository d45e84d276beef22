"""The latent explorer: an offline HTML page to walk a trained VAE's latent space.

    from vaekit.explorer import write_explorer, serve
    page = write_explorer(model, data, "explorer.html")   # data: a Splits, or None
    serve(page, port=8000)                                 # http://127.0.0.1:8000/explorer.html

The page embeds the decoder's weights and runs its forward pass in JavaScript (float32), so
moving the pointer over the latent pad decodes live: dense (MLP) and convolutional decoders
(transposed convolutions), Bernoulli and Gaussian likelihoods alike. `layers.py` exports the decoder,
`page.py` writes the file, `server.py` serves it. The page is `template.html` with its scripts
inlined: `decoder.js` (the forward pass), `pixels.js` (examples to pixels), `pad.js` (the
latent pad's drawing) and `explorer.js` (the interface that ties them together).
"""

from vaekit.explorer.page import write_explorer
from vaekit.explorer.server import make_server, serve

__all__ = ["make_server", "serve", "write_explorer"]
