#!/usr/bin/env bash
# The one-shot GPU run of the Crystal DiT (benchmarks/README.md, "One-shot GPU run").
#
# Prepared here (CPU), once per machine:
#   python -m unimdm_jax.remote pack --out .carry/mp20            # the policy's splits as arrays (~13 MB)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl jraph==0.0.6.dev0 tensorboardX==2.6.5
# Run on the lent accelerator (device tool: carry [".carry", ".whl"], timeout_s 600):
#   (default CONFIG: configs/dit_mp20_gpu_grown.py, the shipped model grown to hidden 512; CONFIG=configs/dit_mp20_paper.py
#   trains the paper-sized network from scratch)
#   bash benchmarks/gpu_oneshot.sh
# Then here, on the files that came back (FILES_AT):
#   python -m unimdm_jax.remote match --samples FILES_AT --csv ../shared/data/mp_20/test.csv.gz \
#       --out benchmarks/results/dit_csp_mp20_gpu.json
# At most 8 files come back (16 MB each): the weight shards (bfloat16, 15 MB each), config.json,
# samples.npz, run.json and log.txt.
set -euo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/log.txt" 2>&1 || true
python3 -m unimdm_jax.remote run --data .carry/mp20 --config "${CONFIG:-configs/dit_mp20_gpu_grown.py}" \
    --train-seconds "${TRAIN_SECONDS:-330}" --sample-seconds "${SAMPLE_SECONDS:-150}" \
    --sample-batch-size "${SAMPLE_BATCH:-512}" --out "$OUT" ${EXTRA:-} 2>&1 | tee -a "$OUT/log.txt"
