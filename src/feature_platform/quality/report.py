"""The drift report: one HTML page per run, self-contained (inline SVG, no script), with
each feature's reference and current distributions side by side, its score and verdict;
drifted features first."""

from __future__ import annotations

from html import escape

from feature_platform.quality.drift import Histogram
from feature_platform.quality.monitor import Compared, Run

BAR_WIDTH, BAR_GAP, HEIGHT = 14, 10, 120
REFERENCE_COLOUR, CURRENT_COLOUR = "#8da0cb", "#fc8d62"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; } .meta { color: #555; }
.feature { border: 1px solid #ddd; border-radius: 6px; padding: 1rem; margin: 1rem 0; }
.drifted { border-color: #d33; background: #fff6f6; }
.verdict { font-weight: bold; } .drifted .verdict { color: #c00; }
table.scores td, table.scores th { padding: 0 0.8rem 0 0; text-align: left; }
.legend span { display: inline-block; width: 0.8rem; height: 0.8rem; margin: 0 0.3rem; }
svg text { font-size: 9px; fill: #444; }
"""


def html(run: Run) -> str:
    """The page for `run`."""
    ordered = sorted(run.compared, key=lambda c: (not c.result.drifted, c.view, c.result.feature))
    drifted = len(run.drifted)
    head = (
        f"<h1>Feature drift: {drifted} of {len(run.compared)} feature(s) drifted</h1>"
        f"<p class='meta'>Reference: {escape(run.reference)}<br>"
        f"Current: {escape(run.current)}</p>"
        "<p class='legend'>"
        f"<span style='background:{REFERENCE_COLOUR}'></span>reference"
        f"<span style='background:{CURRENT_COLOUR}'></span>current</p>"
    )
    body = "".join(_feature(c) for c in ordered)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Feature drift</title><style>{_STYLE}</style></head>"
        f"<body>{head}{body}</body></html>"
    )


def _feature(compared: Compared) -> str:
    result = compared.result
    verdict = "drifted" if result.drifted else "stable"
    rows = "".join(
        f"<tr><td>{escape(s.test)}</td><td>{s.value:.4g}</td>"
        f"<td>{'<' if s.test in ('ks', 'chi2') else '<='} {s.threshold:g}</td>"
        f"<td>{'drifted' if s.drifted else 'ok'}</td></tr>"
        for s in result.scores
    )
    return (
        f"<section class='feature {verdict if result.drifted else ''}'>"
        f"<h2>{escape(compared.view)}.{escape(result.feature)} "
        f"<span class='verdict'>{verdict}</span></h2>"
        f"<p class='meta'>{result.kind}; {result.reference_rows:,} reference rows, "
        f"{result.current_rows:,} current rows</p>"
        "<table class='scores'><tr><th>test</th><th>score</th><th>passes when</th>"
        f"<th></th></tr>{rows}</table>{_bars(result.histogram)}</section>"
    )


def _bars(histogram: Histogram) -> str:
    """Grouped bars: per bin the reference share beside the current one."""
    labels, reference, current = histogram.labels, histogram.reference, histogram.current
    top = max([*reference, *current, 1e-9])
    group = 2 * BAR_WIDTH + BAR_GAP
    width = max(group * len(labels) + 80, 200)  # room for the last rotated label
    parts = []
    for i, (label, ref, cur) in enumerate(zip(labels, reference, current, strict=True)):
        x = i * group
        for offset, share, colour in ((0, ref, REFERENCE_COLOUR), (BAR_WIDTH, cur, CURRENT_COLOUR)):
            h = HEIGHT * share / top
            parts.append(
                f"<rect x='{x + offset}' y='{HEIGHT - h:.1f}' width='{BAR_WIDTH - 1}' "
                f"height='{h:.1f}' fill='{colour}'><title>{escape(label)}: "
                f"{share:.1%}</title></rect>"
            )
        parts.append(
            f"<text transform='translate({x + BAR_WIDTH},{HEIGHT + 8}) rotate(40)'>"
            f"{escape(label[:18])}</text>"
        )
    return (
        f"<svg width='{width}' height='{HEIGHT + 70}' role='img' "
        f"aria-label='reference and current distributions'>{''.join(parts)}</svg>"
    )
