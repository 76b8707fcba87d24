"""What every benchmark records beside its numbers: the command, the machine and the data."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception:  # noqa: BLE001
        pass
    try:
        with open("/proc/meminfo") as handle:
            info["memory_kb"] = int(handle.readline().split()[1])
    except OSError:
        pass
    return info


def git_commit() -> str | None:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return None


def write_result(path: Path, result: dict) -> None:
    result = {
        **result,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def oracle_verdicts(oracle, structures, column: int):
    """(predicted (n,), sane (n,), plausible (n,)) for generated structures: the oracle's value of
    property ``column`` for every sane cell (NaN for the others, which it cannot featurize), and
    ``metrics.is_sane`` / ``metrics.is_plausible`` flags."""
    import numpy as np

    from unimdm_jax.metrics import is_plausible, is_sane

    sane = np.asarray([is_sane(s) for s in structures], bool)
    plausible = np.asarray([is_plausible(s) for s in structures], bool)
    predicted = np.asarray(oracle.predict_structures(structures), np.float64)[:, column]  # NaN where not sane
    return predicted, sane, plausible
