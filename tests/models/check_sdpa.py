"""Scaled-dot-product attention with a boolean mask (issue 22): a query row that attends to
nothing is 0 in PyTorch and something else once exported, which the check must catch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedAttention(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.unsqueeze(1) for t in (q, k, v))  # one head: (batch, heads, seq, dim)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1)).squeeze(1)


def masked_attention() -> nn.Module:
    return MaskedAttention()
