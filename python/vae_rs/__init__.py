"""Variational autoencoders in Rust, from Python.

The trainer, the model and the lossless codec of vae, NumPy in and out, the GIL released while
Rust computes::

    import vae_rs
    data = vae_rs.datasets.sample()                # Fashion-MNIST sample as uint8 arrays
    run = vae_rs.train(data, out="runs/py", epochs=2)
    model = run.load()                             # or vae_rs.load("runs/py")
    mu, logvar = model.encode(data["test"])        # float32 (n, latent_dim) each
    images = model.sample(16)                      # uint8 (16, 28, 28)
    blob = vae_rs.compress(model, images)          # bytes; needs a discrete likelihood
    assert (vae_rs.decompress(model, blob) == images).all()

A run directory written here is the one ``vae-train`` writes (``vae-infer`` reads it), and
``load`` reads the runs of ``vae-train``. Errors are ``vae_rs.Error``: ``InputError`` (a
``ValueError``) for what was given, ``FileError`` (an ``OSError``) for files, with the command
line's messages.

Importing the package sets the process up as the command-line tools do: ``RAYON_NUM_THREADS``
and ``CANDLE_NUM_THREADS`` to 1 unless set (vae runs its own threads) and, with glibc, the
allocator's thresholds (``mallopt``) so that large buffers are reused.
"""

from ._vae_rs import (
    Error,
    FileError,
    InputError,
    Model,
    Run,
    __version__,
    compress,
    decompress,
    load,
    train,
)
from . import datasets

__all__ = [
    "Error",
    "FileError",
    "InputError",
    "Model",
    "Run",
    "__version__",
    "compress",
    "datasets",
    "decompress",
    "load",
    "train",
]
