"""Fixtures shared by the tests: the sample data, one small run trained from arrays, and the
command-line binaries (built with cargo when they are not given)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import vae_rs

REPO = Path(__file__).resolve().parents[2]

# A small model of the sample that codes losslessly (a discrete likelihood), trained in seconds.
SMALL = dict(
    epochs=2,
    hidden=[64],
    latent_dim=8,
    likelihood="discretized-logistic",
    batch_size=64,
    threads=2,
    quiet=True,
)


@pytest.fixture(scope="session")
def sample():
    return vae_rs.datasets.sample()


@pytest.fixture(scope="session")
def run(sample, tmp_path_factory):
    """The run of SMALL trained on the sample's arrays (train and test splits, labels)."""
    out = tmp_path_factory.mktemp("runs") / "py"
    return vae_rs.train(sample, out=out, **SMALL)


@pytest.fixture(scope="session")
def model(run):
    return run.load(threads=2)


@pytest.fixture(scope="session")
def bins():
    """The directory of vae-train and vae-infer: $VAE_BIN_DIR, else built here with cargo (the
    debug profile, as `cargo test` builds them). Without cargo the tests that need them are
    skipped, saying so, unless VAE_REQUIRE_BINARIES=1 (CI) makes that a failure."""
    given = os.environ.get("VAE_BIN_DIR")
    if given:
        d = Path(given)
    elif shutil.which("cargo"):
        subprocess.run(
            ["cargo", "build", "--quiet", "-p", "vae-train", "-p", "vae-infer", "--bins"],
            cwd=REPO,
            check=True,
        )
        meta = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        d = Path(json.loads(meta.stdout)["target_directory"]) / "debug"
    else:
        why = "no VAE_BIN_DIR and no cargo to build vae-train and vae-infer"
        if os.environ.get("VAE_REQUIRE_BINARIES") == "1":
            pytest.fail(why + " (VAE_REQUIRE_BINARIES=1)")
        pytest.skip(why + ": skipping the comparison with the command line")
    for name in ("vae-train", "vae-infer"):
        if not (d / name).is_file():
            pytest.fail(f"{d / name} is missing")
    return d


def cli(bins, name, *args):
    """Runs a binary; returns its standard output (fails the test on a non-zero status)."""
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("VAE_DATA_DIR", None)
    p = subprocess.run(
        [str(bins / name), *map(str, args)], capture_output=True, text=True, env=env
    )
    assert p.returncode == 0, f"{name} {' '.join(map(str, args))}: {p.stderr}"
    return p.stdout
