"""Training a picker without Ray: labeled micrographs (``dataset``) -> random patches (``patches``) -> loss
(``loss``) -> the training loop and validation (``loop``) -> which checkpoint is kept (``checkpoint``);
``run`` is ``cryopick train``. Ray Train (:mod:`cryopick.distributed.train_loop`) runs the same step."""
