"""The extension is built with the dependency versions of the binaries: python/Cargo.lock pins
every crate the root Cargo.lock also has to a version the root lock has (after the root lock
changes: `cargo update --manifest-path python/Cargo.toml -p <crate> --precise <version>`), so
that its computations, and the bytes it writes, are the binaries'."""

import re

from conftest import REPO


def packages(lock):
    text = lock.read_text()
    return set(re.findall(r'^name = "([^"]+)"\nversion = "([^"]+)"', text, re.M))


def test_python_lock_agrees_with_the_root_lock():
    root = packages(REPO / "Cargo.lock")
    ours = packages(REPO / "python" / "Cargo.lock")
    root_names = {n for n, _ in root}
    shared = {(n, v) for n, v in ours if n in root_names}
    assert len(shared) > 200
    assert shared - root == set()
