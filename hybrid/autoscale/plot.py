"""The scaling timeline as a picture, on one time axis (seconds since the first tick):

    above   the queue: requests waiting and being classified (left axis); requests answered so far, if known, on
            their own axis (right), so a cumulative count of hundreds does not flatten gauges of tens
    below   the app-tier fleet: running, running + pending, desired

The runs a caller knows of (the demo's cold and warm runs) are shaded and named on both panels; after each run, or
after the queue last drained when no run is given, a line marks worker.idle_timeout, by when idle workers should be
gone. The legends sit right of the panels, never over the data; the title carries the settings that shape the
picture. ``load_timeline`` reads a timeline file and says clearly what is wrong with a missing, empty or damaged one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hybrid.core.errors import HybridError, NotFoundError
from hybrid.core.settings import Settings

ROW_KEYS = ("t", "visible", "in_flight", "pending", "running")
SPAN_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:olive")


class TimelineNotFound(NotFoundError):
    """No timeline to draw: the file is missing or holds no row (exit 3, "not found")."""

    exit_code = 3


class TimelineDamaged(HybridError):
    """The timeline file is not one JSON row per line with the autoscaler's keys (exit 1)."""


@dataclass(frozen=True)
class Span:
    """A named stretch of the timeline (a workload run), in the timeline's own clock (epoch seconds)."""

    label: str
    start: float
    end: float


def load_timeline(path: Path) -> list[dict[str, Any]]:
    """The rows of a timeline file; TimelineNotFound if it is missing or empty, TimelineDamaged if a line is not a
    row of the autoscaler's."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TimelineNotFound(f"no timeline at {path}: `hybrid autoscale` writes one while it runs") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TimelineDamaged(f"cannot read the timeline {path}: {exc}") from None
    rows = [_row(path, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise TimelineNotFound(f"the timeline {path} is empty: `hybrid autoscale` writes a row per tick")
    return rows


def _row(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TimelineDamaged(f"the timeline {path} is damaged: line {number} is not JSON ({exc.msg})") from None
    missing = [key for key in ROW_KEYS if not isinstance(row, dict) or not isinstance(row.get(key), (int, float))]
    if missing:
        raise TimelineDamaged(f"the timeline {path} is damaged: line {number} lacks numbers for "
                              f"{', '.join(missing)}")
    return row


def settings_caption(settings: Settings) -> str:
    """The settings that shape the timeline, as one line for its title."""
    scaling = settings.scaling
    return (f"stack {settings.stack} | workers {scaling.min_workers}..{scaling.max_workers}, "
            f"{scaling.messages_per_worker} message(s) per worker | tick {scaling.poll_interval:g} s | "
            f"worker.idle_timeout {settings.worker.idle_timeout:g} s")


def plot_timeline(rows: Sequence[dict[str, Any]], out: Path, title: str = "", answered: Sequence[float] = (),
                  spans: Sequence[Span] = (), settings: Settings | None = None) -> Path:
    """Writes the timeline (``Timeline`` rows) as a PNG; ``answered`` are times of answered requests, if known."""
    plt = _pyplot()
    figure = build_figure(rows, title, answered, spans, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def build_figure(rows: Sequence[dict[str, Any]], title: str = "", answered: Sequence[float] = (),
                 spans: Sequence[Span] = (), settings: Settings | None = None) -> Any:
    """The timeline's matplotlib Figure (the caller closes it)."""
    plt = _pyplot()
    if not rows:
        raise TimelineNotFound("the timeline is empty: nothing to plot")
    start = rows[0]["t"]
    figure, (queue, fleet) = plt.subplots(2, 1, sharex=True, figsize=(11, 6), layout="constrained")
    total = _draw_queue(queue, rows, start, answered)
    _draw_fleet(fleet, rows, start)
    _draw_spans((queue, fleet), spans, start)
    if settings is not None:
        _draw_idle_timeouts(fleet, rows, spans, start, settings.worker.idle_timeout)
    _legend_outside(queue, total)
    _legend_outside(fleet)
    caption = settings_caption(settings) if settings is not None else ""
    figure.suptitle("\n".join(filter(None, [title or "hybrid autoscaler timeline", caption])), fontsize=10)
    return figure


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend; a clear error where it is not installed (it is in the
    operator extra only)."""
    try:
        import matplotlib
    except ImportError:
        raise HybridError("drawing the timeline needs matplotlib: pip install 'hybrid[operator]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_queue(axes: Any, rows: Sequence[dict[str, Any]], start: float, answered: Sequence[float]) -> Any:
    """The queue's gauges; returns the right-hand axis of answered requests (None when none are known)."""
    t = [r["t"] - start for r in rows]
    axes.step(t, [r["visible"] for r in rows], where="post", label="waiting (visible)", color="tab:red")
    axes.step(t, [r["in_flight"] for r in rows], where="post", label="being classified (in flight)",
              color="tab:brown")
    axes.set_ylabel("requests in the queue")
    axes.set_ylim(bottom=0)
    if not answered:
        return None
    done = sorted(a - start for a in answered)
    total = axes.twinx()
    total.plot(done, range(1, len(done) + 1), label="answered so far (right axis)", color="tab:green")
    total.set_ylabel("requests answered (cumulative)", color="tab:green")
    total.set_ylim(bottom=0)
    return total


def _draw_fleet(axes: Any, rows: Sequence[dict[str, Any]], start: float) -> None:
    from matplotlib.ticker import MaxNLocator

    t = [r["t"] - start for r in rows]
    axes.step(t, [r["running"] for r in rows], where="post", label="running", color="tab:blue")
    axes.step(t, [r["running"] + r["pending"] for r in rows], where="post", label="running + pending",
              color="tab:orange", linestyle="--")
    axes.step(t, [r.get("desired", 0) for r in rows], where="post", label="desired", color="grey", linestyle=":")
    axes.set_ylabel("app-tier instances")
    axes.set_ylim(bottom=0)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # instances come whole
    axes.set_xlabel("seconds since the first tick")


def _draw_spans(panels: Sequence[Any], spans: Sequence[Span], start: float) -> None:
    """Shades each run on every panel; the top panel's patch carries its label (legend) and a name above it."""
    for index, span in enumerate(spans):
        colour = SPAN_COLOURS[index % len(SPAN_COLOURS)]
        for number, axes in enumerate(panels):
            axes.axvspan(span.start - start, span.end - start, color=colour, alpha=0.12, linewidth=0,
                         label=f"{span.label} ({_seconds(span.end - span.start)})" if number == 0 else None)
        middle = (span.start + span.end) / 2 - start
        panels[0].annotate(span.label, xy=(middle, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                           textcoords="offset points", ha="center", va="bottom", fontsize=8, color=colour)


def _draw_idle_timeouts(axes: Any, rows: Sequence[dict[str, Any]], spans: Sequence[Span], start: float,
                        idle_timeout: float) -> None:
    """A line at idle_timeout after each run's end (or after the queue last drained): idle workers end by then.
    A line that would fall after the last tick is left out (the timeline does not reach it)."""
    ends = [span.end for span in spans] or [_last_drain(rows)]
    shown = [end for end in ends if end is not None and end + idle_timeout <= rows[-1]["t"]]
    for number, end in enumerate(shown):
        at = end + idle_timeout - start
        axes.axvline(at, color="black", linestyle="-.", linewidth=1,
                     label=f"idle timeout ({idle_timeout:g} s after the work ends)" if number == 0 else None)
        axes.annotate(f"+{idle_timeout:g} s idle", xy=(at, 1.0), xycoords=("data", "axes fraction"),
                      xytext=(3, -10), textcoords="offset points", fontsize=7)


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _last_drain(rows: Sequence[dict[str, Any]]) -> float | None:
    """The time of the first empty-queue row after the last non-empty one (None if never busy or never drained)."""
    busy = [index for index, r in enumerate(rows) if r["visible"] + r["in_flight"] > 0]
    if not busy or busy[-1] + 1 >= len(rows):
        return None
    return rows[busy[-1] + 1]["t"]


def _legend_outside(axes: Any, twin: Any = None) -> None:
    """One legend per panel (its twin axis's lines included), right of the panel, clear of the data."""
    handles, labels = axes.get_legend_handles_labels()
    if twin is not None:
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.08, 1.0), borderaxespad=0, fontsize=8)
