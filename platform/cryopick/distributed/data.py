"""Training data as a Ray Dataset: micrograph rows -> [read + preprocess + mask] -> [patches].

Only paths travel from the driver (``ray.data.from_items``, one block per micrograph); reading
with mrcfile, preprocessing, building the (pseudo-)label mask and cutting random patches run as
``map_batches`` tasks on the cluster. The Dataset is lazy and streamed: each pass (epoch) re-runs
the stages and yields fresh random patches, and at most a few micrographs are in flight at once,
so memory does not grow with the number of micrographs. Ray Train splits it across workers with
``streaming_split(equal=True)``, so every worker sees a disjoint shard of the same size.

The stage functions are plain numpy functions of a batch dict (testable without Ray).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryopick.config import PreprocessConfig, from_dict
from cryopick.io.coords import Box
from cryopick.training.dataset import coords_for, held_strip, label_radius, load_labeled, make_train_item, make_val_item
from cryopick.io.micrograph import read_micrograph
from cryopick.selftrain.labels import label_boxes
from cryopick.training.patches import sample_patches
from cryopick.preprocessing.binning import preprocess
from cryopick.preprocessing.labels import IGNORE, trainable
from cryopick.selftrain.pseudo import PseudoLabeler
from cryopick.runtime import CPU_ENV

if TYPE_CHECKING:
    import ray.data

    from cryopick.training.dataset import ValItem

LABELED, PSEUDO, UNLABELED = "labeled", "pseudo", "unlabeled"


@dataclass
class MicrographRow:
    """One micrograph of a training Dataset (what the driver sends: paths, no pixels).

    Attributes:
        path: the micrograph file.
        kind: ``labeled`` (``label`` = coordinate file), ``pseudo`` (``label`` = heatmap .npz) or ``unlabeled``
            (no label: every pixel ignored, for a teacher to fill on the training worker).
        n_patches: patches to cut from it per epoch.
        hold_back: ignore the bottom ``val_fraction`` of rows (kept for validation).
    """

    path: str
    kind: str
    label: str
    n_patches: int
    hold_back: bool = False


@dataclass
class StageParams:
    """Everything the read/mask stage needs besides the row (sent once as fn kwargs)."""

    diameter: float
    preprocess: dict[str, Any]
    val_fraction: float
    pseudo: dict[str, Any]  # PseudoLabeler fields
    pixel_size: float | None = None
    sparse: bool = False  # expert picks are some of the particles: unpicked pixels ignored, not background
    # with sparse picks, the share of unpicked pixels that lie on a particle: > 0 teaches them positive-unlabeled
    # (training/loss.py) instead of ignoring them
    prior: float = 0.0


def node_id() -> str:
    """The Ray node this code runs on ('local' outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - only a label for tests and logs
        pass
    return "local"


def load_micrographs(batch: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Stage 1: read, preprocess and build the target mask of each micrograph row.

    Returns a batch with ``image`` (h, w) float32, ``mask`` (h, w) int8 in {-3, -2, -1, 0, 1}, ``name``, ``kind``,
    ``n_patches`` and ``node`` (the Ray node that did the work) per row.
    """
    p = StageParams(**params)
    pre = from_dict(PreprocessConfig, p.preprocess, "preprocess")
    out: dict[str, list[Any]] = {"name": [], "kind": [], "image": [], "mask": [], "n_patches": [], "node": []}
    for path, kind, label, n, hold in zip(batch["path"], batch["kind"], batch["label"], batch["n_patches"], batch["hold_back"]):
        path = Path(str(path))
        if kind == LABELED:
            lm = load_labeled(path, Path(str(label)).parent, p.diameter, pre, p.pixel_size)
            boxes = label_boxes(Path(str(label)))  # regions labeled in the campaign: the rest is ignored
            shape, scale = lm.binned.image.shape, lm.binned.scale
            held = [held_strip(shape, scale, p.val_fraction, b) for b in (boxes or [None])] if hold else []
            item = make_train_item(lm, label_radius(p.diameter, lm.binned.mean_scale), held, boxes, sparse=p.sparse,
                                   positive_unlabeled=p.prior > 0)
            image, mask, name = item.image, item.mask, item.name
        elif kind == UNLABELED:
            image = preprocess(read_micrograph(path, p.pixel_size).data, pre, p.pixel_size).image
            mask, name = np.full(image.shape, IGNORE, dtype=np.int8), path.stem
        else:
            b = preprocess(read_micrograph(path, p.pixel_size).data, pre, p.pixel_size)
            with np.load(str(label)) as z:
                heatmap = z["heatmap"].astype(np.float32)
            if heatmap.shape != b.image.shape:
                raise ValueError(f"{label}: heatmap {heatmap.shape} does not match preprocessed {path.name} {b.image.shape}")
            labeler = PseudoLabeler(**p.pseudo)
            image, mask, name = b.image, labeler.mask(heatmap, p.diameter, b.mean_scale), path.stem
        out["name"].append(name)
        out["kind"].append(str(kind))
        out["image"].append(image)
        out["mask"].append(mask)
        out["n_patches"].append(int(n))
        out["node"].append(node_id())
    return {k: (np.stack(v) if k in ("image", "mask") and len({a.shape for a in v}) == 1 else _obj(v)) for k, v in out.items()}


def _obj(values: list[Any]) -> np.ndarray:
    """A 1-D object array (ragged images or strings) that numpy will not try to stack."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def cut_patches(
    batch: dict[str, np.ndarray], patch_size: int, seed: int | None = None, intensity: float = 0.0
) -> dict[str, np.ndarray]:
    """Stage 2: ``n_patches`` random augmented patches from each micrograph (``intensity``: see ``sample_patches``).

    The generator is fresh per call (``seed`` None), so every epoch sees new patches. Patches of unlabeled
    micrographs are the teacher's weak view: flipped and rotated, no intensity jitter.

    Returns:
        image: (N, P, P) float32; mask: (N, P, P) int8; name, patch_id, node: (N,) str.
    """
    from cryopick.training.dataset import TrainItem

    rng = np.random.default_rng(seed)
    images, masks, names, ids, nodes = [], [], [], [], []
    kinds = batch.get("kind", np.full(len(batch["name"]), LABELED))
    for name, kind, image, mask, n, node in zip(batch["name"], kinds, batch["image"], batch["mask"], batch["n_patches"], batch["node"]):
        item = TrainItem(str(name), np.asarray(image, np.float32), np.asarray(mask, np.int8))
        unlabeled = str(kind) == UNLABELED
        if int(n) < 1 or not (unlabeled or trainable(item.mask).any()):
            continue  # nothing to learn from (fully ignored pseudo-labels)
        im, mk = sample_patches([item], int(n), patch_size, rng, intensity=0.0 if unlabeled else intensity, weighted=not unlabeled)
        images.append(im[:, 0])
        masks.append(mk[:, 0])
        names += [str(name)] * int(n)
        ids += [f"{name}#{os.getpid()}-{rng.integers(1 << 62)}-{i}" for i in range(int(n))]
        nodes += [str(node)] * int(n)
    if not images:
        return {"image": np.zeros((0, patch_size, patch_size), np.float32), "mask": np.zeros((0, patch_size, patch_size), np.int8),
                "name": np.array([], dtype=str), "patch_id": np.array([], dtype=str), "node": np.array([], dtype=str)}
    return {"image": np.concatenate(images), "mask": np.concatenate(masks), "name": np.array(names),
            "patch_id": np.array(ids), "node": np.array(nodes)}


def training_rows(
    labeled: Sequence[Path],
    coords: Path | Callable[[Path], Path],
    pseudo: Sequence[tuple[Path, Path]],
    n_labeled: int,
    n_pseudo: int,
    hold_back: bool,
    unlabeled: Sequence[Path] = (),
) -> list[MicrographRow]:
    """Rows for labeled micrographs (with their coordinate files: ``coords`` is their directory or a lookup),
    pseudo-labeled ones (with heatmaps) and unlabeled ones (for an online teacher; ``n_pseudo`` patches each)."""
    lookup = _lookup(coords)
    rows = [MicrographRow(str(m), LABELED, str(lookup(m)), n_labeled, hold_back) for m in labeled]
    rows += [MicrographRow(str(m), PSEUDO, str(h), n_pseudo, False) for m, h in pseudo]
    rows += [MicrographRow(str(m), UNLABELED, "", n_pseudo, False) for m in unlabeled]
    return rows


def build_train_dataset(
    rows: Sequence[MicrographRow], params: StageParams, patch_size: int, data_cpus: float = 0.5, intensity: float = 0.0
) -> ray.data.Dataset:
    """The lazy training Dataset: one block per micrograph, two ``map_batches`` stages."""
    import ray.data

    if not rows:
        raise ValueError("no micrographs to train on")
    ds: ray.data.Dataset = ray.data.from_items([asdict(r) for r in rows], override_num_blocks=len(rows))
    env = {"env_vars": dict(CPU_ENV)}
    ds = ds.map_batches(load_micrographs, batch_size=1, num_cpus=data_cpus, fn_kwargs={"params": asdict(params)}, runtime_env=env)  # type: ignore[arg-type]  # fn_kwargs supplies the other arguments
    return ds.map_batches(cut_patches, batch_size=1, num_cpus=data_cpus, fn_kwargs={"patch_size": patch_size, "intensity": intensity}, runtime_env=env)  # type: ignore[arg-type]  # fn_kwargs supplies the other arguments


@dataclass
class ValSpec:
    """A validation source the train loop's rank 0 loads itself: a whole micrograph or a held-back strip
    (of the micrograph, or of ``box``, a region labeled in the campaign, ORIGINAL px)."""

    path: str
    coords: str
    held_back: bool
    box: list[float] | None = None


def validation_specs(validation: Sequence[Path], labeled: Sequence[Path], coords: Path | Callable[[Path], Path],
                     val_fraction: float, boxes: Mapping[str, Sequence[Box]] | None = None) -> list[ValSpec]:
    """Separate validation micrographs if given, else the held-back strip of each labeled one (of each of its
    ``boxes``, by stem, where it is labeled in regions only)."""
    lookup = _lookup(coords)
    if validation:
        return [ValSpec(str(m), str(lookup(m)), False) for m in validation]
    if val_fraction <= 0:
        return []
    boxes = boxes or {}
    return [ValSpec(str(m), str(lookup(m)), True, None if b is None else list(b))
            for m in labeled for b in boxes.get(Path(m).stem, [None])]


def _lookup(coords: Path | Callable[[Path], Path]) -> Callable[[Path], Path]:
    """A micrograph's pick file: found by stem in a directory, or by the given lookup."""
    if callable(coords):
        return coords
    return lambda m: coords_for(Path(m), Path(coords))


def load_val_items(specs: Sequence[dict[str, Any]], params: StageParams) -> list[ValItem]:
    """Validation items (preprocessed image + expert picks + scored rows) from :class:`ValSpec` dicts."""
    pre = from_dict(PreprocessConfig, params.preprocess, "preprocess")
    items = []
    for s in specs:
        spec = ValSpec(**s)
        lm = load_labeled(Path(spec.path), Path(spec.coords).parent, params.diameter, pre, params.pixel_size)
        if not spec.held_back:
            items.append(make_val_item(lm))
            continue
        box = None if spec.box is None else Box.of(spec.box)
        rows, cols = held_strip(lm.binned.image.shape, lm.binned.scale, params.val_fraction, box)
        items.append(make_val_item(lm, rows, cols))
    return items
