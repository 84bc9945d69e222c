#!/bin/bash
# bench_kd_grid.py on a lent GPU machine (the session's `device` tool), as run on 2026-12-04 (benchmarks/RESULTS.md,
# "The grid on a GPU"). The machine has torch but not RecBole, and reaches no package index, so prepare here first:
#   echo /.whl/ >> .git/info/exclude; echo /.devdata/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       recbole==1.2.1 colorlog texttable thop pandas==2.3.3 pytz tzdata
#   mkdir -p .devdata/data && cp -r ../shared/data/lastfm .devdata/data/
#   RECBOLE_LLMKD_CACHE=.devdata/cache  <encode the item texts of every dataset once here, e.g. one tiny run of a
#       semantic teacher per dataset>   (the MiniLM wheel is over the 64 MiB that travel)
# then run this script with carry [".whl", ".devdata"]. Extra arguments go to bench_kd_grid.py.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD RECBOLE_LLMKD_CACHE=$PWD/.devdata/cache PYTHONUNBUFFERED=1
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
WORKERS=${WORKERS:-14}
# MPS lets the runs share the GPU; without it they time-slice it and each step is 12-14x slower (measured)
if nvidia-cuda-mps-control -d && timeout 40 python3 -c "import torch; torch.zeros(1).cuda(); torch.cuda.synchronize()"; then
  echo "MPS on"
else
  echo "MPS off: fewer workers"; echo quit | nvidia-cuda-mps-control 2>/dev/null; unset CUDA_MPS_PIPE_DIRECTORY; WORKERS=3
fi
( while sleep 10; do cp runs/kd_grid/rows.jsonl runs/kd_grid/chosen_teachers.jsonl "$OUT"/ 2>/dev/null; done ) &
python3 benchmarks/bench_kd_grid.py --out-dir runs/kd_grid --data-path .devdata/data --gpu-id 0 --workers "$WORKERS" \
  --budget-s "${BUDGET:-500}" "$@" 2>&1 | tee "$OUT"/grid.log | grep -v "^\[.*start "
cp runs/kd_grid/rows.jsonl runs/kd_grid/chosen_teachers.jsonl runs/kd_grid/summary.json "$OUT"/ 2>/dev/null
tar czf "$OUT"/runs.tgz --exclude='*.pth' --exclude='*.safetensors' runs/kd_grid 2>/dev/null
echo quit | nvidia-cuda-mps-control 2>/dev/null
