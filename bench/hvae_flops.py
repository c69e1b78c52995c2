#!/usr/bin/env python3
"""Multiply-adds per image of a training step of `--preset hvae` on 28x28 grey images, counted
by PyTorch's FlopCounterMode on the twin (`torch_hvae.py`, the same network): the forward pass
of the objective, and its backward pass (gradients of activations and weights), each as
multiply-adds (half the counted FLOPs, which count the convolutions' and products' 2 per
multiply-add; element-wise work is not counted). With `--images-per-second R` (a measured
training rate) it also prints the GFLOP/s that rate means.

Usage:  torchref/bin/python bench/hvae_flops.py [--batch 64] [--images-per-second R]
Prints one JSON object."""
import argparse, json, os, sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_hvae import HierarchicalVae, Recipe  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=Recipe.batch_size)
    ap.add_argument("--images-per-second", type=float)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = HierarchicalVae()
    x = torch.randint(0, 256, (a.batch, 784)).float() / 255  # flat, in [0, 1], as the twin reads it
    eps = torch.randn(a.batch, model.noise_dim)
    recipe = Recipe()
    with FlopCounterMode(display=False) as fwd:
        loss, _ = recipe.loss(model, x, 1.0, eps)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    f, b = fwd.get_total_flops() / a.batch / 2, bwd.get_total_flops() / a.batch / 2
    out = {
        "batch": a.batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_madds_per_image": f,
        "backward_madds_per_image": b,
        "step_madds_per_image": f + b,
    }
    if a.images_per_second:
        out["images_per_second"] = a.images_per_second
        out["gflops"] = 2 * (f + b) * a.images_per_second / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    main()
