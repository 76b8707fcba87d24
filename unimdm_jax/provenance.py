"""Where and when a number was made: recorded beside results (benchmarks, evaluations,
``llm_torch.evaluate``)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def machine(frameworks: tuple[str, ...] = ("jax",)) -> dict:
    """Platform, CPU and memory, plus the version and devices of each framework asked for
    (``"jax"``, ``"torch"``; only those are imported)."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    # jax and torch (the jax and llm extras) are imported here, only when asked for
    if "jax" in frameworks:
        try:
            import jax

            info["jax"] = jax.__version__
            info["jax_devices"] = [str(d) for d in jax.devices()]
        except Exception:  # noqa: BLE001 - a missing or broken backend is recorded as absent
            pass
    if "torch" in frameworks:
        try:
            import torch

            info["torch"] = torch.__version__
            info["torch_threads"] = torch.get_num_threads()
        except ImportError:
            pass
    try:
        with open("/proc/meminfo") as handle:
            info["memory_kb"] = int(handle.readline().split()[1])
    except OSError:
        pass
    return info


def hardware_summary(info: dict | None = None) -> str:
    """One line for a model card: processor, CPU cores and accelerators (from ``machine()``),
    e.g. ``"x86_64, 16 CPU cores (no GPU)"`` or ``"x86_64, 16 CPU cores, cuda:0"``."""
    info = machine() if info is None else info
    accelerators = [d for d in info.get("jax_devices", []) if not d.lower().startswith(("cpu", "tfrt_cpu"))]
    line = f"{info['processor']}, {info['cpu_count']} CPU cores"
    return f"{line}, {', '.join(accelerators)}" if accelerators else f"{line} (no GPU)"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """Short HEAD of the checkout this package runs from, ``+dirty`` when tracked files differ from
    it (numbers then come from uncommitted code); None outside git."""
    here = Path(__file__).parent
    try:
        head = subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL, cwd=here
        ).strip()
        changes = subprocess.check_output(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            text=True,
            stderr=subprocess.DEVNULL,
            cwd=here,
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if changes else "")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_result(path: Path | str, result: dict) -> None:
    """Write a result as JSON with the command, machine, git commit and date beside it (and print it)."""
    result = {
        **result,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "git_commit": git_commit(),
        "date": utc_now(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
