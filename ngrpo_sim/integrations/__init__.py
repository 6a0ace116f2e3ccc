"""NGRPO inside the training engines that users scale out to, without forking them.

* ``verl``: an ``ngrpo`` advantage estimator registered with verl's estimator registry and loaded
  by verl's ``verl.plugins`` entry point, plus the reward-side key that makes verl's group filter
  drop only all-correct groups (``pip install ngrpo-sim[verl]``);
* ``trl``: ``NGRPOTrainer``, a subclass of TRL's ``GRPOTrainer``, and its ``NGRPOConfig``
  (``pip install ngrpo-sim[trl]``).

Both also train NGRPO's rivals whose advantage needs only the rewards (MaxRL, QAE, AsymRE, the
shifted baseline), each with its ``ngrpo_sim`` definition; verl's batches, flat and with groups of
varying size, go through ``ngrpo_sim.methods.groups``.

Imports only ``base`` and ``methods``, so that an engine's process loads none of the simulators;
importing this package imports neither engine (each engine module imports its engine itself).
The method's math is not repeated here: the engines train exactly the method that the rest of the
project analyses. ``docs/scaling_out.md`` has the launch commands.
"""
