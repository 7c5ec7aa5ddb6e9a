"""The Ray layer of cryopick, the only package that imports Ray (besides ``pipelines/``).

Submodules import Ray lazily, so ``import cryopick.distributed`` costs nothing.

- :mod:`~cryopick.distributed.connect`: the one way to connect to (or start) Ray.
- :mod:`~cryopick.distributed.data`: micrograph rows -> read/preprocess/patch ``map_batches`` stages.
- :mod:`~cryopick.distributed.train_loop`: ``TorchTrainer`` (gloo on CPU, nccl on GPU) with checkpoints.
- :mod:`~cryopick.distributed.predict`: heatmaps by an actor pool that loads the model once per actor.
- :mod:`~cryopick.distributed.tune`: Ray Tune grid over threshold x peak distance (F1 on validation).
- :mod:`~cryopick.distributed.tracking`: MLflow parent/nested runs (driver only).
- :mod:`~cryopick.distributed.orchestrator`: the self-training rounds.
- :mod:`~cryopick.distributed.batch`: a batch run's actor pool.
"""
