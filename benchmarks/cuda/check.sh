#!/bin/bash
# The CUDA path on a GPU machine, where the Ray stack may be missing: the teacher-student pieces at full width
# (cuda_teacher.py), then `cryopick train` / `pick` / `evaluate` at widths 64 and 16 on EMPIAR-10017 (train on the
# 5 `labeled` micrographs, pick the 5 `test` ones, best F1 and F1 at the stored threshold, match radius half a
# diameter). Prints one JSON line per width; figures in docs/benchmarks.md, "CUDA path".
#
#   bash benchmarks/cuda/check.sh [DATA_DIR]     # DATA_DIR: the empiar10017 folder (default ../shared/data/empiar10017)
#
# Needs torch with CUDA, numpy, scipy, pandas, mrcfile, starfile and `platform/` on PYTHONPATH.
set -o pipefail
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
D=${1:-../shared/data/empiar10017}
cli() { python3 -m cryopick.cli "$@"; }
mics() { python3 -c "import json,sys;print(' '.join(f'$D/micrographs/{n}.mrc' for n in json.load(open('$D/split.json'))[sys.argv[1]]))" "$1"; }
TMP=$(mktemp -d)
python3 "$(dirname "$0")/cuda_teacher.py" || exit 1
for W in 64 16; do
  T0=$(date +%s.%N)
  cli train --micrographs $(mics labeled) --coords $D/coords --diameter 27 --out $TMP/w$W --width $W --device cuda --seed 0 --quiet || exit 1
  T1=$(date +%s.%N)
  cli pick --model $TMP/w$W --micrographs $(mics test) --out $TMP/p$W --threshold 0.02 --device cuda --quiet || exit 1
  T2=$(date +%s.%N)
  python3 - "$TMP" "$D" $W $T0 $T1 $T2 <<'PY' || exit 1
import json, subprocess, sys
tmp, data, w, t0, t1, t2 = sys.argv[1], sys.argv[2], sys.argv[3], *map(float, sys.argv[4:])
cfg = json.load(open(f"{tmp}/w{w}/config.json"))
ev = [sys.executable, "-m", "cryopick.cli", "evaluate", "--picks", f"{tmp}/p{w}", "--truth", f"{data}/coords", "--diameter", "27", "--json"]
best = json.loads(subprocess.run(ev, capture_output=True, text=True, check=True).stdout)
stored = json.loads(subprocess.run(ev + ["--threshold", str(cfg["result"]["threshold"])], capture_output=True, text=True, check=True).stdout)
print(json.dumps({"width": int(w), "train_s": t1 - t0, "pick_s": t2 - t1, "best_f1": best["best_f1"], "ap": best["average_precision"],
                  "stored_threshold": cfg["result"]["threshold"], "stored_f1": stored["f1"], "result": cfg["result"]}))
PY
done
rm -rf "$TMP"
