"""Exact analysis, no sampling: the advantage landscape of every count-based method and the gain
c(p) of its expected update (``landscape``), and the same identity with its length term for
answers made of tokens (``sequence_gain``).

Imports only ``base`` and ``methods``.
"""
