"""Training dynamics on stand-ins for a language model: the one training loop every simulator
shares (``training_loop``: rollout with refill, filters, advantages, clipped minibatch updates,
expected mode, metrics), its optimisers (``optim``), the starting difficulty profile
(``profile``), and the tasks that plug into it: one-token answers (``bandit``, run by
``dynamics``) and answers made of tokens (``sequences``). Each vectorised step has a plain-loop
oracle (``reference_step``, ``reference_sequence_step``) that the tests compare it with.

Imports only ``base``, ``methods`` and ``analysis``.
"""
