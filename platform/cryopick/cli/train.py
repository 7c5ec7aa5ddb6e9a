"""Train a picker on micrographs with expert picks.

Coordinate files in --coords are matched to micrographs by file stem (.star, .box, .csv, .txt).
RUNDIR receives model.pt (weights, preprocessing, and the threshold and peak distance that
maximised F1 on validation), config.json (the resolved configuration), history.csv and val_pr.png.
Without --val-micrographs, the bottom --val-fraction of each micrograph is held back for validation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time so that --help stays fast
    from cryopick.config import ModelConfig, PreprocessConfig, TrainConfig


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--micrographs", nargs="+", required=True, help="MRC/TIFF files, globs, directories or a manifest")
    parser.add_argument("--coords", type=Path, required=True, help="directory of expert pick files, one per micrograph")
    parser.add_argument("--diameter", required=True,
                        help="particle diameter: original pixels (180, 180px) or ångström (150A; pixel size from the header or --pixel-size)")
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument("--val-micrographs", nargs="+", default=[], help="separate validation micrographs")
    parser.add_argument("--config", type=Path, help="YAML with preprocess/model/train sections (flags override it)")
    parser.add_argument("--pixel-size", type=float, help="Å/px, overriding the MRC header")
    parser.add_argument("--labels", choices=("auto", "complete", "sparse"), default="auto",
                        help="are all particles of the micrographs picked (complete) or only some (sparse)? sets how the "
                             "stored threshold is chosen; default auto: against the particle count estimated from the "
                             "validation picks, with a message when the picks look sparse")
    parser.add_argument("--expected-particles", type=float, metavar="N",
                        help="particles a micrograph holds, picked or not (as Topaz's -n); with sparse picks the "
                             "unpicked areas are then learned as partly particle instead of as background")
    g = parser.add_argument_group("preprocessing")
    g.add_argument("--bin", type=float, help="Fourier-crop factor (default: diameter / --target-diameter)")
    g.add_argument("--target-pixel-size", type=float, help="bin to this Å/px instead of --bin")
    g.add_argument("--target-diameter", type=float, metavar="PX",
                   help="without --bin: bin so that the particle is this many px across (default 20)")
    g = parser.add_argument_group("model and training")
    g.add_argument("--width", type=int, help="U-Net base width (default 16; 64 = full 31 M-parameter model)")
    g.add_argument("--steps", type=int, help="optimisation steps (default 1000)")
    g.add_argument("--batch-size", type=int, help="patches per step (default 8)")
    g.add_argument("--patch-size", type=int, help="patch edge in binned px, multiple of 16 (default: 7 particle diameters)")
    g.add_argument("--lr", type=float)
    g.add_argument("--val-fraction", type=float, help="share of each micrograph held back without --val-micrographs")
    g.add_argument("--val-every", type=int)
    g.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument("--threads", type=int, help="CPU threads for torch")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: on where the hardware runs bf16 natively)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


FLAG_SECTIONS = {
    "preprocess": ("bin", "target_pixel_size", "target_diameter"),
    "train": ("steps", "batch_size", "patch_size", "lr", "val_fraction", "val_every", "seed", "amp"),
}


def resolve_configs(args: argparse.Namespace) -> tuple[PreprocessConfig, ModelConfig, TrainConfig]:
    """YAML (if any) overlaid with explicit flags -> validated configs."""
    from cryopick.config import ModelConfig, PreprocessConfig, TrainConfig, from_dict, load_yaml

    raw = load_yaml(args.config) if args.config else {}
    unknown = set(raw) - {"preprocess", "model", "train"}
    if unknown:
        from cryopick.errors import CryopickError

        raise CryopickError(f"unknown config section {sorted(unknown)[0]!r} (known: preprocess, model, train)", args.config)
    sections = {k: dict(raw.get(k) or {}) for k in ("preprocess", "model", "train")}
    for section, keys in FLAG_SECTIONS.items():
        for key in keys:
            if getattr(args, key, None) is not None:
                sections[section][key] = getattr(args, key)
    if args.width is not None:
        sections["model"]["base_width"] = args.width
    return (
        from_dict(PreprocessConfig, sections["preprocess"], "preprocess"),
        from_dict(ModelConfig, sections["model"], "model"),
        from_dict(TrainConfig, sections["train"], "train"),
    )


def main(args: argparse.Namespace) -> int:
    from cryopick.io.manifest import resolve_micrographs
    from cryopick.training.run import train_from_files

    from cryopick.io.micrograph import diameter_in_pixels

    pre, model_cfg, train_cfg = resolve_configs(args)
    mics = resolve_micrographs(args.micrographs)
    diameter = diameter_in_pixels(args.diameter, args.pixel_size, mics[0])
    val = resolve_micrographs(args.val_micrographs) if args.val_micrographs else []
    result = train_from_files(
        mics, args.coords, diameter, args.out, pre, model_cfg, train_cfg, val, args.pixel_size, not args.quiet,
        device=args.device or "auto", threads=args.threads, max_minutes=args.max_minutes, labels=args.labels,
        expected_particles=args.expected_particles,
    )
    m = result.meta
    f1 = "n/a" if m.val_f1 is None else f"{m.val_f1:.3f}"
    given = "" if str(args.diameter).strip() == f"{diameter:g}" else f" ({args.diameter})"
    binning = f"bin {m.preprocess.bin:g}" if m.preprocess.bin is not None else f"{m.preprocess.target_pixel_size:g} Å/px"
    print(f"particle diameter {diameter:.1f} px{given}, {binning}; trained on {len(mics)} micrograph(s) in {result.seconds:.0f} s; validation F1 {f1} "
          f"at threshold {m.threshold:.3f}, min distance {m.resolved_min_distance():.1f} px, edge band {m.border:.1f} px "
          f"-> {args.out / 'model.pt'}")
    return 0
