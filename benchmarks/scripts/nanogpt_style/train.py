"""nanoGPT-style training: settings are module globals, overridden by `--key=value` through
configurator.py (exec'd over the globals), gradient accumulation over micro-batches, autocast
from `dtype`. Tiny sizes and random tokens so a step takes a fraction of a second on a CPU.

    cd benchmarks/scripts/nanogpt_style && python train.py --batch_size=8 --dtype=bfloat16
"""

import os
import sys
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinygpt import GPT, batch  # noqa: E402

# default config values
batch_size = 8
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
vocab_size = 512
gradient_accumulation_steps = 1
learning_rate = 6e-4
max_iters = 40
dtype = 'float32'  # 'float32', 'bfloat16' or 'float16'
gradient_checkpointing = False
exec(open('configurator.py').read())  # as nanoGPT does: run from this directory

torch.manual_seed(1337)
gen = torch.Generator().manual_seed(1337)
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.bfloat16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type='cpu', dtype=ptdtype)

model = GPT(vocab_size, block_size, n_layer, n_head, n_embd)
model.gradient_checkpointing = gradient_checkpointing
optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95))

for it in range(max_iters):
    for _micro_step in range(gradient_accumulation_steps):
        X, Y = batch(vocab_size, batch_size, block_size, gen)
        with ctx:
            loss = model(X, Y) / gradient_accumulation_steps
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if it % 10 == 0:
        print(f"iter {it}: loss {loss.item() * gradient_accumulation_steps:.4f}", flush=True)
