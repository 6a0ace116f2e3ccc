"""The one way text from a run folder enters the project's HTML.

Method names, prompts, answers, config values and folder names come from files anyone can edit;
the step inspector and the interactive page pass each of them through ``escape`` before it meets
markup, so that a ``<script>`` in a prompt is shown, never run.
"""

from __future__ import annotations

import html


def escape(value) -> str:
    """``str(value)`` with ``&``, ``<``, ``>``, ``"`` and ``'`` written as character references:
    literal text inside an element and inside a quoted attribute value."""
    return html.escape(str(value), quote=True)
