"""pytorch/examples word_language_model's default shape: an LSTM language model whose weights are
updated by hand after backward (no torch optimizer), models held in the script's globals."""

from __future__ import annotations

import argparse

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=6)
p.add_argument("--lr", type=float, default=20.0)
args = p.parse_args()

torch.manual_seed(0)
encoder = nn.Embedding(200, 32)
rnn = nn.LSTM(32, 64)
decoder = nn.Linear(64, 200)
data = torch.randint(0, 200, (2000,))  # the whole corpus in one tensor; batches are slices
params = [*encoder.parameters(), *rnn.parameters(), *decoder.parameters()]
for i in range(args.steps):
    chunk = data[i * 21 : i * 21 + 21].view(-1, 1)
    for p_ in params:
        p_.grad = None
    out, _ = rnn(encoder(chunk[:-1]))
    loss = nn.functional.cross_entropy(decoder(out).flatten(0, 1), chunk[1:].flatten())
    loss.backward()
    nn.utils.clip_grad_norm_(params, 0.25)
    for p_ in params:
        if p_.grad is not None:
            p_.data.add_(p_.grad, alpha=-args.lr)
print(f"done: loss {loss.item():.3f}")
