"""The README's example: train on the embedded sample, encode, sample, compress losslessly."""

import shutil

import numpy as np

import vae_rs

data = vae_rs.datasets.sample()  # uint8 (6000, 28, 28) and (1000, 28, 28), int64 labels
shutil.rmtree("runs/python-example", ignore_errors=True)  # a fresh run each time
run = vae_rs.train(data, out="runs/python-example", epochs=2, likelihood="discretized-logistic")
model = run.load()

mu, logvar = model.encode(data["test"])
print("codes:", mu.shape, mu.dtype)
images = model.sample(16)
print("samples:", images.shape, images.dtype)

blob = vae_rs.compress(model, data["test"])
assert np.array_equal(vae_rs.decompress(model, blob), data["test"])
print(f"compressed the 1000 test images into {len(blob)} bytes,",
      f"{8 * len(blob) / data['test'].size:.4f} bits/dim")

scores = model.evaluate("test", iw_samples=100)  # the dict of `vae-infer evaluate --json`
print(f"test: -ELBO {scores['neg_elbo']:.2f} nats, {scores['neg_elbo_bits_per_dim']:.4f} bits/dim;",
      f"NLL {scores['nll']:.2f} nats ({scores['iw_samples']} samples)")

try:
    model.encode(data["test"].astype(np.float64))
except ValueError as e:
    print(f"{type(e).__name__}: {e}")
