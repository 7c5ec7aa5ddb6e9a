"""The Ray layer of cryopick: Data pipelines, DDP training, Tune, MLflow tracking, campaigns.

Submodules import Ray lazily where they can, so ``import cryopick.distributed`` costs nothing;
``import ray`` appears only in this package and in ``pipelines/``.

- :mod:`~cryopick.distributed.data`: micrograph rows -> read/preprocess/patch ``map_batches`` stages.
- :mod:`~cryopick.distributed.train_loop`: ``TorchTrainer`` (gloo on CPU, nccl on GPU) with checkpoints.
- :mod:`~cryopick.distributed.predict`: heatmaps by an actor pool that loads the model once per actor.
- :mod:`~cryopick.distributed.tune`: Ray Tune grid over threshold x peak distance (F1 on validation).
- :mod:`~cryopick.distributed.tracking`: MLflow parent/nested runs (driver only).
- :mod:`~cryopick.distributed.orchestrator`: the self-training rounds and the campaign directory.
"""
