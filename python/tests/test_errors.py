"""Errors are Python exceptions (vae_rs.InputError is a ValueError, vae_rs.FileError an
OSError) with the command line's messages: never a panic, never a crash of the interpreter."""

import shutil

import numpy as np
import pytest

import vae_rs


def test_a_float64_array_is_refused_naming_the_dtype(model, sample):
    x = sample["test"][:4].astype(np.float64)
    with pytest.raises(vae_rs.InputError, match="uint8.*float64") as e:
        model.encode(x)
    assert isinstance(e.value, ValueError) and isinstance(e.value, vae_rs.Error)
    with pytest.raises(ValueError, match="float64"):
        vae_rs.compress(model, x)
    with pytest.raises(ValueError, match="float32.*float64"):
        model.decode(np.zeros((2, 8)))


def test_a_wrong_image_size_is_refused_naming_both_sizes(model):
    x = np.zeros((3, 32, 32), np.uint8)
    for f in (model.encode, model.reconstruct, model.evaluate, lambda x: vae_rs.compress(model, x)):
        with pytest.raises(vae_rs.InputError, match=r"32x32 grey, but the model takes 28x28 grey"):
            f(x)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        model.decode(np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="no images"):
        model.encode(np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="3 or 4|height, width"):
        model.encode(np.zeros((28, 28), np.uint8))


def test_a_truncated_or_damaged_buffer_is_refused(model, sample):
    x = sample["test"][:50]
    blob = vae_rs.compress(model, x)
    for bad in (blob[:-7], blob[: len(blob) // 2], blob[:10], b""):
        with pytest.raises(vae_rs.InputError, match="the compressed data: ") as e:
            vae_rs.decompress(model, bad)
        assert isinstance(e.value, ValueError)
    flipped = bytearray(blob)
    flipped[-20] ^= 0x40
    with pytest.raises(vae_rs.InputError, match="the compressed data: "):
        vae_rs.decompress(model, flipped)
    with pytest.raises(vae_rs.InputError):
        vae_rs.decompress(model, bytes(range(256)) * 4)


def test_a_file_of_another_model_is_refused(model, sample, tmp_path):
    other = vae_rs.train(
        sample["train"][:300], out=tmp_path / "other", epochs=1, hidden=[8], latent_dim=8,
        likelihood="discretized-logistic", threads=1, quiet=True,
    ).load()
    blob = vae_rs.compress(model, sample["test"][:5])
    with pytest.raises(vae_rs.InputError, match="model"):
        vae_rs.decompress(other, blob)


def test_a_model_that_cannot_code_is_refused_naming_the_likelihood(tmp_path, sample):
    m = vae_rs.train(
        sample["train"][:300], out=tmp_path / "bern", epochs=1, hidden=[8], latent_dim=2,
        threads=1, quiet=True,
    ).load()
    with pytest.raises(vae_rs.InputError, match="a bernoulli model codes binarised images"):
        vae_rs.compress(m, sample["test"][:5])


def test_a_missing_run_is_a_file_error_with_the_command_lines_message(tmp_path):
    with pytest.raises(vae_rs.FileError, match="not a run directory") as e:
        vae_rs.load(tmp_path / "nowhere")
    assert isinstance(e.value, OSError) and isinstance(e.value, vae_rs.Error)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="config.json|model.safetensors"):
        vae_rs.load(tmp_path / "empty")


def test_damaged_weights_are_refused(run, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(run.dir, d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(vae_rs.InputError, match="model.safetensors"):
        vae_rs.load(d)
    w.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(vae_rs.InputError, match="model.safetensors"):
        vae_rs.load(d)


def test_flags_are_checked_by_name_as_vae_train_checks_them(sample, tmp_path):
    x = sample["train"][:100]
    with pytest.raises(vae_rs.InputError, match="--batch-size must be at least 1"):
        vae_rs.train(x, out=tmp_path / "a", batch_size=0)
    with pytest.raises(vae_rs.InputError, match="unknown flag `epoch`.*epochs"):
        vae_rs.train(x, out=tmp_path / "a", epoch=3)
    with pytest.raises(vae_rs.InputError, match="--epochs: invalid type"):
        vae_rs.train(x, out=tmp_path / "a", epochs="three")
    with pytest.raises(vae_rs.InputError, match="--alpha"):
        vae_rs.train(x, out=tmp_path / "a", likelihood="gaussian", alpha=1.5)
    with pytest.raises(vae_rs.InputError, match="give the data one way"):
        vae_rs.train(x, out=tmp_path / "a", dataset="mnist")
    with pytest.raises(vae_rs.InputError, match="uint8.*float32"):
        vae_rs.train(x.astype(np.float32), out=tmp_path / "a")
    with pytest.raises(vae_rs.InputError, match="train_labels: .*100"):
        vae_rs.train({"train": x, "train_labels": np.zeros(99, int)}, out=tmp_path / "a")
    with pytest.raises(vae_rs.FileError, match="no such file or directory"):
        vae_rs.train(tmp_path / "missing.csv", out=tmp_path / "a")
    # Nothing was written by the refused calls.
    assert not (tmp_path / "a").exists()
    vae_rs.train(x, out=tmp_path / "b", epochs=1, hidden=[8], latent_dim=2, quiet=True)
    with pytest.raises(vae_rs.InputError, match="already holds a run; continue it with --resume"):
        vae_rs.train(x, out=tmp_path / "b", epochs=1, quiet=True)


def test_labels_are_checked(sample, tmp_path):
    x, y = sample["train"][:200], sample["train_labels"][:200]
    m = vae_rs.train(
        x, labels=y, out=tmp_path / "cond", conditional=True, epochs=1, hidden=[8],
        latent_dim=2, threads=1, quiet=True,
    ).load()
    assert m.config["model"]["num_classes"] == 10
    with pytest.raises(vae_rs.InputError, match="conditional"):
        m.encode(x[:3])
    with pytest.raises(vae_rs.InputError, match="labels: .*3 examples"):
        m.encode(x[:3], labels=y[:2])
    with pytest.raises(vae_rs.InputError, match="integers"):
        m.encode(x[:3], labels=np.zeros(3))
    with pytest.raises(vae_rs.InputError, match="out of range"):
        m.encode(x[:3], labels=[0, 1, 10])
    mu, _ = m.encode(x[:3], labels=y[:3])
    assert mu.shape == (3, 2)
    assert m.sample(4, label=3).shape == (4, 28, 28)
    with pytest.raises(vae_rs.InputError, match="label 12 is out of range for 10 classes"):
        m.sample(2, label=12)


def test_bad_arguments_of_the_model_name_the_flag(model):
    with pytest.raises(vae_rs.InputError, match="--temperature must be positive"):
        model.sample(4, temperature=-1.0)
    with pytest.raises(vae_rs.InputError, match="--temperature: 2 values"):
        model.sample(4, temperature=[1.0, 0.5])
    with pytest.raises(vae_rs.InputError, match="--n must be at least 1"):
        model.sample(0)
    with pytest.raises(vae_rs.InputError, match="no split"):
        model.evaluate("validation")
    with pytest.raises(vae_rs.InputError, match="--limit"):
        model.evaluate("test", limit=0)
    with pytest.raises(vae_rs.InputError, match="--label: this model is not conditional"):
        model.sample(2, label=1)
