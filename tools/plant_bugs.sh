#!/usr/bin/env bash
# Plant each bug that docs/testing.md names, one at a time, in a throwaway clone of the committed
# tree, run the test meant to catch it, and record whether it did (results/planted-bugs.json).
#     tools/plant_bugs.sh          (make plant-bugs; needs .venv, about 10 minutes)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git clone -q "$ROOT" "$WORK/tree"
cd "$WORK/tree"
export PYTHONPATH="$WORK/tree/src" OMP_NUM_THREADS=1
: > "$WORK/outcomes.tsv"
plant() { # name file sed-expression pytest-args...
  local name=$1 file=$2 expr=$3; shift 3
  cp "$file" "$WORK/original"
  sed -i "$expr" "$file"
  if git diff --quiet -- "$file"; then echo "error: the bug '$name' no longer applies to $file; update $0" >&2; exit 1; fi
  if timeout 900 "$PY" -m pytest -q -x -p no:xdist -p no:cacheprovider "$@" > "$WORK/log" 2>&1; then
    outcome="NOT caught"; else outcome="caught"; fi
  printf '%s\t%s\t%s\n' "$name" "$outcome" "$*" >> "$WORK/outcomes.tsv"
  echo "$outcome: $name (by $*)"
  cp "$WORK/original" "$file"
}
plant "DDP without gradient averaging" src/arcadedreamer/training/distributed.py \
  's/    return DistributedDataParallel(model, device_ids=\[device.index\] if device.type == "cuda" else None)/    return model/' \
  tests/test_distributed.py
plant "dynamics --resume not restoring the self-feeding draws" src/arcadedreamer/models/checkpoints.py \
  's/        generator.set_state(state\["rng"\]\[name\].to(generator.get_state().device))/        pass/' \
  tests/test_training.py -k dynamics_resume
plant "a silent @latest behind a broken @champion" src/arcadedreamer/models/checkpoints.py \
  's/    if champion is not None:/    if False:/' tests/test_control.py -k champion
plant "promotion by PSNR over the ball" src/arcadedreamer/config.py \
  's/"ball_recall_mean_model",$/"psnr_h10_gain",/' tests/test_evaluation.py -k default_promotion
plant "the model's frames scored one horizon early" src/arcadedreamer/evaluation/evaluate.py \
  's/    targets = windows.stacks\[:, context:, -1\]/    targets = windows.stacks[:, context - 1 : -1, -1]/' \
  tests/test_evaluation.py -k own_scores
plant "a stage's end status written only through mlflow.end_run (a retry writes nothing)" src/arcadedreamer/tracking.py \
  '/set_terminated(run_id, status))$/d' tests/test_robustness.py -k locked_store
plant "Ctrl-C raised inside a store call" src/arcadedreamer/interrupts.py \
  's/    if not _deferred or again:/    if True:/' tests/test_robustness.py -k store_call
cd "$ROOT"
"$PY" - "$WORK/outcomes.tsv" "$WORK/tree" <<'PYTHON'
import datetime as dt, json, sys
sys.path.insert(0, "src")
from arcadedreamer import provenance
from arcadedreamer.fileio import atomic_write_json
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
atomic_write_json("results/planted-bugs.json", {
    "title": "Bugs the tests name, planted one at a time: does the suite catch each?",
    "measured": dt.date.today().isoformat(), "commit": provenance.git_state(sys.argv[2]),
    "machine": provenance.machine(), "command": "tools/plant_bugs.sh",
    "columns": ["planted bug", "outcome", "the tests run"],
    "rows": [[name, outcome, f"`{tests}`"] for name, outcome, tests in rows],
})
print("results/planted-bugs.json:", sum(r[1] == "caught" for r in rows), "of", len(rows), "caught")
PYTHON
grep -q "NOT caught" "$WORK/outcomes.tsv" && exit 1 || exit 0
