"""Data sets as NumPy arrays, so that an example runs anywhere."""

from typing import Dict

import numpy as np

from ._vae_rs import sample_dataset as _sample_dataset

__all__ = ["sample"]


def sample() -> Dict[str, np.ndarray]:
    """The sample of Fashion-MNIST compiled into the library.

    The first 6,000 training and 1,000 test images of Fashion-MNIST: a dict with ``train``
    (6000, 28, 28) and ``test`` (1000, 28, 28) uint8 images, and ``train_labels`` and
    ``test_labels``, int64 class numbers 0 to 9 (T-shirt/top, Trouser, Pullover, Dress, Coat,
    Sandal, Shirt, Sneaker, Bag, Ankle boot). ``vae_rs.train(sample())`` trains on it as
    ``vae-train --dataset sample`` does.
    """
    return _sample_dataset()
