#!/usr/bin/env python3
"""PyTorch references for the presets `cargo xtask bench --vs-torch` times (`--throughput` adds
encoding and sampling speed); each is the same net, initialisation (PyTorch's default, which
vae-core's `Vae::init` draws too), loss, optimizer (Adam 1e-3), batch (128) and data order
(shuffled each epoch, the last batch short) as the preset of the same name:
- `pytorch-example` (default): mlp 784-400-20, ReLU, Bernoulli logits; summed BCE + analytic KL.
- `conv`: conv 1->32->64 (4x4, stride 2, padding 1), ReLU, dense 3136->256, latent 32; the decoder
  mirrors it with transposed convolutions; Bernoulli logits; summed BCE + analytic KL.
- `iwae`: mlp 784-200-200-50, tanh, Bernoulli logits, dynamic binarisation (each training batch
  drawn as Bernoulli(x)); with `--iwae-k K > 1` the loss is the importance-weighted bound with K
  samples, else the ELBO.
- `hvae`: the hierarchical net with a discretized logistic mixture and its own recipe (batch 64,
  KL warm-up, free bits, learning-rate warm-up and cosine decay, clipping and skipping of outlier
  updates), all in `torch_hvae.py`; `hvae_twin_check.py` checks it against a vae run's weights.
The validation loss is the one-sample negative ELBO of the (grey-level) test split, per example.

Set-up once:  python3 -m venv torchref && torchref/bin/pip install torch numpy scikit-learn
Data:         apt-get install -y dataset-fashion-mnist   (IDX files in /usr/share/datasets/fashion-mnist)
Speed:        torchref/bin/python torch_vae.py --threads 1 --epochs 2 [--preset conv]
Sample:       ... --data-dir data/fashion-mnist-sample   (the 6,000 + 1,000 images vae embeds)
Quality:      torchref/bin/python torch_vae.py --threads 1 --epochs 10 --evaluate
GPU:          torchref/bin/python torch_vae.py --device cuda --epochs 3   (default --device cpu)
Prints one JSON object per epoch, then one with the evaluation numbers of docs/RESULTS.md."""
import argparse, gzip, json, math, os, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def idx(path, offset):
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    return np.frombuffer(raw, np.uint8, offset=offset)


def load(data_dir, split):
    stem = "train" if split == "train" else "t10k"
    find = lambda name: next(os.path.join(data_dir, n) for n in (name + ".gz", name) if os.path.exists(os.path.join(data_dir, n)))
    x = idx(find(f"{stem}-images-idx3-ubyte"), 16).reshape(-1, 784).astype(np.float32) / 255.0
    y = idx(find(f"{stem}-labels-idx1-ubyte"), 8).astype(np.int64)
    return torch.from_numpy(x), y


class Vae(nn.Module):
    def __init__(self, hidden=400, latent=20):
        super().__init__()
        self.latent = latent
        self.e1, self.mu, self.lv = nn.Linear(784, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.d1, self.d2 = nn.Linear(latent, hidden), nn.Linear(hidden, 784)

    def encode(self, x):
        h = F.relu(self.e1(x))
        return self.mu(h), self.lv(h)

    def decode(self, z):
        return self.d2(F.relu(self.d1(z)))


class ConvVae(nn.Module):
    """Preset `conv`: the head gives mu and log-variance stacked, as vae-core's `encoder.head`."""

    def __init__(self, latent=32, hidden=256):
        super().__init__()
        self.latent = latent
        self.c1, self.c2 = nn.Conv2d(1, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1)
        self.fc, self.head = nn.Linear(64 * 7 * 7, hidden), nn.Linear(hidden, 2 * latent)
        self.d0, self.d1 = nn.Linear(latent, hidden), nn.Linear(hidden, 64 * 7 * 7)
        self.u0, self.u1 = nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ConvTranspose2d(32, 1, 4, 2, 1)

    def encode(self, x):
        h = F.relu(self.c2(F.relu(self.c1(x.view(-1, 1, 28, 28)))))
        p = self.head(F.relu(self.fc(h.flatten(1))))
        return p[:, : self.latent], p[:, self.latent :]

    def decode(self, z):
        h = F.relu(self.d1(F.relu(self.d0(z)))).view(-1, 64, 7, 7)
        return self.u1(F.relu(self.u0(h))).flatten(1)


class IwaeVae(nn.Module):
    """Preset `iwae`: mlp [200, 200] tanh, latent 50."""

    def __init__(self, hidden=200, latent=50):
        super().__init__()
        self.latent = latent
        self.e1, self.e2, self.head = nn.Linear(784, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * latent)
        self.d1, self.d2, self.out = nn.Linear(latent, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 784)

    def encode(self, x):
        p = self.head(torch.tanh(self.e2(torch.tanh(self.e1(x)))))
        return p[:, : self.latent], p[:, self.latent :]

    def decode(self, z):
        return self.out(torch.tanh(self.d2(torch.tanh(self.d1(z)))))


def neg_elbo_sum(model, x):
    mu, lv = model.encode(x)
    z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
    recon = F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="sum")
    kl = 0.5 * torch.sum(mu.pow(2) + lv.exp() - lv - 1)
    return recon + kl


def neg_iwae_sum(model, x, k):
    """The negative importance-weighted bound with k samples, summed over the batch."""
    mu, lv = model.encode(x)
    eps = torch.randn(k, *mu.shape, device=x.device)
    z = mu + torch.exp(0.5 * lv) * eps
    logits = model.decode(z.reshape(-1, mu.shape[1])).view(k, x.shape[0], -1)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand(k, -1, -1), reduction="none").sum(2)
    log2pi = math.log(2 * math.pi)
    log_pz = (-0.5 * z.pow(2) - 0.5 * log2pi).sum(2)
    log_qz = (-0.5 * eps.pow(2) - 0.5 * log2pi - 0.5 * lv).sum(2)
    return -(torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(k)).sum()


@torch.no_grad()
def iw_nll(model, x, k):
    mu, lv = model.encode(x)
    std, out = torch.exp(0.5 * lv), []
    log2pi = math.log(2 * math.pi)
    for i in range(x.shape[0]):
        eps = torch.randn(k, mu.shape[1], device=x.device)
        z = mu[i] + std[i] * eps
        log_px = -F.binary_cross_entropy_with_logits(model.decode(z), x[i : i + 1].expand(k, -1), reduction="none").sum(1)
        log_pz = (-0.5 * z.pow(2) - 0.5 * log2pi).sum(1)
        log_qz = (-0.5 * eps.pow(2) - 0.5 * log2pi - torch.log(std[i])).sum(1)
        out.append((torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(k)).item())
    return -float(np.mean(out))


def validation_loss(model, xte, hvae):
    """The one-sample negative ELBO of the test split, per example."""
    with torch.no_grad():
        if hvae:
            # 250 rows a pass, as vae-train's validation (train.rs, VAL_BATCH).
            return sum(model.neg_elbo(xte[i : i + 250]).sum().item() for i in range(0, len(xte), 250)) / len(xte)
        return sum(neg_elbo_sum(model, xte[i : i + 1000]).item() for i in range(0, len(xte), 1000)) / len(xte)


def plain_epoch(model, opt, xtr, bs, loss_sum, dynamic, dev):
    """One epoch of Adam on the summed loss in a fresh random order, the last batch short."""
    total, perm = 0.0, torch.randperm(len(xtr)).to(dev)
    for i in range(0, len(xtr), bs):
        x = xtr[perm[i : i + bs]]
        if dynamic:
            x = torch.bernoulli(x)
        loss = loss_sum(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, help="128 (64 for hvae, its preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--evaluate", action="store_true")
    ap.add_argument("--iw-samples", type=int, default=1000)
    ap.add_argument("--iw-limit", type=int, default=1000)
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--preset", choices=["pytorch-example", "conv", "iwae", "hvae"], default="pytorch-example")
    ap.add_argument("--iwae-k", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    a = ap.parse_args()
    hvae = a.preset == "hvae"
    if hvae and (a.evaluate or a.iwae_k > 1):
        raise SystemExit("--preset hvae: --evaluate and --iwae-k are for the Bernoulli presets "
                         "(hvae_twin_check.py evaluates the hvae twin)")
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: this PyTorch sees no CUDA device")
    # Timings wait for the GPU's queued work; on the CPU there is none.
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = load(a.data_dir, "train")
    xte, yte = load(a.data_dir, "test")
    xtr, xte = xtr.to(dev), xte.to(dev)
    if hvae:
        from torch_hvae import HierarchicalVae, Recipe
        model, recipe = HierarchicalVae().to(dev), Recipe()
        opt = recipe.optimizer(model)
        bs = a.batch_size or recipe.batch_size
        recipe.batch_size = bs
        step, total_steps = 0, a.epochs * -(-len(xtr) // bs)
    else:
        model = {"pytorch-example": Vae, "conv": ConvVae, "iwae": IwaeVae}[a.preset]().to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        bs = a.batch_size or 128
    dynamic = a.preset == "iwae"
    loss_sum = (lambda m, x: neg_iwae_sum(m, x, a.iwae_k)) if a.iwae_k > 1 else neg_elbo_sum
    for epoch in range(1, a.epochs + 1):
        sync()
        t, extra = time.perf_counter(), {}
        if hvae:
            total, step, skipped = recipe.train_epoch(model, opt, xtr, epoch, step, total_steps)
            extra = {"skipped_updates": skipped, "step": step}
        else:
            total = plain_epoch(model, opt, xtr, bs, loss_sum, dynamic, dev)
        sync()
        seconds = time.perf_counter() - t
        val = validation_loss(model, xte, hvae)
        print(json.dumps({"epoch": epoch, "train_loss": total / len(xtr), "val_loss": val, "seconds": seconds,
                          "examples_per_second": len(xtr) / seconds, "threads": a.threads,
                          "preset": a.preset, "iwae_k": a.iwae_k, "batch_size": bs, **extra}), flush=True)
    if a.throughput:
        with torch.no_grad():
            sync()
            t = time.perf_counter()
            for i in range(0, len(xtr), 1000):
                model.encode(xtr[i : i + 1000])
            sync()
            encode = len(xtr) / (time.perf_counter() - t)
            z = torch.randn(a.samples, model.latent, device=dev)
            sync()
            t = time.perf_counter()
            for i in range(0, a.samples, 1000):
                if hvae:
                    model.sample_mean(min(1000, a.samples - i), dev)
                else:
                    torch.sigmoid(model.decode(z[i : i + 1000]))
            sync()
            sample = a.samples / (time.perf_counter() - t)
        print(json.dumps({"encode_per_second": encode, "sample_per_second": sample, "threads": a.threads}), flush=True)
    if not a.evaluate:
        return
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.neighbors import KNeighborsClassifier
    with torch.no_grad():
        ztr, zte = model.encode(xtr)[0].cpu().numpy(), model.encode(xte)[0].cpu().numpy()
        neg_elbo = neg_elbo_sum(model, xte).item() / len(xte)
        nll = iw_nll(model, xte[: a.iw_limit], a.iw_samples)
    pred = KMeans(10, n_init=10, random_state=0).fit(ztr).predict(zte)
    counts = np.zeros((10, 10))
    for p, y in zip(pred, yte):
        counts[p, y] += 1
    rows, cols = linear_sum_assignment(-counts)
    print(json.dumps({
        "neg_elbo": neg_elbo, "nll": nll, "iw_samples": a.iw_samples, "iw_examples": a.iw_limit,
        "knn5_accuracy": KNeighborsClassifier(5).fit(ztr, ytr).score(zte, yte),
        "linear_accuracy": LogisticRegression(max_iter=2000).fit(ztr, ytr).score(zte, yte),
        "kmeans_accuracy": counts[rows, cols].sum() / len(yte),
        "kmeans_nmi": normalized_mutual_info_score(yte, pred), "kmeans_ari": adjusted_rand_score(yte, pred)}))


if __name__ == "__main__":
    main()
