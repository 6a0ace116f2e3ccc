"""``ngrpo-sim report``: the headline settings and the verdict helpers every section shares
(``claims``), the report itself with the paper's claims (``report``), and its sections on tokens
(``token_report``), rivals (``rivals_report``) and the clip (``clipping_report``).

Imports only the layers below: ``base`` to ``pages``. Sections import ``claims``, never each
other's modules or ``report``.
"""
