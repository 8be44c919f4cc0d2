"""Experiment drivers built on the task generators of :mod:`lrnn_lm.tasks`: a length-generalisation evaluation
(``python -m lrnn_lm.experiments.evaluate``), its tables and plots (:mod:`.report`), sweeps of train.py runs with
their Table 3-style report (``python -m lrnn_lm.experiments.sweep``, :mod:`.sweep_report`) and an lm-eval export
of fixed test sets (``python -m lrnn_lm.experiments.export_lm_eval``)."""
