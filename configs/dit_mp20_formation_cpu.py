"""Crystal DiT, CPU-sized, conditioned on formation energy (the paper's FM variant).

Run:   python -m unimdm_jax.train --config configs/dit_mp20_formation_cpu.py
Same data, size and time as configs/dit_mp20_cpu.py; only the conditioning property differs.
"""

import dataclasses
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_base", Path(__file__).with_name("dit_mp20_cpu.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
    config = _base.get_config()
    model = dataclasses.replace(config.model, properties=("formation_energy_per_atom",), property_ranges=((-5.5, 0.5),))
    return dataclasses.replace(config, model=model)
