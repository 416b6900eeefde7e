#!/usr/bin/env bash
# The GPU check: one command on a CUDA machine, from the repository root with the environment active:
#
#     bash benchmarks/gpu_check.sh
#
# 1. the `cuda` test subset (tests/test_cuda.py: device placement, device replay, sync-free and compiled
#    updates, checkpoints GPU -> CPU -> GPU), at most TESTS_S seconds;
# 2. the MT10-size update (3 x 400, batch 128 per task) eager / compiled / CUDA-graphed
#    (benchmarks/throughput.py --update-only), at most TIMING_S seconds;
# 3. about TRAIN_S seconds of real MT10 training (experiment=mt10, env workers stepping while the learner
#    updates, compile=default): steps/s, updates/s, the projected wall time of the standard
#    2M-vector-step MT10 run and peak GPU memory (benchmarks/gpu_check.py);
#    then prints the JSON of 1-3 (about 8 minutes with the defaults);
# 4. experiment=mt10_fast for about FAST_S seconds: env steps/s, updates/s, evaluation success so far
#    (FAST_OVERRIDES, default eval_every=1000000, makes an evaluation likely within the time box);
# 5. the BRC update at the authors' width (experiment=mt10_brc: 3 x 4096 BroNet critics, 136M parameters, batch
#    1024; benchmarks/brc_update.py): ms per update as the preset runs it and on equal counts eager / compiled,
#    compile time, peak GPU memory; at most BRC_S seconds.
# The last output is one JSON object with everything. Every step runs under `timeout` (SIGINT first: runs stop
# cleanly); a failed or timed-out step leaves its rc and log file name in the JSON and the next step still runs.
# Settings (environment): TESTS_S=120 TIMING_S=120 TRAIN_S=180 FAST_S=240 BRC_S=240 FAST_OVERRIDES=... OUT=<dir>
# PYTHON=python
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
PYTHON=${PYTHON:-python}
TESTS_S=${TESTS_S:-120}
TIMING_S=${TIMING_S:-120}
TRAIN_S=${TRAIN_S:-180}
FAST_S=${FAST_S:-240}
BRC_S=${BRC_S:-240}
FAST_OVERRIDES=${FAST_OVERRIDES:-eval_every=1000000}
mkdir -p "$OUT"
echo "[gpu_check] writing to $OUT" >&2

# run NAME LIMIT_S CMD...: stdout to $OUT/NAME.out, stderr to $OUT/NAME.log, {rc, seconds} to $OUT/NAME.status
run() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "[gpu_check] $name (at most ${limit}s): $*" >&2
  timeout --signal=INT --kill-after=45 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"
  rc=$?
  echo "{\"rc\": $rc, \"seconds\": $(($(date +%s) - start)), \"log\": \"$OUT/$name.log\"}" >"$OUT/$name.status"
  echo "[gpu_check] $name: rc=$rc" >&2
}

# report PART...: one JSON object from whatever the named steps left (missing or broken files become errors).
report() {
  "$PYTHON" - "$OUT" "$@" <<'EOF' || echo "{\"error\": \"the report script failed; see $OUT\"}"
import json, re, sys
from pathlib import Path

out, parts = Path(sys.argv[1]), sys.argv[2:]

def load(path):
    try:
        return json.loads(Path(path).read_text())
    except Exception as err:  # a step that failed or was cut short
        return {"error": f"{Path(path).name}: {type(err).__name__}: {err}"}

def tests():
    text = (out / "tests.out").read_text() if (out / "tests.out").exists() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", text)}
    return {**counts, "summary": text.strip().splitlines()[-1] if text.strip() else None}

def timing():
    data = load(out / "timing.out")
    modes = {m: data.get(f"update_ms_{m}") for m in ("eager", "compiled", "cuda_graphs")}
    timed = {m: v for m, v in modes.items() if isinstance(v, (int, float))}
    data["fastest_update_mode"] = min(timed, key=timed.get) if timed else None
    return data

sections = {"tests": tests, "timing": timing, "mt10": lambda: load(out / "train.json"),
            "mt10_fast": lambda: load(out / "fast.json"), "brc": lambda: load(out / "brc.out")}
steps = {"tests": "tests", "timing": "timing", "mt10": "train", "mt10_fast": "fast", "brc": "brc"}
result = {"out": str(out)}
for part in parts:
    try:
        result[part] = sections[part]()
    except Exception as err:
        result[part] = {"error": f"{type(err).__name__}: {err}"}
    result[part]["step"] = load(out / f"{steps[part]}.status")
print(json.dumps(result, indent=2))
EOF
}

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" >&2 ||
  echo "[gpu_check] CUDA is not available: the cuda tests will skip and the runs will fail" >&2

run tests "$TESTS_S" "$PYTHON" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider
run timing "$TIMING_S" "$PYTHON" benchmarks/throughput.py --update-only --device cuda --updates 30 --tiny-updates 0
run train "$((TRAIN_S + 60))" "$PYTHON" benchmarks/gpu_check.py --seconds "$TRAIN_S" --out "$OUT/train.json" \
  experiment=mt10 device=cuda compile=default env.vectorization=async warmup_steps=10000 log_every=5000 \
  eval_every=0 checkpoint_every=0
report tests timing mt10

# shellcheck disable=SC2086  # FAST_OVERRIDES holds several words on purpose
run fast "$((FAST_S + 90))" "$PYTHON" benchmarks/gpu_check.py --seconds "$FAST_S" --out "$OUT/fast.json" \
  experiment=mt10_fast device=cuda $FAST_OVERRIDES
report tests timing mt10 mt10_fast

run brc "$BRC_S" "$PYTHON" benchmarks/brc_update.py --device cuda --updates 20
report tests timing mt10 mt10_fast brc
