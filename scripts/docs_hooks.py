"""MkDocs hook: Sphinx roles in docstrings (``:class:`~azopg.x.Y```) shown as plain code.

The docstrings are numpydoc with Sphinx cross-reference roles; mkdocstrings renders the role's
target as code but keeps the role's name in front of it. This hook drops the role name and, for
a ``~`` target, keeps only the last component, as Sphinx shows it.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):<code>(~?)([^<]+)</code>")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(_code, html)
