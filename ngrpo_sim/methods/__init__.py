"""The one definition of each method: advantage estimators (``advantages``), the presets that
combine an estimator with a clip range, a group filter and a loss aggregation, and the registry
``METHODS`` (``presets``), NGRPO's rivals (``rival_advantages``), advantages over a flat batch
of answers tagged with their group (``groups``), the clipped surrogate (``surrogate``), and pass@k
and entropy (``metrics``).

Imports only ``ngrpo_sim.base``. Everything else that names a method takes it from here.
"""
