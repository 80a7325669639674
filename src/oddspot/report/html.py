"""Self-contained HTML building blocks: escaping, inline images, tables and the page shell.

Everything the page needs (CSS, JavaScript, images) is inlined, so the file opens from `file://`
with no network. The only script sorts tables by a clicked column and opens/closes sections.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

Cell = Any


def esc(text: Any) -> str:
    """HTML-escaped text (quotes included)."""
    return html.escape(str(text), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for display: floats with `digits` decimals, NaN as n/a, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def data_uri(data: bytes, mime: str) -> str:
    """A base64 data: URI."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, mime: str, alt: str, cls: str = "", title: str = "") -> str:
    """An <img> with inlined bytes."""
    extra = f' class="{esc(cls)}"' if cls else ""
    extra += f' title="{esc(title)}"' if title else ""
    return f'<img src="{data_uri(data, mime)}" alt="{esc(alt)}"{extra}>'


def _sort_value(value: Cell) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return repr(float(value))
    return ""


def _cell(value: Cell, tag: str = "td") -> str:
    if isinstance(value, Raw):
        return f"<{tag}>{value.html}</{tag}>"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    attrs = f' data-value="{_sort_value(value)}" class="num"' if number else ""
    return f"<{tag}{attrs}>{esc(fmt(value))}</{tag}>"


class Raw:
    """Pre-built HTML for a table cell (not escaped), with an optional sort key."""

    def __init__(self, html_text: str, sort: float | str | None = None) -> None:
        self.html = html_text
        self.sort = sort


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], sortable: bool = False,
          foot: Sequence[Sequence[Cell]] = (), caption: str = "", cls: str = "") -> str:
    """A table; `sortable` makes every header clickable (numbers sort numerically, blanks last)."""
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    out = [f'<table class="{classes}">' if classes else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    hint = ' title="click to sort"' if sortable else ""
    th = "".join(f'<th scope="col"{hint}>{esc(h)}</th>' for h in headers)
    out.append(f"<thead><tr>{th}</tr></thead><tbody>")
    for row in rows:
        cells = []
        for v in row:
            if isinstance(v, Raw) and v.sort is not None:
                key = repr(float(v.sort)) if isinstance(v.sort, (int, float)) else esc(v.sort)
                cells.append(f'<td data-value="{key}">{v.html}</td>')
            else:
                cells.append(_cell(v))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody>")
    if foot:
        out.append("<tfoot>" + "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in foot) + "</tfoot>")
    out.append("</table>")
    return "".join(out)


def details(summary: str, body: str, open_: bool = False, cls: str = "") -> str:
    """A collapsible section (progressive disclosure)."""
    attrs = (" open" if open_ else "") + (f' class="{esc(cls)}"' if cls else "")
    return f"<details{attrs}><summary>{summary}</summary>{body}</details>"


def reliability_note(rel: Any) -> str:
    """The caption of a reliability diagram (`metrics.reliability`): what is binned, and the ECE."""
    if not isinstance(rel, dict) or rel.get("ece") is None:
        return ""
    return (f'<p class="note">Reliability diagram: test images binned by their {esc(rel.get("kind", "score"))}; '
            f'observed share of anomalous images against the mean score per bin. ECE {fmt(rel["ece"])} '
            f'over {esc(rel.get("n_images", "?"))} images.</p>')


def slug(text: str) -> str:
    """An id-safe version of `text`."""
    s = "".join(c.lower() if c.isalnum() else "-" for c in str(text)).strip("-")
    return s or "section"


CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--bg:#ffffff;--soft:#f4f6f9;--accent:#2458c6;
--bad:#c0392b;--good:#1e8449;--warn:#9a6700}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1240px;margin:0 auto;padding:20px 20px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;margin:34px 0 10px;padding-top:10px;border-top:2px solid var(--line)}
h3{font-size:17px;margin:22px 0 8px}
.meta{color:var(--muted);font-size:13px}.meta code{font-size:12px}
nav{margin:12px 0;font-size:14px}nav a{margin-right:14px}
a{color:var(--accent)}
table{border-collapse:collapse;margin:6px 0 14px;font-size:14px;background:var(--bg)}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0;color:var(--fg)}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tfoot td{font-weight:600;border-top:2px solid var(--line)}
table.sortable th{cursor:pointer;user-select:none}
.scroll{overflow-x:auto;max-width:100%}
table.wide{font-size:13.5px}table.wide th{white-space:normal;vertical-align:bottom}
table.sortable th::after{content:" ↕";color:#9aa3b2;font-size:12px}
table.sortable th[aria-sort=ascending]::after{content:" ▲";color:var(--accent)}
table.sortable th[aria-sort=descending]::after{content:" ▼";color:var(--accent)}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
.plots figure{margin:0}.plots figcaption{font-size:12px;color:var(--muted);text-align:center}
.plots img{width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0;font-size:14px}
.warn{color:var(--warn)}
.threshold{background:var(--soft);padding:8px 12px;border-radius:6px;margin:8px 0;font-size:14px}
details{border:1px solid var(--line);border-radius:6px;margin:8px 0;background:var(--bg)}
details>summary{cursor:pointer;padding:8px 12px;font-weight:600;background:var(--soft);border-radius:6px}
details[open]>summary{border-bottom:1px solid var(--line);border-radius:6px 6px 0 0}
details>div{padding:10px 12px}
.toolbar button{font:inherit;font-size:13px;margin-right:6px;padding:3px 10px;border:1px solid var(--line);border-radius:4px;background:var(--soft);cursor:pointer}
.legend{font-size:13px;color:var(--muted);margin:4px 0 8px}
.swatch{display:inline-block;width:12px;height:12px;vertical-align:-1px;border:2px solid #ff00ff;margin-right:4px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(580px,1fr));gap:12px}
.road-panels figure{margin:0 0 10px}.road-panels img{width:100%;height:auto}
.road-panels figcaption{font-size:12px;color:var(--muted)}
.card{border:1px solid var(--line);border-radius:6px;padding:8px;background:var(--bg)}
.panels{display:grid;grid-template-columns:repeat(4,1fr);gap:6px}
.panels figure{margin:0}.panels img{width:100%;height:auto;image-rendering:auto;border-radius:3px;display:block}
.panels figcaption{font-size:12px;color:var(--muted);text-align:center}
.card .name{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;word-break:break-all;margin-top:6px}
.card .score{font-size:13.5px;margin-top:2px}
.tag{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;color:#fff}
.tag.fn,.tag.fp{background:var(--bad)}.tag.tp,.tag.tn{background:var(--good)}
.meter{position:relative;height:8px;background:linear-gradient(90deg,#dfe7f5,#f7dcd8);border-radius:4px;margin:5px 0 2px}
.meter .thr{position:absolute;top:-3px;width:2px;height:14px;background:#222}
.meter .val{position:absolute;top:-2px;width:12px;height:12px;margin-left:-6px;border-radius:50%;background:var(--accent);border:2px solid #fff}
footer{margin-top:40px;color:var(--muted);font-size:12px}
@media print{details{break-inside:avoid}.toolbar{display:none}}
"""

SCRIPT = """
(function(){
  function key(td){
    var v = td.getAttribute('data-value');
    if (v !== null) { if (v === '') return null; var n = parseFloat(v); return isNaN(n) ? v.toLowerCase() : n; }
    return td.textContent.trim().toLowerCase();
  }
  function compare(a, b){
    if (a === null && b === null) return 0;
    if (a === null) return 1;
    if (b === null) return -1;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  function sortBy(table, index, th){
    var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute('aria-sort');
    th.setAttribute('aria-sort', dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(r1, r2){
      var a = key(r1.cells[index]), b = key(r2.cells[index]);
      if (a === null || b === null) return compare(a, b);
      var c = compare(a, b);
      return dir === 'ascending' ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function(th, i){
      th.tabIndex = 0;
      th.addEventListener('click', function(){ sortBy(table, i, th); });
      th.addEventListener('keydown', function(e){
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, i, th); }
      });
    });
  });
  function setAll(open){ document.querySelectorAll('details').forEach(function(d){ d.open = open; }); }
  document.querySelectorAll('[data-details]').forEach(function(b){
    b.addEventListener('click', function(){ setAll(b.getAttribute('data-details') === 'open'); });
  });
  function reveal(){
    var id = decodeURIComponent(location.hash.slice(1));
    for (var el = id && document.getElementById(id); el; el = el.parentElement) {
      if (el.tagName === 'DETAILS') el.open = true;
    }
  }
  window.addEventListener('hashchange', reveal);
  reveal();
  window.addEventListener('beforeprint', function(){ setAll(true); });
  if (location.hash === '#expand-all') setAll(true);
})();
"""


def page(title: str, body: str, meta: str = "") -> str:
    """The whole document: head with inline CSS, body, inline script at the end."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"generator\" content=\"oddspot\"><title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{esc(title)}</h1>{meta}"
        "<div class=\"toolbar\"><button type=\"button\" data-details=\"open\">expand all sections</button>"
        "<button type=\"button\" data-details=\"close\">collapse all</button></div>"
        f"{body}</main><script>{SCRIPT}</script></body></html>\n"
    )
