"""Ctrl-C and exceptions of the callback stop training after the current step with a
checkpoint, as Ctrl-C stops vae-train, and the run resumes to the bytes of an uninterrupted one."""

import os
import signal
import threading

import pytest

import vae_rs

FLAGS = dict(epochs=2, hidden=[16], latent_dim=2, batch_size=32, threads=1, quiet=True)


@pytest.fixture(scope="module")
def data(sample):
    return {"train": sample["train"][:960], "test": sample["test"][:200]}


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    return vae_rs.train(data, out=tmp_path_factory.mktemp("straight") / "run", **FLAGS)


def test_ctrl_c_during_training_checkpoints_then_raises(data, straight, tmp_path):
    # SIGINT from another thread at the fifth step, as a terminal's Ctrl-C arrives. The
    # callback holds that step until the signal is sent (else a run of a few milliseconds can
    # end before it arrives); Python raises KeyboardInterrupt where it next runs Python code,
    # in the callback or at the loop's check of signals between steps, and either way the run
    # stops after the current step with a checkpoint.
    started, sent = threading.Event(), threading.Event()

    def on_event(e):
        if e["event"] == "step" and e["epoch"] == 1 and e["batch"] == 5:
            started.set()
            sent.wait(60)

    def interrupt():
        started.wait(60)
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    # Python's own handler, as in a terminal: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then keeps it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    t = threading.Thread(target=interrupt)
    t.start()
    out = tmp_path / "run"
    try:
        with pytest.raises(KeyboardInterrupt):
            vae_rs.train(data, out=out, callback=on_event, **FLAGS)
    finally:
        t.join()
        signal.signal(signal.SIGINT, previous)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest.startswith("step-")
    # Stopped in the first epoch: the checkpoint is a step of it, and no epoch was logged.
    assert 5 <= int(latest.split("-")[1]) < 30
    assert not (out / "metrics.jsonl").exists()
    resumed = vae_rs.train(resume=out, quiet=True)
    assert resumed.outcome == "finished"
    assert (out / "model.safetensors").read_bytes() == (
        straight.dir / "model.safetensors"
    ).read_bytes()


def test_an_exception_of_the_callback_stops_the_run_the_same_way(data, straight, tmp_path):
    class Enough(Exception):
        pass

    def on_event(e):
        if e["event"] == "epoch" and e["epoch"] == 1:
            raise Enough("stop here")

    out = tmp_path / "run"
    with pytest.raises(Enough, match="stop here"):
        vae_rs.train(data, out=out, callback=on_event, **FLAGS)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = vae_rs.train(resume=out, quiet=True)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2]
    assert (out / "model.safetensors").read_bytes() == (
        straight.dir / "model.safetensors"
    ).read_bytes()
