"""The weekly trend as plain geometry for a hand-written SVG template: bars and ticks
in a 320-unit-wide view box (scaled to the screen, so on a phone's 360 px the text
stays at about 12 px). No charting library: pygal writes <style> elements and style
attributes, which the Content-Security-Policy (style-src 'self') forbids; presentation
attributes (fill, x, y...) are not styles."""

from __future__ import annotations

from dataclasses import dataclass

from signflow.core.stats.report import Report

WIDTH = 320
LEFT, RIGHT = 36, 6
PANEL_HEIGHT = 150
GAP = 84
TOP = 30
MAX_X_LABELS = 5


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int


@dataclass(frozen=True)
class Series:
    name: str  # the msgid of its legend
    colour: str  # a fill attribute (an <img> SVG cannot use the page stylesheet)
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Panel:
    title: str  # msgid
    unit: str  # msgid of the axis unit
    top: float
    bottom: float
    top_value: int
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: float
    right: float
    panels: tuple[Panel, ...]
    x_labels: tuple[tuple[float, str], ...]


def _nice(value: int) -> int:
    """The axis top: the smallest 1, 2 or 5 times a power of ten at or over `value`."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def _panel(title: str, unit: str, top: float, values: list[tuple[str, str, list[int]]],
           slot: float) -> Panel:
    top_value = _nice(max([v for _, _, vs in values for v in vs] + [1]))
    bottom = top + PANEL_HEIGHT
    width = slot * 0.8 / len(values)
    series = []
    for j, (name, colour, vs) in enumerate(values):
        bars = []
        for i, v in enumerate(vs):
            h = PANEL_HEIGHT * v / top_value
            bars.append(Bar(x=round(LEFT + i * slot + slot * 0.1 + j * width, 2), y=round(bottom - h, 2),
                            width=round(width, 2), height=round(h, 2), value=v))
        series.append(Series(name=name, colour=colour, bars=tuple(bars)))
    return Panel(title=title, unit=unit, top=top, bottom=bottom, top_value=top_value,
                 series=tuple(series))


def weekly(report: Report) -> Chart:
    weeks = report.weeks
    slot = (WIDTH - LEFT - RIGHT) / max(len(weeks), 1)
    counts = _panel("Requests per week", "requests", TOP, [
        ("uploaded", "#9aa5b1", [w.requests for w in weeks]),
        ("signed", "#1f6feb", [w.signed for w in weeks])], slot)
    # Minutes, rounded up: a request signed in 10 s still shows a bar.
    minutes = _panel("Upload to signature", "minutes", counts.bottom + GAP, [
        ("median", "#1f6feb", [-(-(w.to_signed.median or 0) // 60) for w in weeks]),
        ("90th percentile", "#b35900", [-(-(w.to_signed.p90 or 0) // 60) for w in weeks])], slot)
    every = max(1, -(-len(weeks) // MAX_X_LABELS))
    labels = tuple((round(LEFT + (i + 0.5) * slot, 2), w.first_day.strftime("%d/%m"))
                   for i, w in enumerate(weeks) if i % every == 0)
    return Chart(width=WIDTH, height=int(minutes.bottom + 58), left=LEFT, right=WIDTH - RIGHT,
                 panels=(counts, minutes), x_labels=labels)
