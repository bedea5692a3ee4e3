#!/usr/bin/env bash
# One-shot training of the shipped model on a lent GPU machine (the `device` tool's `run`; $OUT there).
# Carry .whl (diffusers and importlib_metadata wheels: that machine has torch and transformers, not diffusers).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
CONFIG=${CONFIG:-configs/shapes-v1.toml}
RUN=/tmp/run
start=$(date +%s)
timeout "${TRAIN_LIMIT:-330}" python3 -m t2ikit train --config "$CONFIG" --device "${DEVICE:-cuda}" --out $RUN --quiet > "$OUT/train.log" 2>&1
echo "train exit $? after $(( $(date +%s) - start )) s"
tail -5 "$OUT/train.log"
if [ ! -f $RUN/model/model_index.json ]; then  # stopped early: export the newest checkpoint
  python3 -m t2ikit train --config "$CONFIG" --out $RUN --export-only $RUN/model --fp16 >> "$OUT/train.log" 2>&1
fi
cp $RUN/log.jsonl $RUN/config.json "$OUT/" 2>/dev/null
tar -C $RUN -czf "$OUT/model.tgz" model && ls -la "$OUT"
timeout "${EVAL_LIMIT:-60}" python3 scripts/gpu_eval.py $RUN/model "$OUT/compbench.json" --device "${DEVICE:-cuda}" --guidance 4.0 --n-prompts "${NPROMPTS:-50}" 2>&1 | grep -v "^\[transformers\]" | tail -40
echo "total $(( $(date +%s) - start )) s"
