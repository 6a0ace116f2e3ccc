"""What a browser shows: the interactive page of a report's runs (``page``), the step inspector of a
trainer run (``inspector``), and the headless Chromium that tests and screenshots use
(``browser``).

Imports only the layers below: ``base`` to ``experiments``.
"""
