"""Fine-tuning / training of the symmetry predictor: one trainer, three modes.

    python -m llm_torch.finetune --config configs/llm_small_glm4_bg.py            # from scratch
    python -m llm_torch.finetune --config configs/llm_glm4_9b_lora.py             # LoRA (GPU)
    accelerate launch -m llm_torch.finetune --config configs/llm_glm4_9b_lora.py  # multi-GPU / NPU
    python -m llm_torch.finetune --config CONFIG --set max_steps=100 --set device=cpu

A config is a Python file with ``get_config() -> FinetuneConfig``; ``--set key=value``
overrides a field (value parsed as a Python literal when possible).

* ``mode="scratch"``: a small ``Glm4ForCausalLM`` (:func:`llm_torch.model.small_glm4_config`)
  with a byte-level BPE tokenizer trained on the training examples (or ``tokenizer_path``).
* ``mode="full"``: every weight of a pretrained causal LM (``base_model``) is trained, with
  its own tokenizer: for small models, e.g. the formation-energy predictor warm-started from
  the embedded band-gap one (``configs/llm_small_glm4_fm.py``).
* ``mode="lora"``: peft LoRA adapters on a pretrained causal LM (``base_model``: hub id or
  folder), optional bf16 and gradient checkpointing.

The loss is the causal-LM cross-entropy on the answer tokens only (prompt and padding are
masked with -100). Data: the MP-20 policy split ``train`` (``train_split``) or a JSONL/CSV;
model selection data: ``holdout``. Runs under ``accelerate`` (single process, DDP via
``accelerate launch`` / ``torchrun``, CUDA or Ascend NPU): batches are sharded by process.

Output (``output_dir``): ``checkpoints/step-N/`` (trainable weights as safetensors + optimizer,
scheduler and trainer state; the newest is resumed automatically, the last
``keep_checkpoints`` are kept), ``train_log.jsonl``, and the exported model in ``export_dir``
(default ``output_dir/final``): ``model.safetensors`` + ``config.json`` (scratch, full) or
``adapter_model.safetensors`` + ``adapter_config.json`` (LoRA), the tokenizer, and
``model_card.json`` (data, command, time, hardware, metrics).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, get_scheduler

from unimdm_jax import provenance
from unimdm_jax.data.io import mp20_split
from unimdm_jax.errors import one_line
from unimdm_jax.schema import KNOWN_PROPERTY_UNITS, register_property

from .dataset import as_alpaca, build_examples, read_jsonl
from .decoding import encode
from .evaluate import evaluate_model_on_split
from .model import resolve_device, resolve_dtype, small_glm4
from .prompts import canonical_property, prompt_text
from .tokenizer import corpus_texts, load_tokenizer, train_tokenizer

__all__ = ["FinetuneConfig", "load_config", "main", "train"]


@dataclass
class FinetuneConfig:
    """Everything a training run needs. See the module docstring and ``configs/llm_*.py``."""

    name: str = "llm"
    mode: str = "scratch"  # "scratch" | "full" | "lora"
    output_dir: str = "workdirs/llm"
    export_dir: str | None = None  # default: output_dir/final
    # data
    property_name: str = "band_gap"
    # a user's own property (not band gap or formation energy): its unit, e.g. "g/cm3"; the
    # property is read from the CSV column of that name (train_csv / eval_csv)
    property_unit: str | None = None
    composition_mode: str = "mixed"  # mixed | both | cell | reduced (llm_torch.dataset)
    train_split: str | None = "train"
    eval_split: str | None = "holdout"
    train_jsonl: str | None = None
    eval_jsonl: str | None = None
    train_csv: str | None = None
    eval_csv: str | None = None
    limit_train: int | None = None
    limit_eval: int | None = 256
    data_root: str | None = None
    # model
    base_model: str | None = None  # full / LoRA: hub id or folder
    trust_remote_code: bool = False
    tokenizer_path: str | None = None  # scratch: None = train one on the training examples
    vocab_size: int = 3072
    model: dict = field(default_factory=dict)  # small_glm4_config keyword arguments
    prompt_style: str = "auto"  # plain | chat | auto (chat when the tokenizer has a template)
    # optimisation
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    max_length: int = 1024
    grad_clip: float = 1.0
    dtype: str = "auto"  # auto | bf16 | fp32 (auto: bf16 on accelerators for LoRA, fp32 otherwise)
    gradient_checkpointing: bool = False
    device: str = "auto"  # auto | cuda | npu | cpu
    seed: int = 0
    num_threads: int | None = None
    # LoRA
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # bookkeeping
    log_every: int = 20
    eval_every: int = 500
    save_every: int = 500
    keep_checkpoints: int = 2
    eval_symmetry_limit: int = 0  # holdout crystals for space-group metrics after training (0: skip)


def load_config(path: str | Path, overrides: list[str] | None = None) -> FinetuneConfig:
    """``get_config()`` of a config file, with ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_llm_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    config = module.get_config()
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"bad override {item!r} (use FIELD=VALUE with a FinetuneConfig field)")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        setattr(config, key, value)
    return config


# ----------------------------------------------------------------------------- data


def _examples(config: FinetuneConfig, which: str) -> tuple[list[dict], str]:
    jsonl = getattr(config, f"{which}_jsonl")
    csv = getattr(config, f"{which}_csv")
    split = getattr(config, f"{which}_split")
    limit = config.limit_train if which == "train" else config.limit_eval
    if jsonl:
        rows = [as_alpaca(r) for r in read_jsonl(jsonl)]
        return (rows[:limit] if limit else rows), f"{jsonl}"
    if csv:
        rows = build_examples(
            csv=csv, property_name=config.property_name, composition_mode=config.composition_mode, limit=limit
        )
        return rows, f"{csv}" + (f" (first {limit} rows)" if limit else "")
    if split:
        rows = build_examples(
            split=split,
            property_name=config.property_name,
            composition_mode=config.composition_mode,
            limit=limit,
            root=config.data_root,
        )
        try:
            description = mp20_split(split, config.data_root).describe()
        except Exception:  # noqa: BLE001 - the description is informative only
            description = f"MP-20 policy split {split}"
        return rows, description + (f" (first {limit})" if limit else "")
    return [], ""


def _tokenize(examples, tokenizer, style: str, max_length: int):
    out, skipped = [], 0
    for ex in examples:
        prompt = encode(tokenizer, prompt_text(ex, tokenizer, style=style))
        answer = encode(tokenizer, ex["output"]) + [tokenizer.eos_token_id]
        if len(prompt) + len(answer) > max_length:
            skipped += 1
            continue
        out.append((prompt + answer, [-100] * len(prompt) + answer))
    return out, skipped


def _collate(items, pad_id: int):
    length = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), -100, dtype=torch.long)
    attention = torch.zeros((len(items), length), dtype=torch.long)
    for i, (ids, lab) in enumerate(items):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


# ----------------------------------------------------------------------------- checkpoints


def _checkpoints(output_dir: Path) -> list[Path]:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def _trainable_state(model) -> dict:
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(output_dir: Path, model, optimizer, scheduler, state: dict, keep: int) -> Path:
    path = output_dir / "checkpoints" / f"step-{state['step']:08d}"
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt"
    )
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    for old in _checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint {path} does not fit the model (e.g. {missing[0]})")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    return json.loads((path / "trainer_state.json").read_text())


# ----------------------------------------------------------------------------- model


def _build(config: FinetuneConfig, train_examples: list[dict], output_dir: Path, device):
    """(model, tokenizer, prompt style, description)."""

    if config.mode == "scratch":
        tok_dir = output_dir / "tokenizer"
        if config.tokenizer_path:
            tokenizer = load_tokenizer(config.tokenizer_path)
        elif (tok_dir / "tokenizer.json").exists():
            tokenizer = load_tokenizer(tok_dir)
        else:
            tokenizer = train_tokenizer(corpus_texts(train_examples), config.vocab_size, out_dir=tok_dir)
        kwargs = dict(config.model)
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        model = small_glm4(len(tokenizer), seed=config.seed, **kwargs)
        dtype = resolve_dtype("fp32" if config.dtype == "auto" else config.dtype, device)
        model = model.to(dtype)
        style = "plain" if config.prompt_style == "auto" else config.prompt_style
        return model, tokenizer, style, "Glm4ForCausalLM from scratch"
    if config.mode not in ("lora", "full"):
        raise ValueError(f"mode must be scratch, full or lora, got {config.mode!r}")
    if not config.base_model:
        raise ValueError(f"{config.mode} mode needs base_model (hub id or folder)")

    tokenizer = load_tokenizer(config.base_model, trust_remote_code=config.trust_remote_code)
    if config.mode == "full":  # every weight trainable: small models, e.g. the embedded one
        dtype = resolve_dtype("fp32" if config.dtype == "auto" else config.dtype, device)
        model = AutoModelForCausalLM.from_pretrained(
            config.base_model, dtype=dtype, trust_remote_code=config.trust_remote_code
        )
        style = config.prompt_style
        if style == "auto":  # the base model's own prompt style when it is one of ours
            card_path = Path(config.base_model) / "model_card.json"
            card = json.loads(card_path.read_text()) if card_path.is_file() else {}
            style = card.get("prompt_style") or (
                "chat" if getattr(tokenizer, "chat_template", None) else "plain"
            )
        return model, tokenizer, style, f"full fine-tuning of {config.base_model}"
    from peft import LoraConfig, get_peft_model  # peft on use: only LoRA runs need it

    dtype = resolve_dtype(config.dtype, device)
    model = AutoModelForCausalLM.from_pretrained(
        config.base_model, dtype=dtype, trust_remote_code=config.trust_remote_code
    )
    if config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.config.use_cache = False
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    style = config.prompt_style
    if style == "auto":
        style = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    return model, tokenizer, style, f"LoRA on {config.base_model}"


def _hardware(device, num_processes: int) -> dict:
    info = {"device": str(device), "processes": num_processes, **provenance.machine(("torch",))}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@dataclass
class _Run:
    accelerator: Any
    device: Any


def _accelerator(config: FinetuneConfig):
    try:  # allow several runs in one process (tests)
        AcceleratorState._reset_state(reset_partial_state=True)
    except Exception:  # noqa: BLE001
        pass
    wanted = resolve_device(config.device)  # imports torch_npu for npu, clear errors
    mixed = (
        "bf16"
        if config.mode in ("scratch", "full") and wanted.type != "cpu" and config.dtype in ("auto", "bf16")
        else "no"
    )
    accelerator = Accelerator(cpu=wanted.type == "cpu", mixed_precision=mixed)
    return _Run(accelerator, accelerator.device)


def _evaluate_loss(model, data, pad_id, batch_size, device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = {k: v.to(device) for k, v in _collate(data[start : start + batch_size], pad_id).items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(loss)
            count += int((labels != -100).sum())
    model.train()
    return total / max(count, 1)


def train(config: FinetuneConfig, command: str | None = None) -> dict:
    """Train (or resume) according to ``config``; returns the model card (also written to disk)."""

    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    torch.manual_seed(config.seed)
    if config.property_unit:
        register_property(config.property_name, config.property_unit)
    started = time.time()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    export_dir = Path(config.export_dir) if config.export_dir else output_dir / "final"
    run = _accelerator(config)
    acc = run.accelerator

    train_examples, train_desc = _examples(config, "train")
    eval_examples, eval_desc = _examples(config, "eval")
    if not train_examples:
        raise ValueError("no training examples (set train_split, train_jsonl or train_csv)")
    model, tokenizer, style, model_desc = _build(config, train_examples, output_dir, run.device)
    train_data, skipped = _tokenize(train_examples, tokenizer, style, config.max_length)
    eval_data, _ = _tokenize(eval_examples, tokenizer, style, config.max_length)
    if not train_data:
        raise ValueError(f"every training example is longer than max_length={config.max_length}")

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    batches_per_epoch = math.ceil(len(train_data) / config.batch_size)
    shard_batches = math.ceil(batches_per_epoch / acc.num_processes)
    steps_per_epoch = max(1, shard_batches // config.grad_accum)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    scheduler = get_scheduler(
        config.lr_schedule,
        optimizer,
        num_warmup_steps=min(config.warmup_steps, total_steps),
        num_training_steps=total_steps,
    )
    model.train()
    model, optimizer = acc.prepare(model, optimizer)
    unwrapped = acc.unwrap_model(model)

    state = {"step": 0, "epoch": 0, "batch": 0, "elapsed_s": 0.0, "tokens": 0, "last_loss": None}
    checkpoints = _checkpoints(output_dir)
    if checkpoints:
        state = _load_checkpoint(checkpoints[-1], unwrapped, optimizer, scheduler)
        acc.print(f"resumed from {checkpoints[-1]} (step {state['step']})")
    log_path = output_dir / "train_log.jsonl"
    elapsed_before = state["elapsed_s"]
    t0 = time.time()
    running, running_n = 0.0, 0
    eval_loss = None

    def save():
        state["elapsed_s"] = elapsed_before + time.time() - t0
        if acc.is_main_process:
            _save_checkpoint(output_dir, unwrapped, optimizer, scheduler, state, config.keep_checkpoints)
        acc.wait_for_everyone()

    micro = 0
    while state["step"] < total_steps:
        generator = torch.Generator().manual_seed(config.seed * 1000 + state["epoch"])
        order = torch.randperm(len(train_data), generator=generator).tolist()
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        batches = batches[acc.process_index :: acc.num_processes]
        while state["batch"] < len(batches) and state["step"] < total_steps:
            items = [train_data[i] for i in batches[state["batch"]]]
            batch = {k: v.to(run.device) for k, v in _collate(items, tokenizer.pad_token_id).items()}
            with acc.autocast():
                loss = model(**batch).loss
            acc.backward(loss / config.grad_accum)
            running += float(loss.detach())
            running_n += 1
            state["tokens"] += int((batch["labels"] != -100).sum())
            state["batch"] += 1
            micro += 1
            if micro % config.grad_accum:
                continue
            if config.grad_clip:
                acc.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            step = state["step"]
            if step % config.log_every == 0 or step == total_steps or step == 1:
                state["last_loss"] = running / max(running_n, 1)
                entry = {
                    "step": step,
                    "epoch": state["epoch"] + state["batch"] / len(batches),
                    "loss": state["last_loss"],
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": state["tokens"],
                    "elapsed_s": round(elapsed_before + time.time() - t0, 1),
                }
                running, running_n = 0.0, 0
                if acc.is_main_process:
                    with open(log_path, "a") as handle:
                        handle.write(json.dumps(entry) + "\n")
                acc.print(json.dumps(entry))
            if eval_data and config.eval_every and step % config.eval_every == 0:
                eval_loss = _evaluate_loss(
                    model, eval_data, tokenizer.pad_token_id, config.batch_size, run.device
                )
                state["eval_loss"] = eval_loss
                acc.print(json.dumps({"step": step, "eval_loss": eval_loss}))
            if config.save_every and step % config.save_every == 0 and step < total_steps:
                save()
        if state["batch"] >= len(batches):
            state["epoch"] += 1
            state["batch"] = 0
    if running_n:
        state["last_loss"] = running / running_n
    if eval_data:
        eval_loss = _evaluate_loss(model, eval_data, tokenizer.pad_token_id, config.batch_size, run.device)
        state["eval_loss"] = eval_loss
    save()

    card: dict = {}
    if acc.is_main_process:
        export_dir.mkdir(parents=True, exist_ok=True)
        unwrapped.save_pretrained(str(export_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(export_dir))
        metrics = {
            "steps": state["step"],
            "epochs": round(state["step"] / steps_per_epoch, 3),
            "train_loss_last": state["last_loss"],
            "eval_loss": eval_loss,
            "answer_tokens_seen": state["tokens"],
            "skipped_too_long": skipped,
        }
        card = {
            "name": config.name,
            "mode": config.mode,
            "model": model_desc,
            "base_model": config.base_model,
            "parameters": sum(p.numel() for p in unwrapped.parameters()),
            "trainable_parameters": sum(p.numel() for p in unwrapped.parameters() if p.requires_grad),
            "property_name": canonical_property(config.property_name),
            "property_unit": KNOWN_PROPERTY_UNITS[canonical_property(config.property_name)],
            "composition_mode": config.composition_mode,
            "prompt_style": style,
            "data": {
                "train": train_desc,
                "train_examples": len(train_data),
                "eval": eval_desc,
                "eval_examples": len(eval_data),
            },
            "command": command or "llm_torch.finetune.train(config) from Python",
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()
            },
            "time_s": round(elapsed_before + time.time() - t0, 1),
            "wall_time_s_this_run": round(time.time() - started, 1),
            "hardware": _hardware(run.device, acc.num_processes),
            "metrics": metrics,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        lineage = base_model_lineage(config.base_model) if config.mode == "full" else None
        if lineage:
            card["base_model_card"] = lineage
        if config.eval_symmetry_limit and config.eval_split:
            try:
                card["metrics"]["holdout_symmetry"] = evaluate_model_on_split(
                    unwrapped.eval(),
                    tokenizer,
                    config.eval_split,
                    config.property_name,
                    limit=config.eval_symmetry_limit,
                    prompt_style=style,
                    model_name=export_dir.name,
                    root=config.data_root,
                )
            except Exception as error:  # noqa: BLE001 - metrics are best effort, the model is saved
                card["metrics"]["holdout_symmetry_error"] = f"{type(error).__name__}: {error}"[:300]
        (export_dir / "model_card.json").write_text(json.dumps(card, indent=1))
        acc.print(f"exported to {export_dir}")
    acc.wait_for_everyone()
    return card


def base_model_lineage(base_model: str | None) -> dict | None:
    """What the starting weights of a full fine-tune were (from the base model's card, when it
    is one of ours), so the exported card tells the whole training history."""
    card_path = Path(base_model or "") / "model_card.json"
    if not base_model or not card_path.is_file():
        return None
    base = json.loads(card_path.read_text())
    keep = ("name", "mode", "model", "property_name", "command", "time_s", "hardware", "training_history")
    lineage = {k: base[k] for k in keep if k in base}
    lineage["steps"] = (base.get("metrics") or {}).get("steps")
    lineage["epochs"] = (base.get("metrics") or {}).get("epochs")
    return lineage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm_torch.finetune", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", required=True, help="configs/llm_*.py")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
    except (OSError, ValueError, AttributeError, SyntaxError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    command = " ".join(["python -m llm_torch.finetune", *(argv if argv is not None else sys.argv[1:])])
    try:
        train(config, command=command)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
