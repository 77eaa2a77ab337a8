#!/usr/bin/env bash
# One prepared run for a GPU machine: build the CUDA ops, check them against the reference,
# time them, and smoke-test a full-size inversion step (fp32 and bf16) and the Table 1 timing.
# Usage: bash stytr/benchmarks/device_check.sh   (prints everything it measures)
set -uo pipefail
cd "$(dirname "$0")/../.."
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
pip install -q -e ".[test]" >/dev/null 2>&1 || pip install -e ".[test]"
nvidia-smi --query-gpu=name,memory.total --format=csv
python -m pytest tests/test_ops.py -m cuda -q -p no:cacheprovider 2>&1 | tail -5
python -m stytr.benchmarks.ops
python - <<'PY'
import time, torch
from stytr.eval.complexity import complexity_table, format_complexity_table, paper_table1_configs, PAPER_TABLE1
from pytorch_ranger import Ranger
from stytr.config import InversionConfig
from stytr.models.style_transformer import build_inversion_model
model = build_inversion_model(InversionConfig.preset("ffhq", backbone_weights="")).cuda()
opt = Ranger(model.trainable_parameters(), lr=1e-4)
x = torch.rand(8, 3, 256, 256, device="cuda") * 2 - 1
for bf16 in (False, True):
    for i in range(3):
        torch.cuda.synchronize(); t0 = time.time()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            y = model(x)
        loss = torch.nn.functional.mse_loss(y.float(), x)
        opt.zero_grad(); loss.backward(); opt.step(); torch.cuda.synchronize()
    print(f"full-size train step (batch 8, bf16={bf16}): {time.time() - t0:.3f} s, loss {loss.item():.4f}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
rows = complexity_table(paper_table1_configs("ffhq", backbone_weights=""), repeats=20, warmup=5, device="cuda",
                        reference=PAPER_TABLE1)
print(format_complexity_table(rows))
PY
