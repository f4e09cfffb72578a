"""An autoregressive prior over VQ code indices: a GPT-2 (transformers, built from a ``GPT2Config``).

A sequence is ``[start, c_1, ..., c_T]`` where ``start`` is the class token ``K + y`` (conditional)
or ``K`` (unconditional) and ``c_i`` are the K codebook indices in raster order. Training is
next-token cross-entropy; sampling draws one code at a time with temperature and top-k, restricted
to the K code tokens, so every sample is a valid index grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel


class CodePrior(nn.Module):
    def __init__(self, codebook_size: int, length: int, num_classes: int = 0, width: int = 64, layers: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        self.codebook_size, self.length, self.num_classes = codebook_size, length, num_classes
        config = GPT2Config(
            vocab_size=codebook_size + max(1, num_classes), n_positions=length + 1, n_embd=width, n_layer=layers,
            n_head=heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=codebook_size,
            eos_token_id=codebook_size, tie_word_embeddings=False,
        )
        self.gpt = GPT2LMHeadModel(config)

    def start_tokens(self, n: int, labels: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        if labels is None:
            return torch.full((n, 1), self.codebook_size, dtype=torch.long, device=device)
        return (labels.long() + self.codebook_size).view(n, 1).to(device)

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """codes (B, T) -> mean next-token cross-entropy over the T code positions."""
        tokens = torch.cat([self.start_tokens(len(codes), labels, codes.device), codes], dim=1)
        logits = self.gpt(input_ids=tokens[:, :-1]).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """-> (n, T) code indices in [0, K), drawn with ``generator`` (CPU) for reproducibility."""
        device = next(self.parameters()).device
        tokens = self.start_tokens(n, labels, device)
        for _ in range(self.length):  # T <= a few hundred: recomputing beats cache bookkeeping here
            out = self.gpt(input_ids=tokens, use_cache=False)
            logits = out.logits[:, -1, : self.codebook_size].float() / max(temperature, 1e-4)
            if top_k is not None and top_k < self.codebook_size:
                kth = logits.topk(top_k, dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(dim=1).cpu(), 1, generator=generator).to(device)
            tokens = torch.cat([tokens, nxt], dim=1)
        return tokens[:, 1:]
