#!/usr/bin/env python3
"""The standard sugarcube workloads in PyTorch, for a side-by-side comparison on your machine.

    pip install torch diffusers          # CPU is enough
    python benches/pytorch_workloads.py                       # all workloads, JSON lines
    sugarcube bench --json > sugarcube.jsonl
    python benches/pytorch_workloads.py --compare sugarcube.jsonl   # both, and the ratios

Workloads (shapes as in `sugarcube bench`, crates/core/src/bench.rs):
- unet2d_train: diffusers UNet2DModel (32, 64, 128), 2 layers per block, attention in the lowest
  down block, the first up block and the middle, 1x32x32, batch 32; one DDPM step (add_noise,
  forward, MSE on epsilon, backward, AdamW).
- unet2d_sample_forward: the same model, one forward pass without gradients, batch 16.
- unet1d_dna_train: sugarcube's 1-D UNet (64-128-256, 2 res blocks per level, GroupNorm 8, no
  attention, sinusoidal time + 4-class embedding) on 4x200 one-hot DNA, batch 64, written out
  below layer for layer so both frameworks run the same network.
- transformer_angles_train: FoldingDiff-small (BERT encoder, relative_key positions, 6 layers,
  hidden 192, 6 heads, FFN 384, length 128, 6 angles), batch 64, dropout 0, written out below.

Each workload: warm-up steps, then the median of --iters timed steps. Threads: all cores unless
--threads is given (torch.set_num_threads). --bf16 runs every step under CPU autocast to
bfloat16 (the counterpart of `sugarcube bench --bf16`).
"""
import argparse
import json
import math
import os
import platform
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

WORKLOADS = ["unet2d_train", "unet1d_dna_train", "transformer_angles_train", "unet2d_sample_forward"]


# ---- sugarcube's UNet (1-D), layer for layer -------------------------------------------------

def timestep_embedding(t, dim, max_period=10000.0):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock1d(nn.Module):
    def __init__(self, cin, cout, emb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.time_proj = nn.Linear(emb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(emb)[:, :, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class UNet1d(nn.Module):
    def __init__(self, cin=4, ch=64, mults=(1, 2, 4), layers=2, groups=8, classes=4):
        super().__init__()
        emb = 4 * ch
        self.ch = ch
        self.time = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.cls = nn.Embedding(classes + 1, emb)
        self.conv_in = nn.Conv1d(cin, ch, 3, padding=1)
        skips, c = [ch], ch
        self.down = nn.ModuleList()
        for i, m in enumerate(mults):
            blocks = nn.ModuleList()
            for _ in range(layers):
                blocks.append(ResBlock1d(c, ch * m, emb, groups))
                c = ch * m
                skips.append(c)
            down = None
            if i + 1 < len(mults):
                down = nn.Conv1d(c, c, 3, stride=2, padding=1)
                skips.append(c)
            self.down.append(nn.ModuleList([blocks, down]) if down is not None else nn.ModuleList([blocks]))
        self.mid = nn.ModuleList([ResBlock1d(c, c, emb, groups), ResBlock1d(c, c, emb, groups)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(mults))):
            blocks = nn.ModuleList()
            for _ in range(layers + 1):
                blocks.append(ResBlock1d(c + skips.pop(), ch * mults[i], emb, groups))
                c = ch * mults[i]
            up = nn.Conv1d(c, c, 3, padding=1) if i > 0 else None
            self.up.append(nn.ModuleList([blocks, up]) if up is not None else nn.ModuleList([blocks]))
        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv1d(ch, cin, 3, padding=1)

    def forward(self, x, t, y):
        emb = F.silu(self.time(timestep_embedding(t, self.ch)) + self.cls(y))
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block in level[0]:
                h = block(h, emb)
                skips.append(h)
            if len(level) > 1:
                h = level[1](h)
                skips.append(h)
        h = self.mid[1](self.mid[0](h, emb), emb)
        for level in self.up:
            for block in level[0]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if len(level) > 1:
                h = level[1](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


# ---- FoldingDiff-small (BERT encoder with relative_key positions) -----------------------------

class RelativeSelfAttention(nn.Module):
    def __init__(self, hidden, heads, max_len):
        super().__init__()
        self.heads, self.d, self.max_len = heads, hidden // heads, max_len
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.distance = nn.Embedding(2 * max_len - 1, self.d)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x):
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, self.heads, self.d).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2)
        pos = torch.arange(n)
        dist = self.distance(pos[:, None] - pos[None, :] + self.max_len - 1)  # [n, n, d]
        scores = (scores + torch.einsum("bhld,lrd->bhlr", q, dist)) / math.sqrt(self.d)
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.norm(x + self.out(o))


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, ffn, max_len):
        super().__init__()
        self.attn = RelativeSelfAttention(hidden, heads, max_len)
        self.inter = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x):
        x = self.attn(x)
        return self.norm(x + self.output(F.gelu(self.inter(x))))


class FoldingDiff(nn.Module):
    def __init__(self, features=6, hidden=192, layers=6, heads=6, ffn=384, max_len=128):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Linear(features, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        # FoldingDiff's GaussianFourierProjection: fixed frequencies, no parameters
        self.register_buffer("fourier", torch.randn(hidden // 2) * 2 * math.pi)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ffn, max_len) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12), nn.Linear(hidden, features))

    def forward(self, x, t):
        proj = t.float()[:, None] * self.fourier[None] * 2 * math.pi
        h = self.emb_norm(self.inp(x)) + torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)[:, None]
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


# ---- the workloads ----------------------------------------------------------------------------

def make(name):
    """(model, step function, batch size) for a workload."""
    torch.manual_seed(0)
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

    def noised(x0):
        t = torch.randint(0, 1000, (x0.shape[0],))
        noise = torch.randn_like(x0)
        ab = alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, noise

    def trainer(model, forward, x0, batch):
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)

        def step():
            x_t, t, noise = noised(x0)
            loss = F.mse_loss(forward(x_t, t), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return model, step, batch

    if name in ("unet2d_train", "unet2d_sample_forward"):
        from diffusers import UNet2DModel

        model = UNet2DModel(
            sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128), layers_per_block=2,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        )
        if name == "unet2d_sample_forward":
            model.eval()
            x, t = torch.randn(16, 1, 32, 32), torch.full((16,), 500)

            def step():
                with torch.no_grad():
                    model(x, t).sample

            return model, step, 16
        return trainer(model, lambda x, t: model(x, t).sample, torch.randn(32, 1, 32, 32).clamp(-1, 1), 32)
    if name == "unet1d_dna_train":
        model = UNet1d()
        x0 = F.one_hot(torch.randint(0, 4, (64, 200)), 4).permute(0, 2, 1).float() * 2 - 1
        y = torch.randint(0, 4, (64,))
        return trainer(model, lambda x, t: model(x, t, y), x0, 64)
    if name == "transformer_angles_train":
        model = FoldingDiff()
        x0 = (torch.rand(64, 128, 6) * 2 - 1) * math.pi
        return trainer(model, lambda x, t: model(x, t), x0, 64)
    raise SystemExit(f"unknown workload {name}; expected one of {', '.join(WORKLOADS)}")


def run(name, warmup, iters, bf16=False):
    model, step, batch = make(name)
    if bf16:
        # CPU autocast: convolutions and matrix products in bfloat16, float32 weights (the
        # counterpart of `sugarcube bench --bf16`).
        plain = step

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                plain()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    med = statistics.median(times)
    return {
        "workload": name,
        "items_per_s": batch / med,
        "batch_size": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "ms_per_step": 1e3 * med,
        "iters": iters,
        "precision": "bf16" if bf16 else "f32",
        "framework": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} threads",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", action="append", choices=WORKLOADS, help="run only this one (repeatable)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--bf16", action="store_true", help="run under torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--compare", metavar="JSONL", help="`sugarcube bench --json` output: print both and the ratios")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ours = {}
    if args.compare:
        with open(args.compare) as f:
            ours = {r["workload"]: r for r in map(json.loads, filter(str.strip, f))}
    names = args.workload or [w for w in WORKLOADS if not ours or w in ours]
    if ours:
        print(f"{'workload':<26} {'sugarcube/s':>12} {'pytorch/s':>10} {'ratio':>6}  parameters (sugarcube / pytorch)")
    for name in names:
        r = run(name, args.warmup, args.iters, args.bf16)
        if not ours:
            print(json.dumps(r), flush=True)
            continue
        s = ours.get(name)
        if s is None:
            print(f"{name:<26} {'-':>12} {r['items_per_s']:>10.1f}")
            continue
        ratio = s["items_per_s"] / r["items_per_s"]
        print(f"{name:<26} {s['items_per_s']:>12.1f} {r['items_per_s']:>10.1f} {ratio:>5.2f}x  "
              f"{s['parameters'] / 1e6:.2f}M / {r['parameters'] / 1e6:.2f}M", flush=True)


if __name__ == "__main__":
    main()
