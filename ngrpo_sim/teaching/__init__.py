"""What the notebooks stand on: small computations and figures made for teaching (``teaching``) and
the headless runner that executes the notebooks in the tests (``notebook_runner``).

Imports only the layers below: ``base`` to ``reports``.
"""
