"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks``).

- The home page is the README: ``docs/index.md`` only names its source, and the page's
  Markdown is ``README.md`` with its ``docs/...`` links made relative to the site, so the two
  cannot drift apart.
- The module listing of the Architecture page is regenerated from ``src/azopg`` (each module's
  line count and the first line of its docstring), so it cannot go stale.
- Sphinx roles in docstrings (``:class:`~azopg.x.Y```) are shown as plain code: the docstrings
  are numpydoc with Sphinx cross-reference roles, and mkdocstrings renders the role's target as
  code but keeps the role's name in front of it. The role name is dropped and, for a ``~``
  target, only the last component kept, as Sphinx shows it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

LISTING = re.compile(r"(<!-- module listing[^>]*-->\n```\n).*?(\n```)", re.DOTALL)
LAYERS = ("model", "plants", "method", "engine", "run", "cli")
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):<code>(~?)([^<]+)</code>")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def _summary(path: Path) -> tuple[int, str]:
    text = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(text)) or ""
    return len(text.splitlines()), (doc.strip().splitlines() or [""])[0].rstrip(".")


def module_listing(package: Path) -> str:
    """``src/azopg/`` as a tree: every module with its line count and docstring's first line."""
    lines = [f"{package.parent.name}/{package.name}/"]

    def entry(path: Path, indent: int) -> None:
        count, doc = _summary(path)
        lines.append(f"{' ' * indent}{path.name:<{26 - indent}}{count:>5}  {doc}")

    for path in sorted(package.glob("*.py")):
        if not path.name.startswith("__"):
            entry(path, 2)
    for layer in LAYERS:
        lines.append(f"  {layer}/  ({_summary(package / layer / '__init__.py')[1]})")
        for path in sorted((package / layer).glob("*.py")):
            if path.name != "__init__.py" or layer == "cli":
                entry(path, 4)
    for name in ("__init__.py", "__main__.py"):
        entry(package / name, 2)
    return "\n".join(lines)


def on_page_markdown(markdown: str, *, page: Any, config: Any, **kwargs: Any) -> str:
    root = Path(config.config_file_path).parent
    if page.file.src_uri == "index.md":
        return (root / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")
    if page.file.src_uri == "architecture.md":
        listing = module_listing(root / "src" / "azopg")
        return LISTING.sub(lambda m: m.group(1) + listing + m.group(2), markdown)
    return markdown


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(_code, html)
