"""Types of the native module of vae_rs (re-exported by the package)."""

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

PathLike = Union[str, "os.PathLike[str]"]
Images = npt.NDArray[np.uint8]
"""uint8 images: (n, height, width) grey, or (n, height, width, channels) with 1 or 3 channels."""
Floats = npt.NDArray[np.float32]
Labels = npt.ArrayLike
"""One non-negative integer class number per example, shape (n,)."""

class Error(Exception):
    """Every error of vae_rs; its message is the command line's."""

class InputError(Error, ValueError):
    """What was given is wrong: a dtype, shape or size, a flag's value, a damaged file or
    compressed buffer, a model that cannot do what was asked."""

class FileError(Error, OSError):
    """A file or run directory is missing, or cannot be read or written."""

class Model:
    """A trained model, loaded from a run directory (``load``, ``Run.load``)."""

    @property
    def config(self) -> Dict[str, Any]:
        """The run's configuration (config.json): ``model``, ``data``, ``train``."""
    @property
    def latent_dim(self) -> int:
        """The dimension of the (top) latent code."""
    @property
    def shape(self) -> Tuple[int, int, int]:
        """What one example is: (channels, height, width)."""
    @property
    def run_dir(self) -> Path:
        """The run directory the model was loaded from."""
    @property
    def likelihood(self) -> str:
        """The likelihood p(x|z), by its command-line name."""
    def encode(
        self, x: Union[Images, Floats], *, labels: Optional[Labels] = None, batch_size: int = 1000
    ) -> Tuple[Floats, Floats]:
        """The posterior q(z|x) of each example: means and log-variances, float32 arrays of
        shape (n, latent_dim) (the top group of a hierarchical model). ``x``: uint8 images of
        the model's size (float32 (n, d) features for a model of tables); ``labels`` for a
        conditional model."""
    def decode(self, z: Floats, *, labels: Optional[Labels] = None) -> Union[Images, Floats]:
        """The likelihood's mean for each code of ``z`` (float32, (n, latent_dim)): uint8
        images (the mean grey level of each pixel, rounded), float32 for a model of tables."""
    def sample(
        self,
        n: int = 64,
        *,
        temperature: Union[float, Sequence[float], None] = None,
        label: Optional[int] = None,
        seed: Optional[int] = None,
    ) -> Union[Images, Floats]:
        """``n`` new examples: codes from the prior at ``temperature`` (by default the model's:
        1.0 for a single latent group, 1.0 for the top group and 0.5 below it for the
        hierarchical model; a value per latent group, top first, the last repeating), decoded to the likelihood's
        mean, drawn from ``seed`` (the model's by default: the same call gives the same images,
        those of ``vae-infer sample`` with that seed)."""
    def reconstruct(
        self, x: Union[Images, Floats], *, labels: Optional[Labels] = None
    ) -> Union[Images, Floats]:
        """Each example decoded from its posterior mean (every latent group at its posterior
        mean), as ``vae-infer reconstruct`` draws it."""
    def evaluate(
        self,
        x: Union[Images, Floats, Literal["train", "test"], None] = None,
        *,
        iw_samples: int = 500,
        batch_size: int = 1000,
        limit: Optional[int] = None,
        labels: Optional[Labels] = None,
    ) -> Dict[str, Any]:
        """The dictionary of ``vae-infer evaluate --json``: ``neg_elbo``, ``recon``, ``kl``,
        ``nll`` (``iw_samples`` importance samples; 0 skips it), ``bits_per_dim``,
        ``neg_elbo_bits_per_dim``, ``density``, ``examples``, ``iw_samples`` (and ``note`` or
        ``cross_entropy_bits_per_dim`` where they apply). ``x``: an array of examples, or
        ``"train"``/``"test"`` (the default) for a split of the run's data, which adds
        ``split``; ``limit``: only the first examples."""

class Run:
    """A finished run (``train``)."""

    @property
    def dir(self) -> Path:
        """The run directory."""
    @property
    def outcome(self) -> Literal["finished", "early-stopped"]:
        """How the run ended."""
    @property
    def step(self) -> int:
        """Training steps done."""
    @property
    def best_val_loss(self) -> Optional[float]:
        """The best validation loss (negative ELBO, nats per example)."""
    @property
    def metrics(self) -> List[Dict[str, Any]]:
        """metrics.jsonl: one dict per epoch."""
    @property
    def config(self) -> Dict[str, Any]:
        """config.json: ``model``, ``data``, ``train``."""
    def load(
        self,
        *,
        best: bool = False,
        device: str = "auto",
        threads: Optional[int] = None,
        seed: int = 0,
    ) -> Model:
        """The trained model (``load(run.dir, ...)``)."""

def train(
    data: Union[Images, Dict[str, Any], PathLike, None] = None,
    out: Optional[PathLike] = None,
    *,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    labels: Optional[Labels] = None,
    **flags: Any,
) -> Run:
    """Trains a VAE and writes its run directory ``out`` (default runs/<dataset>-<preset>).

    ``data``: uint8 images (with ``labels``), a dict of ``train``, ``test``, ``train_labels``,
    ``test_labels`` (as ``datasets.sample()``), a dataset name (``"sample"``,
    ``"fashion-mnist"``, ...), or a path (a folder of pictures or of IDX files, a CSV or NPY
    file); None: the flags say (``dataset=...``; Fashion-MNIST by default). Arrays are written
    into ``out/data/`` as IDX files, so ``vae-infer`` can use the run.

    ``flags``: those of ``vae-train`` with ``_`` for ``-`` and the same defaults (``epochs=10``,
    ``batch_size=128``, ``preset="pytorch-example"``, ``hidden=[400]``, ``threads``, ``seed``,
    ``quiet``, ...), ``config=`` a TOML file of them, ``resume=DIR`` to continue a run.

    Progress: each epoch's line on ``sys.stderr`` (unless ``quiet=True``), and
    ``callback(event)`` with ``event["event"]`` ``"step"`` (``epoch``, ``batch``, ``batches``,
    ``loss``), ``"epoch"`` (the metrics.jsonl line) or ``"note"`` (``message``). Ctrl-C, or an
    exception raised by the callback, stops the run after the current step with a checkpoint
    (continue it with ``resume=``), then is raised."""

def load(
    run_dir: PathLike,
    *,
    best: bool = False,
    device: str = "auto",
    threads: Optional[int] = None,
    seed: int = 0,
) -> Model:
    """The model of a run directory written by ``vae-train`` or ``train``: model.safetensors
    (best.safetensors with ``best``) and config.json, every tensor checked. ``device``:
    ``auto``, ``cpu``, ``cuda[:N]``, ``metal``; ``threads``: all cores by default; ``seed``:
    of the random draws (sampling, evaluation noise)."""

def compress(
    model: Model, images: Images, *, chunk_images: Optional[int] = None
) -> bytes:
    """Compresses uint8 images of the model's size losslessly by bits-back coding (a model
    with ``likelihood="discretized-logistic"`` or ``"beta-binomial"``, or ``"bernoulli"`` on
    binarised images, on the CPU). The bytes are the file ``vae-infer compress --idx`` writes
    for an IDX file of the same images; they are decoded again before they are returned."""

def decompress(model: Model, data: Union[bytes, bytearray]) -> Images:
    """The images of ``compress``'s bytes (or a file of ``vae-infer compress``), decoded with
    the model that wrote them and checked against the original's checksum; a file of one PNG
    picture of any size gives that picture, ``n = 1``. A truncated, damaged or foreign buffer
    raises ``InputError``, and so does a file of a folder of pictures of several sizes."""

def sample_dataset() -> Dict[str, npt.NDArray[Any]]:
    """The embedded Fashion-MNIST sample (see ``vae_rs.datasets.sample``)."""
