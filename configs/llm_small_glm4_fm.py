"""Symmetry predictor from scratch: the small GLM-4 of configs/llm_small_glm4_bg.py conditioned on
the formation energy per atom instead of the band gap (the paper's FM variant).

Run:   python -m llm_torch.finetune --config configs/llm_small_glm4_fm.py
       (add --set device=cuda on a GPU; the run resumes from workdirs/llm_small_glm4_fm/checkpoints)
Data, model and time: as configs/llm_small_glm4_bg.py (~1.4 hours for 3 epochs on the 2-core CPU).
Exported to llm_torch/checkpoints/small_glm4_fm.
"""

import dataclasses
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_base", Path(__file__).with_name("llm_small_glm4_bg.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
    return dataclasses.replace(
        _base.get_config(),
        name="small_glm4_fm",
        output_dir="workdirs/llm_small_glm4_fm",
        export_dir="llm_torch/checkpoints/small_glm4_fm",
        property_name="formation_energy_per_atom",
    )
