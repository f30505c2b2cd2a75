"""Reference for `whaleid bench train`: one head-mode epoch in PyTorch, on the same cached
tokens, with the same head, loss, optimiser and feature augmentation as whaleid's trainer.

Head: CLS token beside GeM (trainable p, clamped at 1e-6) over the patch tokens, BatchNorm1d,
Linear to DIM, L2-normalised. Loss: ArcFace (s 30, m 0.5, easy margin). AdamW (lr 2e-3,
weight decay 1e-4), gradients clipped at global norm 5, batch 32 in shuffled order, a random
quarter of the patch tokens dropped per step and Gaussian noise (0.02) added.

The tokens are random normal values of the cache's shape and dtype (f16; what they hold does
not change the time), labels spread evenly over the classes as in whaleid's run.

usage: train_reference.py N TOKENS_PER_CROP WIDTH CLASSES DIM THREADS -> JSON on stdout
"""

import json
import math
import sys
import time

import torch
import torch.nn.functional as F


class Head(torch.nn.Module):
    def __init__(self, width, dim):
        super().__init__()
        self.p = torch.nn.Parameter(torch.full((1,), 3.0))
        self.bn = torch.nn.BatchNorm1d(2 * width)
        self.linear = torch.nn.Linear(2 * width, dim)

    def forward(self, tokens):
        cls = tokens[:, 0]
        patches = tokens[:, 1:].clamp(min=1e-6)
        gem = patches.pow(self.p).mean(1).pow(1.0 / self.p)
        return F.normalize(self.linear(self.bn(torch.cat([cls, gem], 1))), dim=1)


class ArcFace(torch.nn.Module):
    def __init__(self, dim, classes, scale=30.0, margin=0.5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale, self.cos_m, self.sin_m = scale, math.cos(margin), math.sin(margin)

    def forward(self, embeddings, labels):
        cos = embeddings @ F.normalize(self.weight, dim=1).t()
        sin = (1.0 - cos * cos).clamp(min=0.0).sqrt()
        phi = cos * self.cos_m - sin * self.sin_m
        phi = torch.where(cos > 0, phi, cos)  # easy margin
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        return F.cross_entropy(torch.where(onehot, phi, cos) * self.scale, labels)


def main():
    n, per_crop, width, classes, dim, threads = map(int, sys.argv[1:7])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tokens = torch.randn(n, per_crop, width).half()
    labels = torch.arange(n) % classes
    head, loss_fn = Head(width, dim), ArcFace(dim, classes)
    params = list(head.parameters()) + list(loss_fn.parameters())
    optimiser = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    keep = round((per_crop - 1) * 0.75)
    batch = 32
    order = torch.randperm(n)
    start = time.perf_counter()
    for i in range(0, n - n % batch, batch):
        rows = order[i:i + batch]
        x = tokens[rows].float()
        patches = torch.randperm(per_crop - 1)[:keep] + 1
        x = x[:, torch.cat([torch.zeros(1, dtype=torch.long), patches])]
        x = x + torch.randn_like(x) * 0.02
        loss = loss_fn(head(x), labels[rows])
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimiser.step()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "crops": n - n % batch, "version": torch.__version__, "threads": threads}))


if __name__ == "__main__":
    main()
