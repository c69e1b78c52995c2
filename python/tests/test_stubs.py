"""The type stubs (vae_rs/_vae_rs.pyi) describe the native module as it is: every function and
method it declares exists, with the same parameters in the same order and kinds."""

import ast
import inspect
from pathlib import Path

import vae_rs
from vae_rs import _vae_rs

STUB = Path(vae_rs.__file__).with_name("_vae_rs.pyi")


def stub_params(fn: ast.FunctionDef):
    a = fn.args
    names = [(p.arg, "positional") for p in a.posonlyargs + a.args]
    names += [(p.arg, "keyword") for p in a.kwonlyargs]
    if a.kwarg:
        names.append((a.kwarg.arg, "var_keyword"))
    return [(n, k) for n, k in names if n != "self"]


def runtime_params(obj):
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
        inspect.Parameter.VAR_KEYWORD: "var_keyword",
    }
    return [
        (p.name, kinds[p.kind])
        for p in inspect.signature(obj).parameters.values()
        if p.name not in ("self", "py")
    ]


def test_the_stubs_match_the_native_module():
    tree = ast.parse(STUB.read_text())
    checked = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert runtime_params(getattr(_vae_rs, node.name)) == stub_params(node), node.name
            checked += 1
        elif isinstance(node, ast.ClassDef):
            cls = getattr(_vae_rs, node.name)
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                attr = getattr(cls, item.name)
                if any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list):
                    assert isinstance(attr, property) or hasattr(attr, "__get__"), item.name
                else:
                    assert runtime_params(attr) == stub_params(item), f"{node.name}.{item.name}"
                checked += 1
    # train, load, compress, decompress, sample_dataset, and the classes' members.
    assert checked >= 20
    assert sorted(vae_rs.__all__) == sorted(
        n for n in vae_rs.__all__ if hasattr(vae_rs, n)
    )
