"""A Hugging Face `Trainer`-shaped fine-tune without transformers: `TrainingArguments`-like
dataclasses parsed by an `HfArgumentParser`-like parser (one `--field` per dataclass field, bools as
`--bf16` / `--bf16 false`), and a Trainer-like loop (micro-batches of `per_device_train_batch_size`,
`gradient_accumulation_steps`, bf16 autocast, `gradient_checkpointing_enable()`). Tiny GPT, random
tokens, CPU-fast.

    python benchmarks/scripts/hf_trainer_style.py --per_device_train_batch_size 8 --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tinygpt import GPT, batch  # noqa: E402


def string_to_bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"Truthy value expected: got {v}")


class HfArgumentParser(argparse.ArgumentParser):
    """transformers.HfArgumentParser in miniature: dataclass fields become flags."""

    def __init__(self, dataclass_types: tuple[type, ...]) -> None:
        super().__init__()
        self.dataclass_types = dataclass_types
        for dtype in dataclass_types:
            for f in dataclasses.fields(dtype):
                help_text = f.metadata.get("help", "")
                if f.type in (bool, "bool"):
                    self.add_argument(f"--{f.name}", type=string_to_bool, nargs="?", const=True, default=f.default, help=help_text)
                else:
                    kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
                    self.add_argument(f"--{f.name}", type=kind, default=f.default, help=help_text)

    def parse_args_into_dataclasses(self) -> tuple[Any, ...]:
        ns = vars(self.parse_args())
        return tuple(d(**{f.name: ns[f.name] for f in dataclasses.fields(d)}) for d in self.dataclass_types)


@dataclass
class ModelArguments:
    n_layer: int = field(default=4, metadata={"help": "transformer blocks"})
    n_embd: int = field(default=128, metadata={"help": "width"})
    block_size: int = field(default=64, metadata={"help": "sequence length"})


@dataclass
class TrainingArguments:
    per_device_train_batch_size: int = field(default=8, metadata={"help": "batch size per device for training"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "update steps to accumulate before a backward/update pass"})
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate"})
    max_steps: int = field(default=40, metadata={"help": "optimizer steps"})
    bf16: bool = field(default=False, metadata={"help": "use bf16 mixed precision (autocast)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward to save memory"})


class Trainer:
    def __init__(self, model: GPT, args: TrainingArguments, vocab_size: int, block_size: int) -> None:
        self.model, self.args = model, args
        self.vocab_size, self.block_size = vocab_size, block_size
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)

    def train(self) -> None:
        a = self.args
        if a.gradient_checkpointing:
            self.model.gradient_checkpointing = True  # model.gradient_checkpointing_enable()
        gen = torch.Generator().manual_seed(0)
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()
        for step in range(a.max_steps):
            for _ in range(a.gradient_accumulation_steps):
                x, y = batch(self.vocab_size, a.per_device_train_batch_size, self.block_size, gen)
                with amp:
                    loss = self.model(x, y) / a.gradient_accumulation_steps
                loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if step % 10 == 0:
                print(f"step {step}: loss {loss.item():.4f}", flush=True)


def main() -> None:
    model_args, training_args = HfArgumentParser((ModelArguments, TrainingArguments)).parse_args_into_dataclasses()
    torch.manual_seed(0)
    vocab = 512
    model = GPT(vocab, model_args.block_size, model_args.n_layer, 4, model_args.n_embd)
    Trainer(model, training_args, vocab, model_args.block_size).train()


if __name__ == "__main__":
    main()
