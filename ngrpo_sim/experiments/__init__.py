"""Running and keeping simulations: many runs of many methods at once, their folders and the
store that reuses finished runs (``runs``), sweeps here, in worker processes or on Ray
(``sweep``), intervals over seeds, and the reader of the trainer's run folders
(``trainer_runs``, the only place that knows their format).

Imports only ``base``, ``methods``, ``analysis`` and ``simulators``.
"""
