"""``HfArgumentParser`` flags read from source: the fields of the dataclasses handed to it.

``HfArgumentParser((ModelArguments, TrainingArguments))`` gives ``--field_name`` for every field
of each dataclass (``--field-name`` works too); a bool field is a switch (``--bf16``) and one
that defaults to True also has ``--no_field``. ``TrainingArguments`` itself lives in
transformers, so its fields that matter for memory are listed here rather than imported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from memtop.analyzers.flags.literals import NotLiteral, calls_of, keyword, kind_of, last_name, literal, literal_or
from memtop.runs.flag_entry import FlagEntry, text_value

# transformers.TrainingArguments fields the advisor can use: (name, kind, default, help).
TRAINING_ARGUMENTS: tuple[tuple[str, str, Any, str], ...] = (
    ("output_dir", "str", None, "output directory"),
    ("per_device_train_batch_size", "int", 8, "batch size per device for training"),
    ("per_device_eval_batch_size", "int", 8, "batch size per device for evaluation"),
    ("gradient_accumulation_steps", "int", 1, "update steps to accumulate gradients for"),
    ("learning_rate", "float", 5e-05, "initial learning rate"),
    ("num_train_epochs", "float", 3.0, "training epochs"),
    ("max_steps", "int", -1, "total optimizer steps"),
    ("bf16", "bool", False, "bf16 mixed precision training"),
    ("fp16", "bool", False, "fp16 mixed precision training"),
    ("gradient_checkpointing", "bool", False, "gradient checkpointing to save memory"),
    ("optim", "str", "adamw_torch", "the optimizer"),
    ("torch_compile", "bool", False, "compile the model with torch.compile"),
    ("seed", "int", 42, "random seed"),
)
TRAINING_ARGUMENT_CLASSES = {"TrainingArguments", "Seq2SeqTrainingArguments"}
_TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool", "str": "str"}


@dataclass
class HfScan:
    entries: list[FlagEntry] = field(default_factory=list)
    builds_parser: bool = False
    unreadable: list[str] = field(default_factory=list)


def read_hf(tree: ast.Module, classes: dict[str, ast.ClassDef]) -> HfScan:
    """``classes``: the dataclasses visible to the script (its own and its local modules')."""
    scan = HfScan()
    seen: set[str] = set()
    for call in calls_of(tree):
        if last_name(call.func) != "HfArgumentParser":
            continue
        scan.builds_parser = True
        arg = call.args[0] if call.args else keyword(call, "dataclass_types")
        names = _class_names(arg)
        if names is None:
            scan.unreadable.append(f"HfArgumentParser at line {call.lineno}: dataclasses not named in place")
            continue
        for name in names:
            for entry in _fields_of(name, classes, scan, depth=0):
                if entry.flag not in seen:
                    seen.add(entry.flag)
                    scan.entries.append(entry)
    return scan


def _class_names(node: ast.expr | None) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)) and all(isinstance(e, (ast.Name, ast.Attribute)) for e in node.elts):
        return [last_name(e) for e in node.elts]
    if isinstance(node, ast.Attribute):
        return [last_name(node)]
    return None


def _fields_of(name: str, classes: dict[str, ast.ClassDef], scan: HfScan, depth: int) -> list[FlagEntry]:
    if depth > 8:
        return []
    cls = classes.get(name)
    if cls is None:
        if name in TRAINING_ARGUMENT_CLASSES:
            return [_entry(n, kind, default, help_text) for n, kind, default, help_text in TRAINING_ARGUMENTS]
        scan.unreadable.append(f"dataclass {name} is not in the script's source")
        return []
    out: list[FlagEntry] = []
    for base in cls.bases:
        base_name = last_name(base)
        if base_name in classes or base_name in TRAINING_ARGUMENT_CLASSES:
            out += _fields_of(base_name, classes, scan, depth + 1)
    for stmt in cls.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        try:
            default, help_text, choices = _field_default(stmt.value)
        except NotLiteral:
            default, help_text, choices = None, "", None
        kind = _kind(stmt.annotation, default)
        if choices is None:
            choices = _literal_choices(stmt.annotation)
        entry = _entry(stmt.target.id, "choice" if choices else kind, default, help_text, choices)
        out = [e for e in out if e.flag != entry.flag] + [entry]
    return out


def _field_default(node: ast.expr | None) -> tuple[Any, str, tuple[str, ...] | None]:
    """``= 8`` or ``= field(default=8, metadata={"help": ..., "choices": [...]})``."""
    if node is None:
        return None, "", None
    if isinstance(node, ast.Call) and last_name(node.func) == "field":
        default = literal_or(keyword(node, "default"))
        help_text = ""
        choices: tuple[str, ...] | None = None
        meta = keyword(node, "metadata")
        if isinstance(meta, ast.Dict):
            for k, v in zip(meta.keys, meta.values, strict=True):
                key = literal_or(k)
                if key == "help" and isinstance(literal_or(v), str):
                    help_text = str(literal_or(v))
                if key == "choices" and isinstance(literal_or(v), list):
                    choices = tuple(str(c) for c in literal_or(v))
        return default, help_text, choices
    return literal(node), "", None


def _kind(annotation: ast.expr, default: Any) -> str:
    name = last_name(annotation)
    if isinstance(annotation, ast.Subscript) and last_name(annotation.value) == "Optional":
        name = last_name(annotation.slice)
    if isinstance(annotation, ast.BinOp):  # int | None
        name = last_name(annotation.left)
    if name in _TYPE_NAMES:
        return _TYPE_NAMES[name]
    return kind_of(default) if default is not None else "str"


def _literal_choices(annotation: ast.expr) -> tuple[str, ...] | None:
    if isinstance(annotation, ast.Subscript) and last_name(annotation.value) == "Literal":
        raw = literal_or(annotation.slice)
        values = raw if isinstance(raw, list) else [raw]
        return tuple(str(v) for v in values if v is not None) or None
    return None


def _entry(name: str, kind: str, default: Any, help_text: str, choices: tuple[str, ...] | None = None) -> FlagEntry:
    flag = f"--{name}"
    aliases: list[str] = []
    if "_" in name:
        aliases.append(f"--{name.replace('_', '-')}")
    if kind == "bool" and default is True:
        aliases.append(f"--no_{name}")
    if kind == "bool" and default is None:
        default = False
    value = text_value(default)
    return FlagEntry(flag=flag, kind=kind, value=value, dest=name, default=value, choices=choices, source="hf", aliases=tuple(aliases), help=help_text)
