"""The demo ViT: the seed article's Vision Transformer study in miniature, trained here on the digits.

A small Vision Transformer (pre-norm blocks of multi-head attention and an MLP, a class token, learned
position embeddings) cut into 2x2 patches of the 8x8 digits: 16 patches and the class token, 6 blocks
of width 32 with 4 heads (52k parameters). It reaches about 97% test accuracy in 30 epochs, a minute or
two on one CPU thread, through :func:`secateurs.recovery.fit` (AdamW, the demo's one-cycle learning
rate), and is cached under :func:`secateurs.storage.cache_dir`, keyed by its configuration and
:data:`_CACHE_VERSION`, as the demo CNN is. Its attention is written as timm writes it (one ``qkv``
projection, ``num_heads``), so that :mod:`secateurs.structural` finds its heads and channel groups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from secateurs.demo.datasets import Dataset, load_dataset
from secateurs.demo.model import TrainedModel, cached_training, one_cycle
from secateurs.demo.seeding import global_generators_kept
from secateurs.errors import ModelSpecError
from secateurs.recovery import fit
from secateurs.runtime import torch_threads
from secateurs.storage import cache_dir

#: Bump when the architecture or training changes, so cached models are retrained.
_CACHE_VERSION = 1
VIT_DATASET = "digits"


@dataclass(frozen=True)
class ViTConfig:
    """The demo ViT's shape and training; all of it is part of the cache key."""

    patch: int = 2
    dim: int = 32
    depth: int = 6
    heads: int = 4
    mlp_ratio: int = 2
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 1


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` projection, as timm's ViT."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class Block(nn.Module):
    """A pre-norm transformer block: attention, then a two-layer GELU MLP, each with a residual connection."""

    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DemoViT(nn.Module):
    """Patch embedding (a strided convolution), class token, position embeddings, blocks, norm and head."""

    def __init__(self, sample_shape: Sequence[int], num_classes: int, config: ViTConfig = ViTConfig()) -> None:
        super().__init__()
        channels, *spatial = sample_shape
        if len(spatial) != 2 or any(size % config.patch for size in spatial):
            raise ModelSpecError(
                f"the demo ViT takes 2-D images whose sides divide into {config.patch}x{config.patch} patches, "
                f"got a sample shape {tuple(sample_shape)}"
            )
        tokens = (spatial[0] // config.patch) * (spatial[1] // config.patch) + 1
        self.patch_embed = nn.Conv2d(channels, config.dim, config.patch, stride=config.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, config.dim) * 0.02)
        hidden = config.mlp_ratio * config.dim
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, hidden) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(patches), -1, -1), patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def build_vit(data: Dataset, config: ViTConfig = ViTConfig()) -> DemoViT:
    """The untrained demo ViT for ``data``, initialised from ``config.seed``."""
    with global_generators_kept():
        torch.manual_seed(config.seed)
        return DemoViT(data.sample_shape, data.num_classes, config)


def train_vit(model: nn.Module, data: Dataset, config: ViTConfig, progress: bool = True) -> None:
    """AdamW with the demo's one-cycle learning rate; deterministic for a seed, global generators untouched."""
    bar = tqdm(total=1, desc=f"training demo ViT on {data.name} ({config.epochs} epochs)", unit="model",
               disable=None if progress else True, leave=False)
    with bar, global_generators_kept(), torch_threads(config.threads):
        fit(model, (data.x_train, data.y_train), epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
            lr_schedule=one_cycle, batch_size=config.batch_size, seed=config.seed, optimizer="adamw")
        bar.update()
    model.eval()


def vit_cache_path(config: ViTConfig) -> Path:
    key = json.dumps({"dataset": VIT_DATASET, "vit": asdict(config), "version": _CACHE_VERSION}, sort_keys=True)
    return cache_dir() / "demo" / f"{VIT_DATASET}-vit-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def trained_vit(config: ViTConfig = ViTConfig(), *, retrain: bool = False, progress: bool = True) -> TrainedModel:
    """The trained demo ViT: from the cache when there, else trained now and cached (atomically)."""
    data = load_dataset(VIT_DATASET)
    return cached_training(vit_cache_path(config), data, lambda: build_vit(data, config),
                           lambda model: train_vit(model, data, config, progress), config, retrain)
