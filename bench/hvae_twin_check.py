#!/usr/bin/env python3
"""Checks the PyTorch twin of the hierarchical model (`torch_hvae.py`) against vae itself, with
the weights of a vae run in the twin:

1. Posterior means and log-variances of every latent group of the test images against
   `vae-infer encode --all-groups` (each lower group with the groups above at their posterior
   means); the largest difference must stay below 1e-3 of the largest value.
2. The one-sample −ELBO, its reconstruction and KL terms with vae's own noise against
   `vae-infer evaluate --iw-samples 0`: the noise is vae's generator (xoshiro256++ seeded
   through SplitMix64, Box-Muller; crates/vae-core/src/rng.rs) for the stream of each example
   (crates/vae-core/src/noise.rs `Noise::per_example`, crates/vae-run/src/eval.rs
   `elbo_stats`), rebuilt in `vae_rng.py`, so both compute the same sum: they must agree to
   1e-4 relative (f32 rounding; other noise would differ by about 3e-4).
3. The −ELBO with fresh noise, several draws per example, against the same figure: within
   4 standard errors of the Monte-Carlo noise.
4. Training: vae-train runs `--preset hvae` for two epochs on the first 128 training images
   (two steps an epoch), writing a checkpoint after every step; from each checkpoint the twin
   takes one step with the same weights, Adam moments, batch (vae's epoch order), noise (the
   generator state the checkpoint saved), KL weight and learning rate, and its gradient (read
   from the first moments), second moments and weight update are compared with the next
   checkpoint's: the objective, free bits, clipping and Adam of `torch_hvae.Recipe`. Gradients
   and second moments must agree to 1e-3 relative (Euclidean norm over all weights), updates
   to 1e-2 (at these first steps' learning rates, near 1e-5, the f32 weights resolve an update
   to a few parts in 1e4).

Set-up:  torchref/bin/pip install safetensors   (beside torch and numpy)
Usage:   cargo build --release -p vae-train -p vae-infer
         target/release/vae-train --preset hvae --dataset sample --epochs 1 --out /tmp/hv
         torchref/bin/python bench/hvae_twin_check.py --run /tmp/hv   (--vae-train '' skips check 4)
Prints one JSON object; exits 1 when a figure disagrees beyond its tolerance. Not run by CI
(it needs PyTorch); with the defaults on the sample's 1,000 test images it takes about 3
minutes of CPU time (user + system) and 1.3 GiB at its peak."""
import argparse, json, os, struct, subprocess, sys, tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_hvae import HierarchicalVae, Recipe  # noqa: E402
from torch_vae import idx, load  # noqa: E402
from vae_rng import Rng, epoch_order  # noqa: E402


def twin_from_run(run, weights=None):
    """The twin with the run's settings (config.json's `model`) and weights (`weights`, by
    default the run's model.safetensors)."""
    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(run, "config.json")))["model"]
    arch, lik, shape = cfg["arch"], cfg["likelihood"], cfg["shape"]
    if arch["kind"] != "hierarchical" or arch["activation"] != "relu" or lik["kind"] != "discretized-logistic":
        raise SystemExit(f"{run}: the twin is the hierarchical ReLU model with a discretized logistic mixture")
    if shape["height"] != shape["width"]:
        raise SystemExit(f"{run}: the twin takes square images")
    model = HierarchicalVae(width=arch["width"], bottleneck=arch["bottleneck"], z_channels=arch["z_channels"],
                            groups=tuple(arch["groups"]), blocks=arch["blocks"], latent=cfg["latent_dim"],
                            mixtures=lik["mixtures"], size=shape["height"], channels=shape["channels"])
    model.load_state_dict(load_file(weights or os.path.join(run, "model.safetensors")), strict=True)
    return model.eval()


def vae_infer(binary, args):
    out = subprocess.run([binary, *args, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def relative(a, b):
    return abs(a - b) / abs(b)


def write_idx(path, values):
    """An IDX file of unsigned bytes (magic 0x08, then the number of dimensions and each)."""
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, values.ndim]) + b"".join(struct.pack(">I", d) for d in values.shape))
        f.write(values.astype(np.uint8).tobytes())


def tiny_dataset(data_dir, out, train, test):
    """The first `train` and `test` images and labels of `data_dir` as raw IDX files in `out`."""
    os.makedirs(out)
    for stem, n in [("train", train), ("t10k", test)]:
        find = lambda name: next(os.path.join(data_dir, f) for f in (name + ".gz", name)
                                 if os.path.exists(os.path.join(data_dir, f)))
        images = idx(find(f"{stem}-images-idx3-ubyte"), 16).reshape(-1, 28, 28)[:n]
        labels = idx(find(f"{stem}-labels-idx1-ubyte"), 8)[:n]
        write_idx(os.path.join(out, f"{stem}-images-idx3-ubyte"), images)
        write_idx(os.path.join(out, f"{stem}-labels-idx1-ubyte"), labels)


def load_adam(opt, model, path):
    """vae's optimizer state (`m.<name>`, `v.<name>`, the step count in the metadata; optim.rs)
    as PyTorch Adam's."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        step = int(f.metadata()["step"])
        for name, p in model.named_parameters():
            opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": f.get_tensor(f"m.{name}").clone(),
                            "exp_avg_sq": f.get_tensor(f"v.{name}").clone()}


def flat(tensors, names):
    return torch.cat([tensors[k].double().flatten() for k in names])


def training_steps(a, tmp):
    """Check 4: one step of the twin from each of vae's checkpoints against the next one."""
    from safetensors.torch import load_file

    data, run = os.path.join(tmp, "tiny"), os.path.join(tmp, "steps")
    tiny_dataset(a.data_dir, data, 128, 64)
    subprocess.run([a.vae_train, "--preset", "hvae", "--dataset", "fashion-mnist", "--data-dir", data,
                    "--epochs", "2", "--checkpoint-every", "1", "--keep", "10", "--threads", str(a.threads),
                    "--quiet", "--out", run], check=True, env={**os.environ, "RUST_LOG": "warn"})
    train = json.load(open(os.path.join(run, "config.json")))["train"]
    xtr, _ = load(data, "train")
    recipe = Recipe()
    bs = recipe.batch_size = train["batch_size"]
    batches = -(-len(xtr) // bs)
    total = train["epochs"] * batches
    root = os.path.join(run, "checkpoints")
    dirs = sorted(os.path.join(root, d) for d in os.listdir(root) if d.startswith("step-"))
    out = []
    for prev, next_ in zip(dirs, dirs[1:]):
        model = twin_from_run(run, os.path.join(prev, "model.safetensors")).train()
        opt = recipe.optimizer(model)
        load_adam(opt, model, os.path.join(prev, "optimizer.safetensors"))
        state = json.load(open(os.path.join(prev, "state.json")))
        # train.rs: the batch, KL weight and learning rate of the step after the checkpoint.
        order = epoch_order(len(xtr), train["seed"], state["epoch"])
        rows = order[state["batch"] * bs : (state["batch"] + 1) * bs]
        beta = recipe.beta_at(state["epoch"] - 1 + state["batch"] / batches)
        for g in opt.param_groups:
            g["lr"] = recipe.lr_at(state["step"], total)
        eps = Rng.from_state(state["rng"]).normal(len(rows) * model.noise_dim).reshape(len(rows), -1)
        names = [n for n, _ in model.named_parameters()]
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        m0 = {n: opt.state[p]["exp_avg"].clone() for n, p in model.named_parameters()}
        _, norm, applied = recipe.step(model, opt, xtr[rows], beta, torch.from_numpy(eps))
        twin = {
            "w": {n: p.detach() for n, p in model.named_parameters()},
            "m": {n: opt.state[p]["exp_avg"] for n, p in model.named_parameters()},
            "v": {n: opt.state[p]["exp_avg_sq"] for n, p in model.named_parameters()},
        }
        vae = {"w": load_file(os.path.join(next_, "model.safetensors"))}
        moments = load_file(os.path.join(next_, "optimizer.safetensors"))
        vae["m"] = {n: moments[f"m.{n}"] for n in names}
        vae["v"] = {n: moments[f"v.{n}"] for n in names}
        # The (clipped) gradient from the first moments: m' = 0.9 m + 0.1 g.
        grad = lambda m: (flat(m, names) - 0.9 * flat(m0, names)) / 0.1
        update = lambda w: flat(w, names) - flat(before, names)
        diff = lambda f, x, y: ((f(x) - f(y)).norm() / f(y).norm()).item()
        out.append({
            "step": state["step"] + 1, "beta": beta, "lr": opt.param_groups[0]["lr"], "grad_norm": norm,
            "applied": applied, "gradient_relative_difference": diff(grad, twin["m"], vae["m"]),
            "second_moment_relative_difference": diff(lambda v: flat(v, names), twin["v"], vae["v"]),
            "update_relative_difference": diff(update, twin["w"], vae["w"]),
        })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a vae-train run directory of the hierarchical model")
    ap.add_argument("--vae-infer", default="target/release/vae-infer")
    ap.add_argument("--vae-train", default="target/release/vae-train", help="for check 4; '' leaves it out")
    ap.add_argument("--data-dir", default="data/fashion-mnist-sample", help="the run's dataset (IDX files)")
    ap.add_argument("--draws", type=int, default=5, help="fresh noise draws per example for check 3")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = twin_from_run(a.run)
    x, _ = load(a.data_dir, "test")
    n, rows = len(x), 250
    report = {"run": a.run, "examples": n}
    ok = True

    # 1. Posterior means and log-variances of every group.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "latents.npy")
        enc = vae_infer(a.vae_infer, ["encode", "--run", a.run, "--split", "test", "--all-groups", "--out", path])
        ours = np.load(path)
    dim = model.noise_dim
    if ours.shape[0] != n or enc["latent_dim"] != dim:
        raise SystemExit(f"{a.run}: vae-infer encoded {ours.shape} for {n} examples of {dim} latent values; "
                         f"is --data-dir the run's dataset?")
    with torch.no_grad():
        parts = [model.posterior_means(x[i : i + rows]) for i in range(0, n, rows)]
    mu = torch.cat([p[0] for p in parts]).numpy()
    lv = torch.cat([p[1] for p in parts]).numpy()
    for name, twin, vae in [("mu", mu, ours[:, :dim]), ("logvar", lv, ours[:, dim : 2 * dim])]:
        err = float(np.abs(twin - vae).max())
        scale = float(np.abs(vae).max())
        report[f"{name}_max_abs_difference"] = err
        report[f"{name}_max_abs"] = scale
        report[f"top_{name}_max_abs_difference"] = float(np.abs(twin[:, : model.latent] - vae[:, : model.latent]).max())
        ok &= err <= 1e-3 * max(scale, 1.0)

    # 2. The same noise as vae-infer evaluate (seed 0; eval.rs mixes in 0xe7a1_0000).
    ev = vae_infer(a.vae_infer, ["evaluate", "--run", a.run, "--iw-samples", "0"])
    eps = torch.from_numpy(Rng.stream(0xE7A1_0000, np.arange(n)).normal(dim))
    with torch.no_grad():
        terms = [model.terms(x[i : i + rows], eps[i : i + rows]) for i in range(0, n, rows)]
    recon = torch.cat([t[0] for t in terms]).double()
    kl = torch.cat([t[1].sum(1) for t in terms]).double()
    same = {"neg_elbo": (recon + kl).mean().item(), "recon": recon.mean().item(), "kl": kl.mean().item()}
    report["vae"] = {k: ev[k] for k in same}
    report["twin_same_noise"] = same
    report["same_noise_relative_difference"] = {k: relative(same[k], ev[k]) for k in same}
    ok &= relative(same["neg_elbo"], ev["neg_elbo"]) < 1e-4

    # 3. Fresh noise: the mean over draws per example, and its standard error.
    with torch.no_grad():
        draws = torch.stack([torch.cat([model.neg_elbo(x[i : i + rows]) for i in range(0, n, rows)])
                             for _ in range(a.draws)]).double()
    fresh = draws.mean().item()
    # Both average the same examples: what differs is the noise, whose spread is each example's
    # variance over draws. vae's figure is one draw per example, the twin's `draws`.
    within = draws.var(0).mean().sqrt().item()
    se = within / n ** 0.5 * (1 + 1 / a.draws) ** 0.5
    report["twin_fresh_noise"] = {"neg_elbo": fresh, "draws": a.draws, "standard_error_of_difference": se,
                                  "difference_in_standard_errors": (ev["neg_elbo"] - fresh) / se}
    ok &= abs(ev["neg_elbo"] - fresh) < 4 * se

    # 4. Training steps.
    if a.vae_train:
        with tempfile.TemporaryDirectory() as tmp:
            steps = training_steps(a, tmp)
        report["training_steps"] = steps
        ok &= len(steps) == 3 and all(
            s["applied"] and s["gradient_relative_difference"] < 1e-3 and s["second_moment_relative_difference"] < 1e-3
            and s["update_relative_difference"] < 1e-2 for s in steps)
    report["agree"] = bool(ok)
    print(json.dumps(report, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
