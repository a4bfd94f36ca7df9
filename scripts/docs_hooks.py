"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks``).

- The home page is the README: ``docs/index.md`` only names its source, and the page's
  Markdown is ``README.md`` with its ``docs/...`` links made relative to the site, so the two
  cannot drift apart.
- Sphinx roles in docstrings (``:class:`~azopg.x.Y```) are shown as plain code: the docstrings
  are numpydoc with Sphinx cross-reference roles, and mkdocstrings renders the role's target as
  code but keeps the role's name in front of it. The role name is dropped and, for a ``~``
  target, only the last component kept, as Sphinx shows it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):<code>(~?)([^<]+)</code>")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_markdown(markdown: str, *, page: Any, config: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    readme = Path(config.config_file_path).parent / "README.md"
    return readme.read_text(encoding="utf-8").replace("](docs/", "](")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(_code, html)
