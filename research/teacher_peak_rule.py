"""Which peaks should the teacher call particles? Calibrated peak precision against the raw teacher score.

For cached round models (``benchmarks/out/active_learning``), predicts the dev ``unlabeled`` micrographs
(never ``test``; campaigns never read their picks) without test-time augmentation, as the teacher sees a
patch, finds peaks as :class:`cryopick.selftrain.pseudo.PseudoLabeler` does, and for each rule reports the
particle peaks per micrograph, their precision against the expert picks (a lower bound on EMPIAR-10028,
whose picks are incomplete) and the share of expert picks they cover:

* ``calibrated``: calibrated peak precision (the round's ``calibration.json`` table) > 0.95;
* ``share-corrected``: the same table divided by the round's estimated picked share (peaks on unpicked
  particles count as false on the strips, so measured precision is the picked share times the true one);
* ``raw``: the teacher's own (smoothed) peak value > 0.95, the product's rule read at peaks.

    python research/teacher_peak_rule.py
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "benchmarks" / "out" / "active_learning"


def main() -> None:
    from cryopick.config import PickConfig
    from cryopick.evaluation.metrics import CANDIDATE_FLOOR, match
    from cryopick.inference.peaks import find_peaks
    from cryopick.inference.picker import load_picker, pick_micrograph
    from cryopick.io.coords import read_coords
    from cryopick.io.micrograph import read_micrograph
    from cryopick.selftrain.pseudo import apply_calibration

    rounds = sorted(CACHE.glob("empiar100*/seed*/*/round_00[0-4]"))
    seen: set[str] = set()
    for rd in rounds:
        data = rd.parts[-4]
        key = f"{data}/{rd.parts[-3]}/{rd.parts[-2] if rd.name != 'round_000' else 'base'}/{rd.name}"
        if key in seen or rd.parts[-2] == "ceiling" or not (rd / "calibration.json").exists():
            continue
        seen.add(key)
        cal = json.loads((rd / "calibration.json").read_text())
        cfgj = json.loads((rd / "config.json").read_text())
        diameter = float(cfgj["diameter"])
        model, meta = load_picker(rd / "model.pt")
        share = float(cal.get("picked_share", 1.0))
        stats = {"calibrated": [0, 0, 0], "share-corrected": [0, 0, 0], "raw": [0, 0, 0]}  # particle peaks, hits, expert picks
        n_mic = 0
        for stem in json.loads((DATA / data / "split.json").read_text())["unlabeled"]:
            mic = read_micrograph(DATA / data / "micrographs" / f"{stem}.mrc")
            picked = pick_micrograph(model, meta, mic, PickConfig(tta=1, threshold=1.0))
            b = picked.binned
            xy, s = find_peaks(picked.heatmap, 0.6 * diameter / b.mean_scale, CANDIDATE_FLOOR, 1.0)
            true_xy, _ = read_coords(DATA / data / "coords" / f"{stem}.csv")
            q = apply_calibration(s, cal["peak"]) if cal.get("peak") else s
            n_mic += 1
            for rule, sel in (("calibrated", q > 0.95), ("share-corrected", q / max(share, 1e-3) > 0.95), ("raw", s > 0.95)):
                pxy = b.to_original(xy[sel])
                hits = match(pxy, s[sel], true_xy, diameter / 2.0)
                st = stats[rule]
                st[0] += int(sel.sum())
                st[1] += int(hits.sum())
                st[2] += len(true_xy)
        line = [key, f"peak table max {max(cal['peak']) if cal.get('peak') else float('nan'):.2f}, picked share {share:.2f}"]
        for rule, (n, h, t) in stats.items():
            line.append(f"{rule}: {n / n_mic:6.1f} per mic, precision {h / max(n, 1):.2f}, covers {h / max(t, 1):.2f}")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
