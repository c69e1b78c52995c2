"""The package and the command line agree: on the same run they give the same figures, codes
and files, and each reads the runs and files of the other."""

import json

import numpy as np

import vae_rs
from conftest import SMALL, cli


def idx_bytes(images):
    """An IDX file of uint8 images (n, h, w)."""
    head = bytes([0, 0, 8, images.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in images.shape
    )
    return head + np.ascontiguousarray(images).tobytes()


def test_evaluate_gives_the_figures_of_vae_infer_evaluate(bins, run, model, sample):
    got = json.loads(
        cli(bins, "vae-infer", "evaluate", "--run", run.dir, "--json", "--iw-samples", 20,
            "--limit", 200, "--threads", 2)
    )
    assert got["examples"] == 200 and got["density"] == "discrete"
    assert model.evaluate("test", iw_samples=20, limit=200) == got
    # The same images given as an array: the same figures, without the split's name.
    del got["split"]
    assert model.evaluate(sample["test"][:200], iw_samples=20) == got


def test_encode_gives_the_codes_of_vae_infer_encode(bins, run, model, sample, tmp_path):
    f = tmp_path / "test.npy"
    cli(bins, "vae-infer", "encode", "--run", run.dir, "--split", "test", "--out", f,
        "--threads", 2)
    table = np.load(f)
    mu, logvar = model.encode(sample["test"])
    assert np.array_equal(table[:, :8], mu)
    assert np.array_equal(table[:, 8:16], logvar)
    assert np.array_equal(table[:, 16], sample["test_labels"])


def test_compressed_bytes_are_those_of_vae_infer_compress(bins, run, model, sample, tmp_path):
    x = sample["test"][:100]
    src = tmp_path / "x.idx"
    src.write_bytes(idx_bytes(x))
    cli(bins, "vae-infer", "compress", "--run", run.dir, "--idx", src, "-o", tmp_path / "x.vbb",
        "--threads", 2)
    blob = vae_rs.compress(model, x)
    assert (tmp_path / "x.vbb").read_bytes() == blob
    # vae-infer decodes the package's bytes back to the IDX file, byte for byte.
    (tmp_path / "py.vbb").write_bytes(blob)
    cli(bins, "vae-infer", "decompress", tmp_path / "py.vbb", "--run", run.dir, "-o",
        tmp_path / "back.idx")
    assert (tmp_path / "back.idx").read_bytes() == src.read_bytes()


def test_training_from_the_arrays_gives_the_weights_of_vae_train(bins, run, tmp_path):
    out = tmp_path / "cli"
    flags = ["--epochs", SMALL["epochs"], "--hidden", "64", "--latent-dim", SMALL["latent_dim"],
             "--likelihood", SMALL["likelihood"], "--batch-size", SMALL["batch_size"],
             "--threads", SMALL["threads"], "--quiet"]
    cli(bins, "vae-train", "--dataset", "sample", "--out", out, *flags)
    # The sample's arrays are the embedded sample, in the same order: the same run.
    assert (out / "model.safetensors").read_bytes() == (run.dir / "model.safetensors").read_bytes()
    ours = [{k: v for k, v in m.items() if k not in ("seconds", "examples_per_second")}
            for m in run.metrics]
    theirs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert ours == [{k: v for k, v in m.items() if k not in ("seconds", "examples_per_second")}
                    for m in theirs]
    # And the package loads the run of vae-train.
    m = vae_rs.load(out, threads=2)
    assert m.config["data"]["dataset"] == "sample"
    assert np.array_equal(m.sample(16), run.load(threads=2).sample(16))
