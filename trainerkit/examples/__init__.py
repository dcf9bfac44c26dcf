"""Runnable examples of trainerkit.

``python -m trainerkit.examples`` trains :class:`~trainerkit.examples.iris.IrisClassifier`
on the bundled Iris data through a configured trainer, saves it, and loads it
back (see ``trainerkit/examples/__main__.py``).

:mod:`trainerkit.examples.ddp_digits` is a PyTorch DistributedDataParallel
training run with several rank processes (``Resources(procs_per_node=2)``);
it needs the ``torch`` extra (docs/distributed.md).
"""
