"""Self-training campaign configuration and bookkeeping (no Ray here).

A campaign is a sequence of rounds: round 0 trains on labeled micrographs only; each later round
pseudo-labels the unlabeled micrographs with the previous round's model and retrains on both.
This module holds the validated configuration (:class:`SelftrainConfig`, built with
:func:`cryopick.config.from_dict`) and the path checks that run before any cluster work;
the campaign's bookkeeping (``state.json``, round folders, stopping rules) is in
:mod:`cryopick.selftrain.state`. Neither needs Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cryopick.config import MIN_DISTANCE_FRACTIONS, HeatmapConfig, ModelConfig, PreprocessConfig, TrainConfig, from_dict, load_yaml, to_dict
from cryopick.errors import CryopickError
from cryopick.io.coords import Box
from cryopick.selftrain.acquisition import DEFAULT_STRATEGY, STRATEGIES

if TYPE_CHECKING:
    from cryopick.selftrain.labels import Label

# Pseudo-label rules (selftrain.pseudo_rule); cryopick.selftrain.pseudo.PseudoLabeler.for_rule builds them.
#   calibrated: heatmaps calibrated on the previous round's validation picks, confident peaks painted as
#               label disks, unsure peaks ignored, background class-balanced (docs/selftrain.md)
#   plain:      the bare rule on raw heatmap values (p > positive particle, p < negative background)
PSEUDO_RULES = ("calibrated", "plain")
METHODS = ("teacher", "offline")
LABEL_KINDS = ("auto", "complete", "sparse")
WARM_LR_SCALE = 0.3  # learning rate of a warm-started round, as a share of train.lr (fine-tuning)
TUNE_TOLERANCE = 0.01  # within this F1 of the best Tune trial, the lowest threshold wins (scoring.best_trial)
COUNT_MICROGRAPHS = 5  # unlabeled micrographs each round predicts to match the pick count (count_matched_threshold)
_RULE = "was removed: choose the pseudo-label rule with selftrain.pseudo_rule (calibrated | plain)"


@dataclass
class DataSection:
    """Which micrographs play which part; globs, directories and manifests are allowed."""

    labeled: list[str] = field(default_factory=list)
    unlabeled: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)  # empty: hold back train.val_fraction of each labeled one
    test: list[str] = field(default_factory=list)  # scored every round; empty: the validation picks
    coords: str = ""  # directory of expert pick files (matched by stem)
    diameter: float = 0.0  # particle diameter, original px
    pixel_size: float | None = None  # Å/px, overriding MRC headers

    def validate(self, where: str = "data") -> None:
        if self.diameter <= 0:
            raise CryopickError(f"{where}.diameter must be positive, got {self.diameter!r}")
        if self.pixel_size is not None and self.pixel_size <= 0:
            raise CryopickError(f"{where}.pixel_size must be positive, got {self.pixel_size!r}")


@dataclass
class RoundsSection:
    """The self-training loop."""

    RETIRED: ClassVar[dict[str, str]] = {
        "calibrate": _RULE, "positive_disks": _RULE, "ignore_unsure_peaks": _RULE, "balance": _RULE,
        "warm_lr_scale": f"was removed: a warm-started round trains at {WARM_LR_SCALE:g} x train.lr",
        "min_improvement": "was removed: any gain in validation F1 counts (selftrain.patience: rounds without one before stopping)",
    }

    rounds: int = 3  # total rounds including round 0 (labeled only)
    # teacher: every round >= 1 trains a student online against an EMA teacher's confident pixels
    # (training/teacher.py); offline: pseudo-labels predicted once per round by the previous model
    method: str = "teacher"
    # complete: every particle of a labeled micrograph is picked; sparse: some are (unpicked pixels are
    # not background: the teacher labels them, thresholds are set for sparse picks); auto: from round 0's picks
    labels: str = "auto"
    # particles a micrograph holds, as the user expects (Topaz's -n); None: unknown. With it, whether the picks
    # are sparse is known before round 0, and round 0 learns the unpicked areas of sparse picks as
    # positive-unlabeled (that share of them is particle) instead of as background
    expected_particles: float | None = None
    positive: float = 0.95  # pseudo-label: p > positive -> particle
    negative: float = 0.05  # pseudo-label: p < negative -> background, else ignored
    pseudo_rule: str = "calibrated"  # calibrated | plain (see PSEUDO_RULES; method offline)
    # start each round from the previous round's weights (teacher method: the student, whose EMA teaches); false: a
    # student from random weights, the previous round's model as its fixed teacher
    warm_start: bool = True
    labeled_fraction: float = 0.5  # share of training patches cut from labeled micrographs (rounds >= 1)
    patches_per_epoch: int = 512  # patches one pass over the training Dataset yields (all workers)
    patience: int = 1  # stop after this many rounds without a val F1 gain
    round0_model: str | None = None  # an existing picker (run dir, round dir, model.pt) used as round 0 instead of training
    # a round trains only if its pseudo-labels mark at least this share of the particle pixels the expert
    # labels mark (as shares of their pixels); otherwise it keeps the previous model and the campaign stops
    min_pseudo_share: float = 0.1
    # how each round ranks what to label next (round_NNN/suggestions.csv): one of acquisition.STRATEGIES
    suggest: str = DEFAULT_STRATEGY

    def validate(self, where: str = "selftrain") -> None:
        if self.rounds < 1:
            raise CryopickError(f"{where}.rounds must be >= 1, got {self.rounds}")
        if not 0.0 <= self.negative < self.positive <= 1.0:
            raise CryopickError(
                f"{where}.negative and {where}.positive need 0 <= negative < positive <= 1, "
                f"got {self.negative}, {self.positive}"
            )
        if not 0.0 < self.labeled_fraction <= 1.0:
            raise CryopickError(f"{where}.labeled_fraction must be in (0, 1], got {self.labeled_fraction}")
        if self.patches_per_epoch < 1:
            raise CryopickError(f"{where}.patches_per_epoch must be >= 1, got {self.patches_per_epoch}")
        if self.method not in METHODS:
            raise CryopickError(f"{where}.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.labels not in LABEL_KINDS:
            raise CryopickError(f"{where}.labels must be one of {', '.join(LABEL_KINDS)}, got {self.labels!r}")
        if self.suggest not in STRATEGIES:
            raise CryopickError(f"{where}.suggest must be one of {', '.join(STRATEGIES)}, got {self.suggest!r}")
        if self.pseudo_rule not in PSEUDO_RULES:
            raise CryopickError(f"{where}.pseudo_rule must be one of {', '.join(PSEUDO_RULES)}, got {self.pseudo_rule!r}")
        if self.patience < 1:
            raise CryopickError(f"{where}.patience must be >= 1, got {self.patience}")
        if self.expected_particles is not None and not self.expected_particles > 0:
            raise CryopickError(f"{where}.expected_particles must be > 0 (particles per micrograph), got {self.expected_particles}")
        if not 0.0 <= self.min_pseudo_share <= 1.0:
            raise CryopickError(f"{where}.min_pseudo_share must be in [0, 1], got {self.min_pseudo_share}")
        if self.round0_model is not None and not Path(self.round0_model).expanduser().exists():
            raise CryopickError(f"{where}.round0_model does not exist", self.round0_model)


@dataclass
class TuneSection:
    """Grid searched by Ray Tune after each round (F1 on the validation picks).

    With held-back strips of the labeled micrographs as validation, the threshold is then matched to
    the expected particle count on unlabeled micrographs (:func:`cryopick.selftrain.scoring.count_matched_threshold`).
    """

    RETIRED: ClassVar[dict[str, str]] = {
        "cpu_per_trial": "was removed: Tune trials take ray.data_cpus",
        "tolerance": f"was removed: fixed at {TUNE_TOLERANCE:g} F1",
        "count_matched": "was removed: always on when the validation picks are strips of the labeled micrographs",
        "count_micrographs": f"was removed: fixed at {COUNT_MICROGRAPHS}",
    }

    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    min_distance_fractions: list[float] = field(default_factory=lambda: list(MIN_DISTANCE_FRACTIONS))

    def validate(self, where: str = "tune") -> None:
        if not self.thresholds or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise CryopickError(f"{where}.thresholds must be a non-empty list of values in [0, 1]")
        if not self.min_distance_fractions or not all(f > 0 for f in self.min_distance_fractions):
            raise CryopickError(f"{where}.min_distance_fractions must be a non-empty list of positive values")


@dataclass
class RaySection:
    """Where and how wide to run."""

    address: str | None = None  # None: $RAY_ADDRESS if set, else a local Ray
    num_cpus: int | None = None  # local Ray only
    num_workers: int = 2  # Ray Train workers
    use_gpu: str = "auto"  # auto | true | false
    cpu_per_worker: float = 0.5  # < 1 leaves CPU to Ray Data on small machines (see STACK-NOTES)
    data_cpus: float = 0.5  # CPU per read/preprocess/patch task and per Tune trial
    predict_actors: int = 0  # actor pool size of the prediction stage; 0: one per GPU, or per CPU core (one thread each)
    max_failures: int = 2  # Ray Train restarts from the last checkpoint this often
    storage_path: str | None = None  # Ray Train/Tune results; None: <campaign>/ray_results (shared FS on clusters)

    def validate(self, where: str = "ray") -> None:
        if self.num_workers < 1:
            raise CryopickError(f"{where}.num_workers must be >= 1, got {self.num_workers}")
        if self.use_gpu not in ("auto", "true", "false"):
            raise CryopickError(f"{where}.use_gpu must be auto, true or false, got {self.use_gpu!r}")
        for key in ("cpu_per_worker", "data_cpus"):
            if getattr(self, key) <= 0:
                raise CryopickError(f"{where}.{key} must be positive, got {getattr(self, key)!r}")
        if self.predict_actors < 0:
            raise CryopickError(f"{where}.predict_actors must be >= 0 (0: one per GPU or CPU core), got {self.predict_actors}")
        if self.max_failures < -1:
            raise CryopickError(f"{where}.max_failures must be >= -1 (-1 = retry forever), got {self.max_failures}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise CryopickError(f"{where}.num_cpus must be >= 1, got {self.num_cpus}")


@dataclass
class TrackingSection:
    """MLflow; the default store is ``sqlite:///<abs campaign>/mlflow.db`` (no server)."""

    uri: str | None = None
    experiment: str = "cryopick"


@dataclass
class SelftrainConfig:
    """A whole campaign; ``campaign.json`` holds this resolved."""

    RETIRED: ClassVar[dict[str, str]] = {
        "pick": "was renamed predict (tta, tile_size, tile_batch, amp); threshold, peak distance and border are chosen each round",
    }

    out: str | None = None  # campaign directory
    name: str | None = None  # campaign / MLflow parent run name; default: the directory's name
    data: DataSection = field(default_factory=DataSection)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: HeatmapConfig = field(default_factory=HeatmapConfig)
    selftrain: RoundsSection = field(default_factory=RoundsSection)
    tune: TuneSection = field(default_factory=TuneSection)
    ray: RaySection = field(default_factory=RaySection)
    tracking: TrackingSection = field(default_factory=TrackingSection)

    def validate(self, where: str = "") -> None:
        if not self.out:
            raise CryopickError("out (the campaign directory) is not set (config key out or --out)")
        if self.train.patch_size is not None and self.train.patch_size % 2**self.model.depth:
            raise CryopickError(
                f"train.patch_size ({self.train.patch_size}) must be a multiple of 2**model.depth ({2**self.model.depth})"
            )
        if not self.name:
            self.name = Path(self.out or "").name

    @property
    def campaign_dir(self) -> Path:
        return Path(self.out or "").expanduser().resolve()

    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.campaign_dir / 'mlflow.db'}"

    def as_dict(self) -> dict[str, Any]:
        return to_dict(self)


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_key(d, "train.steps", 5)`` -> ``d["train"]["steps"] = 5`` (creating sections)."""
    *sections, key = dotted.split(".")
    node = data
    for s in sections:
        node = node.setdefault(s, {})
        if not isinstance(node, dict):
            raise CryopickError(f"config key {s} must be a mapping to set {dotted}")
    node[key] = value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SelftrainConfig:
    """YAML/JSON file (optional) overlaid with dotted-key ``overrides`` -> validated config.

    Relative micrograph/coords paths in a file are taken relative to the file's folder, so a
    config works from any working directory.
    """
    raw: dict[str, Any] = load_yaml(path) if path is not None else {}
    if path is not None:
        base = Path(path).resolve().parent
        data = raw.get("data")
        if isinstance(data, dict):
            for key in ("labeled", "unlabeled", "validation", "test"):
                if isinstance(data.get(key), list):
                    data[key] = [_rebase(base, p) for p in data[key]]
            if isinstance(data.get("coords"), str) and data["coords"]:
                data["coords"] = _rebase(base, data["coords"])
        if isinstance(raw.get("out"), str) and raw["out"]:
            raw["out"] = _rebase(base, raw["out"])
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_key(raw, dotted, value)
    return resolve_campaign_geometry(from_dict(SelftrainConfig, raw, ""))


def resolve_campaign_geometry(cfg: SelftrainConfig) -> SelftrainConfig:
    """Binning and patch edge from the particle diameter where the config leaves them to the defaults.

    A campaign being resumed keeps the binning and patch edge it started with (also one started before
    binning followed the diameter), so leaving them unset never turns a resume into a changed setting.
    """
    from cryopick.training.patches import resolve_geometry

    stored_file = cfg.campaign_dir / "campaign.json" if cfg.out else None
    if stored_file is not None and stored_file.is_file():
        import json

        stored = json.loads(stored_file.read_text())
        if cfg.preprocess.bin is None and cfg.preprocess.target_pixel_size is None:
            cfg.preprocess.bin = (stored.get("preprocess") or {}).get("bin")
        if cfg.train.patch_size is None:
            cfg.train.patch_size = (stored.get("train") or {}).get("patch_size")

    pixel_size = cfg.data.pixel_size
    if cfg.preprocess.target_pixel_size is not None and pixel_size is None and cfg.data.labeled:
        from cryopick.io.manifest import resolve_micrographs
        from cryopick.io.micrograph import read_pixel_size

        pixel_size = read_pixel_size(resolve_micrographs(cfg.data.labeled)[0])
    cfg.preprocess, cfg.train = resolve_geometry(cfg.preprocess, cfg.train, cfg.data.diameter, pixel_size, 2**cfg.model.depth)
    return cfg


def _rebase(base: Path, p: Any) -> Any:
    if not isinstance(p, str) or Path(p).expanduser().is_absolute():
        return p
    return str(base / p)


@dataclass
class ResolvedData:
    """Micrograph lists after glob/manifest expansion, checked to exist.

    ``labels``: micrographs labeled in the campaign since it started (stem -> ``labels/<stem>.star``);
    they are in ``labeled``, and their picks come from there instead of ``coords``. ``boxes``: those of
    them labeled in regions only (stem -> boxes, ORIGINAL px), which validate on a strip of each region
    and show the edge band only along the edges they reach.
    """

    labeled: list[Path]
    unlabeled: list[Path]
    validation: list[Path]
    test: list[Path]
    coords: Path
    labels: dict[str, Path] = field(default_factory=dict)
    boxes: dict[str, tuple[Box, ...]] = field(default_factory=dict)

    def coords_file(self, mic: Path) -> Path:
        """The pick file of a labeled micrograph: the campaign's own label, else the one in ``coords``."""
        from cryopick.training.dataset import coords_for

        return self.labels.get(Path(mic).stem) or coords_for(Path(mic), self.coords)

    def take_labels(self, labels: dict[str, Path], boxes: dict[str, tuple[Box, ...]] | None = None
                    ) -> list[Path]:
        """Move the unlabeled micrographs that ``labels`` (stem -> pick file) covers to the labeled set; return them.

        ``boxes``: the regions of those labeled in regions only (stem -> boxes).
        """
        moved = [m for m in self.unlabeled if m.stem in labels]
        self.unlabeled = [m for m in self.unlabeled if m.stem not in labels]
        self.labeled = self.labeled + moved
        self.labels.update({m.stem: labels[m.stem] for m in moved})
        self.boxes.update({m.stem: (boxes or {})[m.stem] for m in moved if m.stem in (boxes or {})})
        return moved

    def take_campaign_labels(self, campaign: Path) -> tuple[dict[str, Label], list[Path]]:
        """:meth:`take_labels` with the labels in ``campaign/labels``; return those labels and the micrographs moved."""
        from cryopick.selftrain.labels import read_labels

        labels = read_labels(campaign)
        moved = self.take_labels({stem: label.path for stem, label in labels.items()},
                                 {stem: label.boxes for stem, label in labels.items() if label.boxes is not None})
        return labels, moved

    @property
    def complete(self) -> list[Path]:
        """Labeled micrographs whose labels cover them whole (a sample of a micrograph's particle density)."""
        return [m for m in self.labeled if m.stem not in self.boxes]

    @property
    def regions_only(self) -> bool:
        """Whether every labeled micrograph is labeled in regions only (complete inside them, by definition)."""
        return bool(self.labeled) and not self.complete


def resolve_data(cfg: SelftrainConfig) -> ResolvedData:
    """Expand and check every path before a cluster is asked to do anything.

    Raises:
        CryopickError: a missing file/pattern, no labeled micrographs, no coords directory, a
            labeled/validation/test micrograph without a coordinate file, or overlapping roles.
    """
    from cryopick.training.dataset import coords_for
    from cryopick.io.manifest import resolve_micrographs
    from cryopick.selftrain.labels import labels_dir

    d = cfg.data
    if not d.labeled and not any(labels_dir(cfg.campaign_dir).glob("*.star")):
        raise CryopickError("data.labeled lists no micrographs (round 0 needs expert picks: list labeled micrographs, "
                            "or label regions of unlabeled ones into the campaign's labels/ folder)")
    if not d.coords:
        raise CryopickError("data.coords is not set (the directory of expert pick files)")
    coords = Path(d.coords).expanduser().resolve()
    if not coords.is_dir():
        raise CryopickError("data.coords: no such directory", coords)
    lists: dict[str, list[Path]] = {}
    for key in ("labeled", "unlabeled", "validation", "test"):
        items = getattr(d, key)
        try:
            lists[key] = [p.resolve() for p in resolve_micrographs(items)] if items else []
        except CryopickError as exc:
            raise CryopickError(f"data.{key}: {exc}") from None
    for key in ("labeled", "validation", "test"):
        for mic in lists[key]:
            try:
                coords_for(mic, coords)
            except CryopickError as exc:
                raise CryopickError(f"data.{key}: {exc}") from None
    seen: dict[Path, str] = {}
    stems: dict[str, Path] = {}
    for key, mics in lists.items():
        for mic in mics:
            if mic in seen:
                raise CryopickError(f"data.{key}: {mic.name} is also listed in data.{seen[mic]}")
            if mic.stem in stems:  # outputs (heatmaps, picks, previews) are named by stem
                raise CryopickError(f"data.{key}: two micrographs are named {mic.stem} ({stems[mic.stem]} and {mic})")
            seen[mic], stems[mic.stem] = key, mic
    if not lists["validation"] and cfg.train.val_fraction <= 0:
        raise CryopickError("no validation picks: give data.validation or set train.val_fraction > 0")
    return ResolvedData(lists["labeled"], lists["unlabeled"], lists["validation"], lists["test"], coords)
