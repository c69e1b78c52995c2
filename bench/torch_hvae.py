"""The PyTorch twin of vae's `--preset hvae` on 28x28 grey images: the hierarchical network, the
discretized logistic mixture, the objective and the training recipe, each read from the Rust
file named beside it (paths from the repository root). `torch_vae.py --preset hvae` trains it;
`hvae_twin_check.py` loads a vae run's weights into it and compares the two.

The state dict's names are vae's safetensors names (ARCHITECTURE.md, "Tensor names"), in
PyTorch's layouts, so `model.load_state_dict(safetensors.torch.load_file(...))` takes a vae
run's weights as they are."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# crates/vae-core/src/arch/hierarchical/blocks.rs, LOG_SCALE_BOUND: every latent log σ is
# L·tanh(raw / L); the top group's log-variance is bounded by 2L the same way (net.rs,
# `top_posterior`).
LOG_SCALE_BOUND = 5.0
# crates/vae-core/src/ops/dlogistic.rs, DLOGISTIC_LOG_SCALE_{MIN,MAX}: the pixel components'
# log-scales, bounded by mid + half·tanh((raw − mid) / half) (ops/discrete.rs, `Bound`).
DL_LOG_SCALE_MIN, DL_LOG_SCALE_MAX = -8.0, 2.0
TOP_LEVEL = 255.0


def bounded(raw, bound):
    """bound·tanh(raw / bound): the identity near 0, in (−bound, bound)."""
    return bound * torch.tanh(raw / bound)


def up2(h):
    """Nearest 2x upsampling (blocks.rs, `up2`)."""
    return F.interpolate(h, scale_factor=2, mode="nearest")


class Block(nn.Module):
    """VDVAE's bottleneck block (blocks.rs, `Block`): 1x1 to `mid` channels, two 3x3, 1x1 to
    `out`, each convolution after the activation; the input added when `residual`."""

    def __init__(self, cin, mid, out, residual):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, mid, 1), nn.Conv2d(mid, mid, 3, padding=1)
        self.c3, self.c4 = nn.Conv2d(mid, mid, 3, padding=1), nn.Conv2d(mid, out, 1)
        self.residual = residual

    def forward(self, x):
        t = self.c4(F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(F.relu(x))))))))
        return x + t if self.residual else t


class Group(nn.Module):
    """The blocks of one spatial latent group (net.rs, `GroupBlock`)."""

    def __init__(self, width, mid, z):
        super().__init__()
        self.prior = Block(width, mid, 2 * z + width, False)  # means, raw log-scales, term added to h
        self.post = Block(2 * width, mid, 2 * z, False)  # from [h, bottom-up activation]
        self.zproj = nn.Conv2d(z, width, 1)
        self.res = Block(width, mid, width, True)


class Gauss:
    """A group's diagonal Gaussian, `[n, z, h, w]` means and bounded log-scales (blocks.rs,
    `Gauss`)."""

    def __init__(self, raw, z):
        self.mu, self.log_sigma = raw[:, :z], bounded(raw[:, z : 2 * z], LOG_SCALE_BOUND)

    def sample(self, eps):
        return self.mu + self.log_sigma.exp() * eps

    def kl(self, p):
        """KL(self ‖ p) per example: with d = log σq − log σp, 0.5(e^{2d} + ((μq − μp)/σp)² − 1) − d."""
        d = self.log_sigma - p.log_sigma
        m = (self.mu - p.mu) * torch.exp(-p.log_sigma)
        return (0.5 * (torch.exp(2 * d) + m * m - 1) - d).flatten(1).sum(1)


class HierarchicalVae(nn.Module):
    """crates/vae-core/src/arch/hierarchical/{mod.rs,net.rs} with `Preset::Hvae`'s settings for
    28x28 images (crates/vae-core/src/config.rs): width 64, bottleneck 32, 8 latent channels,
    groups [2, 4] at 7x7 and 14x14, one block per resolution, ReLU, a top group of 32, and a
    mixture of 5 discretized logistics per pixel."""

    def __init__(self, width=64, bottleneck=32, z_channels=8, groups=(2, 4), blocks=1, latent=32,
                 mixtures=5, size=28, channels=1):
        super().__init__()
        self.width, self.z, self.latent, self.mixtures = width, z_channels, latent, mixtures
        self.size, self.channels = size, channels
        n = len(groups)
        hc = size >> n  # the coarsest resolution
        self.hc = hc
        blockset = lambda: nn.ModuleDict({f"b{j}": Block(width, bottleneck, width, True) for j in range(blocks)})
        # Bottom-up (mod.rs, `build`): the stem, then blocks at the input's resolution and at
        # each latent resolution, finest first; the top group's dense head.
        enc = nn.ModuleDict({"stem": nn.Conv2d(channels, width, 3, padding=1)})
        for level in range(n + 1):
            enc[f"r{size >> level}"] = blockset()
        enc["head"] = nn.Linear(width * hc * hc, 2 * latent)
        # Top-down: the top code to the state at the coarsest resolution, the groups of each
        # resolution (coarsest first), blocks at the input's resolution, the 1x1 output.
        dec = nn.ModuleDict({"top": nn.Linear(latent, width * hc * hc)})
        self.scales = []  # (resolution, number of groups), coarsest first
        for i, count in enumerate(groups):
            h = size >> (n - i)
            dec[f"r{h}"] = nn.ModuleDict({f"g{g}": Group(width, bottleneck, z_channels) for g in range(count)})
            self.scales.append((h, count))
        dec[f"r{size}"] = blockset()
        dec["out"] = nn.Conv2d(width, channels * 3 * mixtures, 1)
        self.encoder, self.decoder = enc, dec
        # The noise of one sample: the top group's values, then each group's z·h·w (channel-major),
        # coarsest first (ARCHITECTURE.md; net.rs, `offsets`).
        self.group_dims = [latent] + [z_channels * h * h for h, c in self.scales for _ in range(c)]
        self.noise_dim = sum(self.group_dims)
        residual_blocks = max((n + 1) * blocks + sum(groups) + blocks, 1)
        self.adjust_init(residual_blocks)

    @torch.no_grad()
    def adjust_init(self, residual_blocks):
        """net.rs, `adjust_init` (VDVAE), after PyTorch's default initialisation (which
        model.rs, `reset_parameters`, draws too): every bias zero, each prior's last layer
        zero, the last layer of every residual block and each z projection scaled by
        1/sqrt(residual blocks)."""
        scale = 1.0 / math.sqrt(residual_blocks)
        for name, p in self.named_parameters():
            if name.endswith(".bias") or name.endswith(".prior.c4.weight"):
                p.zero_()
            elif name.endswith(".zproj.weight") or (name.endswith(".c4.weight") and ".post." not in name):
                p.mul_(scale)

    def groups(self, si):
        h, count = self.scales[si]
        return [self.decoder[f"r{h}"][f"g{g}"] for g in range(count)]

    def bottom_up(self, x):
        """The activations at each latent resolution, coarsest first (net.rs, `bottom_up`)."""
        t = self.encoder["stem"](x.view(-1, self.channels, self.size, self.size) * 2 - 1)
        acts = []
        for level in range(len(self.scales) + 1):
            if level > 0:
                t = F.avg_pool2d(t, 2)
            for block in self.encoder[f"r{self.size >> level}"].values():
                t = block(t)
            if level > 0:
                acts.append(t)
        return acts[::-1]

    def top_posterior(self, coarsest):
        """Means and log-variances (bounded by 2L) of the top group (net.rs, `top_posterior`)."""
        p = self.encoder["head"](F.relu(coarsest.flatten(1)))
        mu, raw = p[:, : self.latent], p[:, self.latent :]
        return mu, bounded(raw, 2 * LOG_SCALE_BOUND)

    def encode(self, x):
        return self.top_posterior(self.bottom_up(x)[0])

    def top_down(self, z_top, choose):
        """net.rs, `top_down`: `choose(g, si, h, group, prior)` gives group g's values (g from 1
        in layout order). Returns the likelihood's raw parameters `[n, 3K·784]`, block-major."""
        n = z_top.shape[0]
        h = self.decoder["top"](z_top).view(n, self.width, self.hc, self.hc)
        g = 1
        for si in range(len(self.scales)):
            if si > 0:
                h = up2(h)
            for group in self.groups(si):
                raw = group.prior(h)
                prior = Gauss(raw, self.z)
                z = choose(g, si, h, group, prior)
                h = group.res(h + raw[:, 2 * self.z :] + group.zproj(z))
                g += 1
        h = up2(h)
        for block in self.decoder[f"r{self.size}"].values():
            h = block(h)
        return self.decoder["out"](F.relu(h)).flatten(1)

    def split_noise(self, eps):
        """`[n, noise_dim]` into the top group's `[n, latent]` and each group's `[n, z, h, w]`."""
        parts = torch.split(eps, self.group_dims, 1)
        shapes = [(self.z, h, h) for h, c in self.scales for _ in range(c)]
        return parts[0], [p.reshape(-1, *s) for p, s in zip(parts[1:], shapes)]

    def terms(self, x, eps):
        """−log p(x|z) `[n]` and the KL of each group `[n, groups]` for one sample with noise
        `eps` `[n, noise_dim]` (net.rs, `pass`; objective.rs, `Vae::terms`)."""
        acts = self.bottom_up(x)
        mu, logvar = self.top_posterior(acts[0])
        e_top, e_groups = self.split_noise(eps)
        z_top = mu + torch.exp(0.5 * logvar) * e_top
        kl = [0.5 * (mu * mu + logvar.exp() - logvar - 1).sum(1)]  # dist.rs, `kl_std_normal`

        def choose(g, si, h, group, prior):
            q = Gauss(group.post(torch.cat([h, acts[si]], 1)), self.z)
            kl.append(q.kl(prior))
            return q.sample(e_groups[g - 1])

        params = self.top_down(z_top, choose)
        return -dlogistic_log_prob(params, x, self.mixtures), torch.stack(kl, 1)

    def posterior_means(self, x):
        """Every group's posterior means and log-variances `[n, dim]`, in layout order, each
        lower group taken with the groups above at their posterior means (net.rs,
        `posterior_means`; what `vae-infer encode --all-groups` writes)."""
        acts = self.bottom_up(x)
        mu, logvar = self.top_posterior(acts[0])
        out = [(mu, logvar)]

        def choose(g, si, h, group, prior):
            q = Gauss(group.post(torch.cat([h, acts[si]], 1)), self.z)
            out.append((q.mu.flatten(1), 2 * q.log_sigma.flatten(1)))
            return q.mu

        self.top_down(mu, choose)
        return torch.cat([m for m, _ in out], 1), torch.cat([v for _, v in out], 1)

    def neg_elbo(self, x):
        """The one-sample −ELBO of each example, `[n]`."""
        recon, kl = self.terms(x, torch.randn(x.shape[0], self.noise_dim, device=x.device))
        return recon + kl.sum(1)

    def sample_mean(self, n, device):
        """Prior samples (each lower group drawn from its prior at temperature 1) decoded to
        the mixture's mean (net.rs, `generate`; crates/vae-run/src/sample.rs)."""
        z = torch.randn(n, self.latent, device=device)
        _, e_groups = self.split_noise(torch.randn(n, self.noise_dim, device=device))
        params = self.top_down(z, lambda g, si, h, group, prior: prior.sample(e_groups[g - 1]))
        return dlogistic_mean(params, self.mixtures)


def _mixture(params, k):
    """Logits, means and bounded log-scales `[n, K, d]` from the block-major parameters."""
    p = params.view(params.shape[0], 3, k, -1)
    mid, half = 0.5 * (DL_LOG_SCALE_MIN + DL_LOG_SCALE_MAX), 0.5 * (DL_LOG_SCALE_MAX - DL_LOG_SCALE_MIN)
    return p[:, 0], p[:, 1], mid + half * torch.tanh((p[:, 2] - mid) / half)


def dlogistic_log_prob(params, x, k):
    """log P(x) per example under the discretized logistic mixture (ops/dlogistic.rs, the
    composite twin in ops/dlogistic/host.rs): each component integrated over the bin of level
    v (centre v/255, half-width 0.5/255, the end bins open). With a, b the bin's edges in units
    of σ from the mean and δ = (a − b)/2, an interior level has
    ln P = ln(−expm1(−2δ)) − max(|c − m| − h, 0)/σ − ln(1 + e^−|a|) − ln(1 + e^−|b|)
    (no difference of nearly equal numbers), level 0 ln σ(a), level 255 ln(1 − σ(b))."""
    logits, m, s = _mixture(params, k)
    v = torch.round(x.clamp(0, 1) * TOP_LEVEL).unsqueeze(1)  # ops/discrete.rs, `level`
    h = 0.5 / TOP_LEVEL
    inv = torch.exp(-s)
    c = v / TOP_LEVEL - m
    a, b = (c + h) * inv, (c - h) * inv
    interior = (torch.log(-torch.expm1(-2 * h * inv)) - F.relu(c.abs() - h) * inv
                - F.softplus(-a.abs()) - F.softplus(-b.abs()))
    lp = torch.where(v == 0, -F.softplus(-a), torch.where(v == TOP_LEVEL, -F.softplus(b), interior))
    return torch.logsumexp(F.log_softmax(logits, 1) + lp, 1).sum(1)


@torch.no_grad()
def dlogistic_mean(params, k):
    """E(v)/255 per pixel, E(v) = Σ_{v≥1} P(V ≥ v) over the 255 bin edges (host.rs,
    `discretized_logistic_mean`)."""
    logits, m, s = _mixture(params, k)
    inv, acc = torch.exp(-s), torch.zeros_like(m)
    for v in range(1, int(TOP_LEVEL) + 1):
        acc += torch.sigmoid((m - (v - 0.5) / TOP_LEVEL) * inv)
    return (F.softmax(logits, 1) * acc).sum(1) / TOP_LEVEL


class Recipe:
    """`TrainConfig::preset(Preset::Hvae)` (crates/vae-train/src/config.rs) as the loop applies
    it (train.rs, step.rs, optim.rs): batch 64; Adam 1e-3, betas (0.9, 0.999), eps 1e-8
    (optim.rs, `AdamConfig::default`); the rate ramped over 200 steps and decayed by a cosine
    over the run; the gradient norm clipped at 50,000 and the update skipped (weights, moments
    and Adam's step count untouched) above 200,000; β ramped linearly over the first epoch,
    per step; free bits of 0.5 nats per latent group."""

    batch_size = 64
    lr = 1e-3
    lr_warmup = 200
    grad_clip = 50_000.0
    skip_threshold = 200_000.0
    kl_warmup = 1.0
    free_bits = 0.5

    def lr_at(self, step, total):
        """config.rs, `lr_at` and `LrSchedule::Cosine`: step counts every batch, skipped or not."""
        lr = self.lr * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
        return lr * (step + 1) / self.lr_warmup if step < self.lr_warmup else lr

    def beta_at(self, epochs):
        """objective.rs, `beta_at`: `epochs` is fractional, (epoch − 1) + batch / batches."""
        return min(max(epochs / self.kl_warmup, 0.0), 1.0) if self.kl_warmup > 0 else 1.0

    def loss(self, model, x, beta, eps=None):
        """The objective's mean over the batch (objective.rs, `shard_loss`; step.rs): the
        reconstruction plus β times each group's KL, where a group whose batch-mean KL is at or
        below the free bits passes no gradient (its floor is a constant). Returns it and the
        batch's summed −ELBO (β 1). `eps`: the noise `[n, noise_dim]`, drawn when None."""
        n = x.shape[0]
        if eps is None:
            eps = torch.randn(n, model.noise_dim, device=x.device)
        recon, kl = model.terms(x, eps)
        mask = (kl.detach().sum(0) / n > self.free_bits).to(kl.dtype)
        loss = (recon.sum() + beta * (kl * mask).sum()) / n
        return loss, (recon.sum() + kl.sum()).item()

    def train_epoch(self, model, opt, xtr, epoch, step, total):
        """One epoch over `xtr` in a fresh random order, the last batch short. Returns the summed
        −ELBO, the step count after it and the number of skipped updates."""
        n, bs = len(xtr), self.batch_size
        batches = -(-n // bs)
        perm = torch.randperm(n).to(xtr.device)
        total_neg_elbo, skipped = 0.0, 0
        for b in range(batches):
            x = xtr[perm[b * bs : (b + 1) * bs]]
            beta = self.beta_at(epoch - 1 + b / batches)
            for g in opt.param_groups:
                g["lr"] = self.lr_at(step, total)
            neg_elbo, _, applied = self.step(model, opt, x, beta)
            skipped += not applied
            step += 1
            total_neg_elbo += neg_elbo
        return total_neg_elbo, step, skipped

    def step(self, model, opt, x, beta, eps=None):
        """One update on batch `x` (step.rs, `train_step`; optim.rs, `step_or_skip`): the
        gradient of the mean objective, its norm clipped, the update left out when the norm is
        above the skip threshold. Returns the batch's summed −ELBO, the norm before clipping and
        whether the update was applied."""
        loss, neg_elbo = self.loss(model, x, beta, eps)
        opt.zero_grad()
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip).item()
        if not math.isfinite(norm):
            raise SystemExit(f"non-finite gradient norm {norm}")
        if norm > self.skip_threshold:
            return neg_elbo, norm, False
        opt.step()
        return neg_elbo, norm, True

    def optimizer(self, model):
        return torch.optim.Adam(model.parameters(), lr=self.lr, betas=(0.9, 0.999), eps=1e-8)
