"""Runnable examples of trainerkit.

``python -m trainerkit.examples`` trains :class:`~trainerkit.examples.iris.IrisClassifier`
on the bundled Iris data through a configured trainer, saves it, and loads it
back (see ``trainerkit/examples/__main__.py``).
"""
