"""Report building blocks: notebook context and display helpers, HTML rendering, the cycle site.

- `context.NotebookContext` — what a template gets from `me.cycle.notebook_context`: the checked
  parameters, cached data, `record()` for headline numbers and `export_table()`.
- `display` — escaped Markdown/HTML helpers (`md`, `table`, `notice`) used by the templates.
- `render` — nbconvert to offline HTML (code hidden, plus a "show code" copy).
- `site` — the cycle index, the list of cycles and the CSV/Excel table export.
"""
from __future__ import annotations

from msme_eval.report.display import md, notice, table

__all__ = ["md", "notice", "table"]
