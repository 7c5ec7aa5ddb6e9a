"""Heatmaps for many micrographs with Ray Data: read/preprocess tasks -> a model actor pool.

``map_batches(HeatmapPredictor, concurrency=n)`` starts ``n`` actors that each load the model
once and then predict micrograph after micrograph (one GPU each when the cluster has GPUs).
Each heatmap goes straight to ``<out>/<stem>.npz`` (written atomically, so a retried task never
leaves half a file), and only a small row of statistics comes back to the driver, streamed; a
campaign over thousands of micrographs never holds their heatmaps in driver memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cryopick.config import HeatmapConfig, PickConfig, PreprocessConfig, from_dict
from cryopick.distributed.data import _obj, node_id
from cryopick.io.atomic import atomic_write
from cryopick.io.micrograph import read_micrograph
from cryopick.preprocessing.binning import preprocess
from cryopick.selftrain.pseudo import PseudoLabeler, coverage_row
from cryopick.runtime import CPU_ENV


def read_for_prediction(batch: dict[str, np.ndarray], preprocess_cfg: dict[str, Any], pixel_size: float | None) -> dict[str, Any]:
    """Task stage: read + preprocess -> ``image`` (h, w) float32 and ``scale`` (2,) per row."""
    pre = from_dict(PreprocessConfig, preprocess_cfg, "preprocess")
    images, scales = [], []
    for path in batch["path"]:
        b = preprocess(read_micrograph(Path(str(path)), pixel_size).data, pre, pixel_size)
        images.append(b.image)
        scales.append(np.array(b.scale, dtype=np.float64))
    return {"path": batch["path"], "out": batch["out"], "image": _obj(images), "scale": np.stack(scales), "node_read": _obj([node_id()] * len(images))}


class HeatmapPredictor:
    """Actor stage: loads the picker once, writes one heatmap ``.npz`` per micrograph.

    The ``.npz`` holds ``heatmap`` (h, w) float16, ``scale`` (2,), with ``keep_image`` the binned
    ``image`` (h, w) float16 (for previews) and with ``keep_spread`` the ``spread`` (h, w) float16 of
    the test-time-augmentation views (for labeling suggestions). With a ``pseudo`` labeler the
    returned row also carries that micrograph's pseudo-label coverage.
    """

    def __init__(self, model_path: str, heatmap: dict[str, Any], keep_image: bool = False,
                 pseudo: dict[str, Any] | None = None, diameter: float = 0.0, threads: int = 1,
                 keep_spread: bool = False) -> None:
        import torch

        from cryopick.inference.picker import load_picker
        from cryopick.inference.tiling import resolve_device

        torch.set_num_threads(max(1, threads))
        self.model, self.meta = load_picker(model_path, resolve_device("auto"))
        self.pick = from_dict(PickConfig, heatmap, "predict")
        self.keep_image = keep_image
        self.keep_spread = keep_spread
        self.labeler = PseudoLabeler(**pseudo) if pseudo is not None else None
        self.diameter = diameter or self.meta.diameter

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cryopick.inference.picker import heatmap_with_retry, with_oom_retry
        from cryopick.inference.tiling import predict_heatmap_spread

        rows: dict[str, list[Any]] = {"name": [], "npz": [], "positive": [], "negative": [], "ignored": [], "pixels": [], "node": []}
        for path, out, image, scale in zip(batch["path"], batch["out"], batch["image"], batch["scale"]):
            image = np.asarray(image, dtype=np.float32)
            extra: dict[str, Any] = {"image": image.astype(np.float16)} if self.keep_image else {}
            if self.keep_spread:
                heatmap, spread = with_oom_retry(partial(predict_heatmap_spread, self.model, image), self.pick)
                extra["spread"] = spread.astype(np.float16)
            else:  # no sum of squares where nobody reads the spread
                heatmap = heatmap_with_retry(self.model, image, self.pick)
            with atomic_write(Path(str(out)), suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, heatmap=heatmap.astype(np.float16), scale=np.asarray(scale, np.float64), **extra)
            cov = {"positive": 0.0, "negative": 0.0, "ignored": 0.0, "pixels": float(heatmap.size)}
            if self.labeler is not None:
                mean_scale = float(np.sqrt(scale[0] * scale[1]))
                cov = coverage_row(self.labeler.mask(heatmap.astype(np.float16).astype(np.float32), self.diameter, mean_scale))
            rows["name"].append(Path(str(path)).stem)
            rows["npz"].append(str(out))
            for k in ("positive", "negative", "ignored", "pixels"):
                rows[k].append(cov[k])
            rows["node"].append(node_id())
        return {k: np.array(v) for k, v in rows.items()}


def predict_to_dir(
    micrographs: Sequence[Path],
    out_dir: Path,
    model_path: Path,
    preprocess_cfg: PreprocessConfig,
    heatmap: HeatmapConfig,
    *,
    actors: int = 0,
    use_gpu: bool = False,
    data_cpus: float = 0.5,
    keep_image: bool = False,
    keep_spread: bool = False,
    pseudo: PseudoLabeler | None = None,
    diameter: float = 0.0,
    pixel_size: float | None = None,
    skip_existing: bool = True,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Predict ``micrographs`` into ``out_dir/<stem>.npz``; yield one statistics row per micrograph.

    Micrographs whose ``.npz`` already exists are skipped (``skip_existing``: a rerun of an
    interrupted stage redoes only what is missing) and yield a row recomputed from the file.
    """
    import ray.data
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    todo: list[tuple[Path, Path]] = []
    done: list[tuple[Path, Path]] = []
    for m in micrographs:
        target = out_dir / f"{m.stem}.npz"
        (done if skip_existing and target.is_file() else todo).append((m, target))
    for m, target in done:
        yield _row_from_file(m, target, pseudo, diameter)
    if not todo:
        return
    env = {"env_vars": dict(CPU_ENV)}  # OpenMP must not spin in actors sharing small machines
    pool = _pool(actors, use_gpu, len(todo))
    ds: ray.data.Dataset = ray.data.from_items([{"path": str(m), "out": str(t)} for m, t in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(read_for_prediction, batch_size=1, num_cpus=data_cpus,  # type: ignore[arg-type]  # fn_kwargs supplies the other arguments
                        fn_kwargs={"preprocess_cfg": asdict(preprocess_cfg), "pixel_size": pixel_size}, runtime_env=env)
    ds = ds.map_batches(
        HeatmapPredictor, batch_size=1, compute=pool,
        num_cpus=data_cpus if not use_gpu else 1, num_gpus=1 if use_gpu else 0,
        fn_constructor_kwargs={"model_path": str(model_path), "heatmap": asdict(heatmap), "keep_image": keep_image,
                               "keep_spread": keep_spread,
                               "pseudo": asdict(pseudo) if pseudo is not None else None, "diameter": diameter,
                               "threads": max(1, int(round(data_cpus)))},
        runtime_env=env,
    )
    for row in tqdm(ds.iter_rows(), total=len(todo), desc=f"predict {out_dir.name}", unit="mic", disable=not progress):
        yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def _pool(actors: int, use_gpu: bool, todo: int) -> Any:
    """The actor pool for ``todo`` micrographs: ``actors`` of them, or for 0 one per GPU (``use_gpu``) or per CPU the
    cluster holds, never more actors than micrographs. The 0 pool asks for all of them at once and starts work with
    the first; those a busy cluster cannot place yet wait for resources.

    Each CPU actor runs one thread, so one actor per core keeps every core busy with a micrograph of its own.
    """
    import ray
    import ray.data

    if actors > 0:
        return ray.data.ActorPoolStrategy(size=max(1, min(actors, todo)))
    most = int(ray.cluster_resources().get("GPU" if use_gpu else "CPU", 1))
    size = max(1, min(most, todo))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=size, initial_size=size)


def _row_from_file(mic: Path, npz: Path, pseudo: PseudoLabeler | None, diameter: float) -> dict[str, Any]:
    with np.load(npz) as z:
        heatmap = z["heatmap"].astype(np.float32)
        scale = z["scale"]
    cov = {"positive": 0.0, "negative": 0.0, "ignored": 0.0, "pixels": float(heatmap.size)}
    if pseudo is not None:
        cov = coverage_row(pseudo.mask(heatmap, diameter, float(np.sqrt(scale[0] * scale[1]))))
    return {"name": mic.stem, "npz": str(npz), **cov, "node": "cached"}
