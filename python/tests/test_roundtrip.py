"""Train -> encode -> sample -> compress -> decompress on the sample, and what a run made from
Python holds."""

import numpy as np
import pytest

import vae_rs


def test_the_sample_is_the_embedded_fashion_mnist_sample(sample):
    assert sample["train"].shape == (6000, 28, 28) and sample["train"].dtype == np.uint8
    assert sample["test"].shape == (1000, 28, 28) and sample["test"].dtype == np.uint8
    assert sample["train_labels"].shape == (6000,)
    assert sample["test_labels"].dtype == np.int64
    # Every class of Fashion-MNIST is in the sample, and the pixels use the whole range.
    assert set(np.unique(sample["train_labels"])) == set(range(10))
    assert sample["train"].min() == 0 and sample["train"].max() == 255


def test_train_encode_sample_compress_decompress(run, model, sample):
    assert run.outcome == "finished"
    assert len(run.metrics) == 2
    # The validation loss is the test split's negative ELBO, and training lowered it.
    assert run.metrics[1]["val_loss"] < run.metrics[0]["val_loss"]
    test = sample["test"]
    mu, logvar = model.encode(test)
    assert mu.shape == (1000, 8) and mu.dtype == np.float32
    assert logvar.shape == (1000, 8) and logvar.dtype == np.float32
    assert np.isfinite(mu).all() and np.isfinite(logvar).all()
    images = model.sample(16)
    assert images.shape == (16, 28, 28) and images.dtype == np.uint8
    for x in (test[:300], images):
        blob = vae_rs.compress(model, x)
        assert isinstance(blob, bytes)
        assert np.array_equal(vae_rs.decompress(model, blob), x)
    # 300 images take fewer bits than their 8 bits a pixel (16 would not yet pay back the
    # first image's latents).
    assert len(vae_rs.compress(model, test[:300])) < test[:300].size
    back = model.decode(mu[:10])
    assert back.shape == (10, 28, 28) and back.dtype == np.uint8
    r = model.reconstruct(test[:10])
    assert r.shape == (10, 28, 28) and r.dtype == np.uint8
    # Decoding the posterior means is what a reconstruction draws (to a grey level: the
    # batches differ).
    assert np.abs(r.astype(int) - back.astype(int)).max() <= 1


def test_a_run_from_arrays_is_a_normal_run_directory(run, sample):
    d = run.dir
    for f in ("config.json", "model.safetensors", "best.safetensors", "metrics.jsonl"):
        assert (d / f).is_file(), f
    assert (d / "samples" / "epoch-002.png").is_file()
    assert (d / "checkpoints" / "latest").is_file()
    cfg = run.config
    assert cfg["data"]["dataset"] == "idx"
    assert cfg["data"]["data_dir"] == str((d / "data").resolve())
    assert cfg["model"]["latent_dim"] == 8
    raw = (d / "data" / "t10k-images-idx3-ubyte").read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3])
    assert np.array_equal(np.frombuffer(raw[16:], np.uint8).reshape(1000, 28, 28), sample["test"])


def test_sampling_is_seeded(model):
    a, b = model.sample(8), model.sample(8)
    assert np.array_equal(a, b)
    c = model.sample(8, seed=1)
    assert not np.array_equal(a, c)
    cold = model.sample(8, temperature=0.1)
    # Codes near the prior's mean vary less than codes at temperature 1.
    assert cold.astype(float).std(axis=0).mean() < a.astype(float).std(axis=0).mean()


def test_colour_images_and_arrays_without_a_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(120, 8, 8, 3), dtype=np.uint8)
    run = vae_rs.train(
        x, out=tmp_path / "rgb", epochs=1, hidden=[16], latent_dim=2, threads=1, quiet=True
    )
    m = run.load()
    assert m.shape == (3, 8, 8)
    # Without a test split, a tenth of the examples is held out for validation.
    assert run.metrics[0]["val_loss"] > 0
    assert m.reconstruct(x[:5]).shape == (5, 8, 8, 3)
    assert m.sample(4).shape == (4, 8, 8, 3)
    mu, _ = m.encode(x)
    assert mu.shape == (120, 2)


def test_progress_reaches_the_callback(sample, tmp_path):
    events = []
    x = sample["train"][:640]
    vae_rs.train(
        x, out=tmp_path / "cb", callback=events.append, epochs=1, hidden=[16], latent_dim=2,
        batch_size=64, threads=1, quiet=True,
    )
    steps = [e for e in events if e["event"] == "step"]
    # 576 training examples (a tenth held out): 9 batches of 64.
    assert [e["batch"] for e in steps] == list(range(1, 10))
    assert all(e["batches"] == 9 and np.isfinite(e["loss"]) for e in steps)
    (epoch,) = [e for e in events if e["event"] == "epoch"]
    assert epoch["epoch"] == 1 and epoch["step"] == 9 and epoch["val_loss"] > 0


def test_lines_go_to_stderr_unless_quiet(sample, tmp_path, capsys):
    x = sample["train"][:200]
    vae_rs.train(x, out=tmp_path / "loud", epochs=1, hidden=[8], latent_dim=2, threads=1)
    err = capsys.readouterr().err
    assert "training `pytorch-example` on" in err
    assert "epoch   1  train" in err and "done: validation loss" in err
    vae_rs.train(
        x, out=tmp_path / "quiet", epochs=1, hidden=[8], latent_dim=2, threads=1, quiet=True
    )
    assert capsys.readouterr().err == ""


def test_a_named_dataset_trains_as_vae_train_does(tmp_path):
    run = vae_rs.train(
        "sample", out=tmp_path / "named", epochs=1, hidden=[8], latent_dim=2, threads=2,
        quiet=True,
    )
    assert run.config["data"]["dataset"] == "sample"
    assert run.metrics[0]["epoch"] == 1
    # Resuming for one more epoch continues the same run.
    more = vae_rs.train(resume=run.dir, epochs=2, quiet=True)
    assert [m["epoch"] for m in more.metrics] == [1, 2]
