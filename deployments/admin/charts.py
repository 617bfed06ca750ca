"""Server-rendered SVG line charts: per-minute v1 vs v2 series on the canary page.

With paired evaluation on, a fourth chart shows how often the two versions
decided differently on the same inputs; vertical markers show traffic changes
and circuit-breaker openings.

No JavaScript library and no CDN: the chart is a few dozen SVG elements built
here, so it refreshes with the page's live block and prints as it looks.
Values are escaped by ``format_html``; coordinates are numbers we compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from deployments.admin.display import milliseconds

WIDTH, HEIGHT = 420, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 12, 24
WINDOW_MINUTES = 60


@dataclass(frozen=True)
class Series:
    label: str  # "v1", "v2" or "disagreement": also the CSS class of its line
    values: Sequence[float | None]  # one per minute of the window; None: no data


CHANGE, BREAKER = "change", "breaker"  # marker kinds: a lifecycle change, the breaker opening


@dataclass(frozen=True)
class Marker:
    index: int  # the minute of the window
    label: str
    kind: str = CHANGE


@dataclass(frozen=True)
class Chart:
    title: str
    series: Sequence[Series]
    fmt: Callable[[float], str]
    threshold: float | None = None  # a dashed horizontal line, e.g. the error threshold
    threshold_label: str = ""
    markers: Sequence[Marker] = field(default_factory=tuple)


def minutes_window(until: datetime | None = None, count: int = WINDOW_MINUTES) -> list[datetime]:
    """The last ``count`` minute starts (an hour by default), oldest first, ending with the
    current minute."""
    end = (until or timezone.now()).replace(second=0, microsecond=0)
    return [end - timedelta(minutes=count - 1 - i) for i in range(count)]


def hours_window(since: datetime, until: datetime | None = None) -> list[datetime]:
    """The hour starts from ``since``'s hour to the current one (the whole canary), oldest
    first; at least two, so a young canary still draws a line."""
    end = (until or timezone.now()).replace(minute=0, second=0, microsecond=0)
    start = since.replace(minute=0, second=0, microsecond=0)
    count = max(2, int((end - start).total_seconds() // 3600) + 1)
    return [end - timedelta(hours=count - 1 - i) for i in range(count)]


def traffic_weights(
    minutes: Sequence[datetime], changes: Sequence[tuple[datetime, int]]
) -> list[float | None]:
    """v2's planned share of new contexts at each minute, from the lifecycle's traffic
    changes ``(moment, percentage)`` in time order; None before the canary started."""
    weights: list[float | None] = []
    ordered = sorted(changes)
    step = minutes[1] - minutes[0] if len(minutes) > 1 else timedelta(minutes=1)
    for minute in minutes:
        end = minute + step
        current = None
        for moment, percentage in ordered:
            if moment < end:
                current = float(percentage)
        weights.append(current)
    return weights


def traffic_chart(weights: Sequence[float | None], markers: Sequence[Marker] = ()) -> Chart:
    """The traffic weight over time, beside error rate and latency: what v2 was given."""
    return Chart(
        "v2 traffic weight",
        [Series("v2", weights)],
        lambda value: f"{value:.0f}%",
        markers=markers,
    )


def charts_for(
    rows: Sequence[Mapping[str, Any]],
    *,
    minutes: Sequence[datetime],
    error_threshold: float | None,
    markers: Sequence[tuple[datetime, str, str]] = (),
    paired: bool = False,
) -> list[Chart]:
    """Requests, error rate and p95 per minute, v1 against v2, from ``minute_series`` rows.

    ``markers`` are ``(moment, label, kind)``; ``paired`` adds the shadow
    disagreement rate (both versions' pairs of a minute together), the earliest
    sign that v2 decides differently, before any error shows.
    """
    index = {minute: i for i, minute in enumerate(minutes)}
    grid: dict[str, list[Mapping[str, Any] | None]] = {
        version: [None] * len(minutes) for version in ("v1", "v2")
    }
    for row in rows:
        i = index.get(row["minute"])
        if i is not None and row["served_version"] in grid:
            grid[row["served_version"]][i] = row

    def series(pick: Callable[[Mapping[str, Any]], float | None]) -> list[Series]:
        return [
            Series(version, [pick(cell) if cell else None for cell in cells])
            for version, cells in grid.items()
        ]

    placed = placed_markers(minutes, markers)
    per = (
        "per hour"
        if len(minutes) > 1 and minutes[1] - minutes[0] >= timedelta(hours=1)
        else "per minute"
    )
    found = [
        Chart(f"Requests {per}", series(lambda r: float(r["total"])), _count, markers=placed),
        Chart(
            f"Error rate {per}",
            series(lambda r: r["errors"] / r["total"] if r["total"] else None),
            _rate,
            threshold=error_threshold,
            threshold_label="error threshold",
            markers=placed,
        ),
        Chart(
            f"p95 latency {per}",
            series(lambda r: r["p95_latency_ms"]),
            milliseconds,
            markers=placed,
        ),
    ]
    if paired:
        pairs = sum(row.get("pairs") or 0 for row in rows if row["minute"] in index)
        disagreed = sum(row.get("disagreed") or 0 for row in rows if row["minute"] in index)
        found.append(
            Chart(
                f"Disagreement {per}, same inputs",
                [Series("disagreement", _disagreement(rows, index, len(minutes)))],
                _rate,
                # The reference: the whole window's rate, against which a minute stands out.
                threshold=disagreed / pairs if pairs else None,
                threshold_label="average over the range",
                markers=placed,
            )
        )
    return found


def placed_markers(
    minutes: Sequence[datetime], markers: Sequence[tuple[datetime, str, str]]
) -> list[Marker]:
    index = {minute: i for i, minute in enumerate(minutes)}
    hourly = len(minutes) > 1 and minutes[1] - minutes[0] >= timedelta(hours=1)
    placed = []
    for moment, label, kind in markers:
        minute = moment.replace(second=0, microsecond=0)
        if hourly:
            minute = minute.replace(minute=0)
        if minute in index:
            placed.append(Marker(index[minute], label, kind))
    return placed


def _disagreement(
    rows: Sequence[Mapping[str, Any]], index: Mapping[datetime, int], size: int
) -> list[float | None]:
    """Disagreed pairs over all pairs of each minute; None where nothing was paired."""
    pairs, disagreed = [0] * size, [0] * size
    for row in rows:
        i = index.get(row["minute"])
        if i is not None:
            pairs[i] += row.get("pairs") or 0
            disagreed[i] += row.get("disagreed") or 0
    return [d / n if n else None for d, n in zip(disagreed, pairs, strict=True)]


def _count(value: float) -> str:
    return f"{value:.0f}"


def _rate(value: float) -> str:
    return f"{value * 100:.3g}%"


def render(chart: Chart, minutes: Sequence[datetime]) -> SafeString:
    """One chart as inline SVG with its axes, threshold, markers and a legend."""
    values = [v for s in chart.series for v in s.values if v is not None]
    top = max([*values, chart.threshold or 0.0, 0.0])
    top = top * 1.1 if top > 0 else 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(1, len(minutes) - 1)

    def x(i: int) -> float:
        return LEFT + plot_w * i / count

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts: list[SafeString] = []
    for fraction in (0.0, 0.5, 1.0):  # gridlines and y labels
        value = top * fraction
        parts.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                _n(y(value)),
                _n(y(value)),
                LEFT - 4,
                _n(y(value) + 3),
                chart.fmt(value),
            )
        )
    last = len(minutes) - 1
    for i in (0, len(minutes) // 2, last):  # x labels: local clock time
        parts.append(
            format_html(
                '<text class="axis" x="{}" y="{}" text-anchor="{}">{}</text>',
                _n(x(i)),
                HEIGHT - 6,
                "end" if i == last and i else "middle",
                timezone.localtime(minutes[i]).strftime(
                    "%d %H:%M" if minutes[-1] - minutes[0] > timedelta(days=1) else "%H:%M"
                ),
            )
        )
    if chart.threshold is not None:
        parts.append(
            format_html(
                '<line class="threshold" x1="{}" x2="{}" y1="{}" y2="{}">'
                "<title>{} {}</title></line>",
                LEFT,
                WIDTH - RIGHT,
                _n(y(chart.threshold)),
                _n(y(chart.threshold)),
                chart.threshold_label,
                chart.fmt(chart.threshold),
            )
        )
    for marker in chart.markers:
        parts.append(
            format_html(
                '<line class="marker marker-{}" x1="{}" x2="{}" y1="{}" y2="{}">'
                "<title>{}</title></line>",
                marker.kind,
                _n(x(marker.index)),
                _n(x(marker.index)),
                TOP,
                TOP + plot_h,
                marker.label,
            )
        )
    for series in chart.series:
        path = _path(series.values, x, y)
        if path:
            parts.append(
                format_html(
                    '<path class="series series-{}" d="{}"><title>{}</title></path>',
                    series.label,
                    path,
                    series.label,
                )
            )
        # Dots make single minutes (no line to draw) visible.
        parts.append(
            format_html_join(
                "",
                '<circle class="dot series-{}" cx="{}" cy="{}" r="1.8">'
                "<title>{} {}: {}</title></circle>",
                (
                    (
                        series.label,
                        _n(x(i)),
                        _n(y(value)),
                        series.label,
                        timezone.localtime(minutes[i]).strftime(
                            "%d %H:%M" if minutes[-1] - minutes[0] > timedelta(days=1) else "%H:%M"
                        ),
                        chart.fmt(value),
                    )
                    for i, value in enumerate(series.values)
                    if value is not None
                ),
            )
        )
    legend = format_html_join(
        "",
        '<span class="legend legend-{}">{}</span>',
        ((s.label, s.label) for s in chart.series),
    )
    return format_html(
        '<figure class="canary-chart"><figcaption>{} {}</figcaption>'
        '<svg viewBox="0 0 {} {}" role="img" aria-label="{}" data-chart="{}">{}</svg></figure>',
        chart.title,
        legend,
        WIDTH,
        HEIGHT,
        chart.title,
        chart.title.split()[0].lower(),
        mark_safe("".join(parts)),  # noqa: S308 - each part was built by format_html
    )


def _n(value: float) -> str:
    """A coordinate to one decimal: format_html escapes its arguments to text first."""
    return f"{value:.1f}"


def _path(
    values: Sequence[float | None], x: Callable[[int], float], y: Callable[[float], float]
) -> str:
    """An SVG path through the known minutes; a gap (None) starts a new segment."""
    commands: list[str] = []
    pen_down = False
    for i, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{x(i):.1f},{y(value):.1f}")
        pen_down = True
    return " ".join(commands)
