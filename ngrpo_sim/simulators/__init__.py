"""Training dynamics on stand-ins for a language model.

* the one loop every simulator shares (``training_loop``: rollout with refill, filters,
  advantages, clipped minibatch updates, expected mode), what a run is given (``loop_config``),
  what every task computes alike (``task_parts``), the optimisers (``optim``), the starting
  difficulty profile (``profile``) and the release's batch assembly (``release_assembly``);
* the tasks that plug into it: one-token answers (``bandit``, configured by ``dynamics``), answers
  of a few tokens over an exact prefix tree (``sequences``, ``sequence_update``,
  ``sequence_config``) and answers of hundreds of tokens over a (position, work) summary
  (``long_answers``, ``long_answer_exact``, ``long_answer_update``, ``long_answer_config``);
* plain-loop oracles of the vectorised steps, which the tests compare them with
  (``reference_step``, ``reference_sequence_step``).

Imports only ``base``, ``methods`` and ``analysis``.
"""
