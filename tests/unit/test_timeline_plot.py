"""The scaling timeline's picture (hybrid.autoscale.plot), checked on matplotlib's Figure objects, and
`hybrid autoscale --plot` on missing, empty and damaged timelines (exit code and one line, no traceback)."""
import json
import os
import subprocess
import sys

import pytest

from hybrid.autoscale.plot import (Span, TimelineDamaged, TimelineNotFound, build_figure, load_timeline,
                                   plot_timeline)
from hybrid.core.png_check import check_png_data
from hybrid.core.settings import load

T0 = 1_700_000_000.0


def timeline(seconds=60):
    """A cold run (5..25 s) then a warm run (35..45 s): a backlog that the fleet drains, then idles out."""
    rows = []
    for i in range(seconds):
        busy = 5 <= i < 25 or 35 <= i < 45
        rows.append({"t": T0 + i, "visible": max(0, 20 - i) if busy else 0, "in_flight": 4 if busy else 0,
                     "pending": 1 if i == 5 else 0, "running": 4 if 6 <= i < 50 else 0, "desired": 4 if busy else 0})
    return rows


@pytest.fixture
def settings(tmp_path):
    return load(None, {}, {"state_dir": str(tmp_path), "stack": "plotted", "worker.idle_timeout": 7,
                           "scaling.max_workers": 12, "scaling.messages_per_worker": 3, "scaling.poll_interval": 2})


@pytest.fixture
def figure(settings):
    import matplotlib.pyplot as plt

    answered = [T0 + 6 + k * 0.1 for k in range(200)]
    spans = [Span("cold run", T0 + 5, T0 + 25), Span("warm run", T0 + 35, T0 + 45)]
    built = build_figure(timeline(), "hybrid demo", answered, spans, settings)
    built.canvas.draw()
    yield built
    plt.close(built)


def panels(figure):
    """(queue, answered, fleet): the two panels and the queue panel's right-hand axis."""
    queue, fleet = [a for a in figure.axes if a.get_ylabel() in ("requests in the queue", "app-tier instances")]
    [answered] = [a for a in figure.axes if a.get_ylabel() == "requests answered (cumulative)"]
    return queue, answered, fleet


def test_queue_gauges_and_the_cumulative_count_have_their_own_y_axes(figure):
    queue, answered, fleet = panels(figure)
    assert {line.get_label() for line in queue.get_lines()} == {"waiting (visible)", "being classified (in flight)"}
    assert [line.get_label() for line in answered.get_lines()] == ["answered so far (right axis)"]
    assert queue.get_ylim()[1] < 40 < answered.get_ylim()[1], "gauges of ~20 are not flattened by a count of 200"
    assert answered.bbox.bounds == queue.bbox.bounds and fleet.get_shared_x_axes().joined(queue, fleet)


def test_cold_and_warm_runs_are_shaded_and_labelled_on_both_panels(figure):
    queue, _, fleet = panels(figure)
    for axes in (queue, fleet):
        shaded = [p for p in axes.patches if p.get_alpha() and p.get_alpha() < 1]
        assert len(shaded) == 2
        assert [round(p.get_x()) for p in shaded] == [5, 35] and [round(p.get_width()) for p in shaded] == [20, 10]
    labels = queue.get_legend_handles_labels()[1]
    assert "cold run (20 s)" in labels and "warm run (10 s)" in labels, "whole seconds from 10 s on"
    assert {t.get_text() for t in queue.texts} >= {"cold run", "warm run"}


def idle_marks(figure):
    fleet = [a for a in figure.axes if a.get_ylabel() == "app-tier instances"][0]
    return [round(line.get_xdata()[0], 1) for line in fleet.get_lines() if line.get_linestyle() == "-."]


def test_the_idle_timeout_is_marked_after_each_run(figure):
    assert idle_marks(figure) == [25 + 7, 45 + 7]
    _, _, fleet = panels(figure)
    assert any("idle timeout (7 s" in label for label in fleet.get_legend_handles_labels()[1])


def test_an_idle_timeout_after_the_last_tick_is_not_marked_and_short_runs_show_tenths(settings):
    import matplotlib.pyplot as plt

    spans = [Span("cold run", T0 + 5, T0 + 25), Span("warm run", T0 + 44.75, T0 + 45)]
    figure = build_figure(timeline(50), spans=spans, settings=settings)
    assert idle_marks(figure) == [32], "45 + 7 is past the last tick (49)"
    queue = [a for a in figure.axes if a.get_ylabel() == "requests in the queue"][0]
    assert "warm run (0.2 s)" in queue.get_legend_handles_labels()[1]
    plt.close(figure)


def test_legends_sit_outside_the_data(figure):
    renderer = figure.canvas.get_renderer()
    queue, _, fleet = panels(figure)
    for axes in (queue, fleet):
        legend, data = axes.get_legend().get_window_extent(renderer), axes.get_window_extent(renderer)
        assert legend.x0 > data.x1, "right of the panel, not over its lines"
    assert "answered so far (right axis)" in [t.get_text() for t in queue.get_legend().get_texts()]


def test_the_title_carries_the_settings(figure):
    title = figure.get_suptitle()
    for part in ("hybrid demo", "stack plotted", "workers 0..12", "3 message(s) per worker", "tick 2 s",
                 "worker.idle_timeout 7 s"):
        assert part in title


def test_without_runs_the_idle_timeout_follows_the_last_drain(settings, tmp_path):
    out = plot_timeline(timeline(), tmp_path / "deep" / "timeline.png", settings=settings)
    check_png_data(out.read_bytes())
    import matplotlib.pyplot as plt

    figure = build_figure(timeline(), settings=settings)
    assert idle_marks(figure) == [45 + 7]
    assert figure.get_suptitle().startswith("hybrid autoscaler timeline\nstack plotted")
    plt.close(figure)


def test_load_timeline_tells_missing_empty_and_damaged_apart(tmp_path):
    path = tmp_path / "t.jsonl"
    with pytest.raises(TimelineNotFound, match="no timeline at"):
        load_timeline(path)
    path.write_text("\n \n")
    with pytest.raises(TimelineNotFound, match="is empty"):
        load_timeline(path)
    path.write_text(json.dumps(timeline(1)[0]) + "\n{not json\n")
    with pytest.raises(TimelineDamaged, match="line 2 is not JSON"):
        load_timeline(path)
    path.write_text(json.dumps({"t": 1, "visible": "many"}) + "\n")
    with pytest.raises(TimelineDamaged, match="line 1 lacks numbers for visible, in_flight, pending, running"):
        load_timeline(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in timeline(3)))
    assert len(load_timeline(path)) == 3


def hybrid(tmp_path, *args):
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "NO_COLOR": "1", "XDG_CACHE_HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "hybrid", "--state-dir", str(tmp_path), "--stack", "plotted", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("content, code, says", [
    (None, 3, "no timeline at"), ("", 3, "is empty"), ("{\"t\": 1, \"visible\"\n", 1, "line 1 is not JSON")])
def test_autoscale_plot_of_a_bad_timeline_is_one_line_and_an_exit_code(tmp_path, content, code, says):
    path = tmp_path / "autoscale" / "plotted-timeline.jsonl"
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    result = hybrid(tmp_path, "autoscale", "--plot", str(tmp_path / "out.png"))
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_autoscale_plot_draws_a_recorded_timeline(tmp_path):
    path = tmp_path / "autoscale" / "plotted-timeline.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in timeline()))
    result = hybrid(tmp_path, "autoscale", "--plot", str(tmp_path / "out.png"))
    assert result.returncode == 0, result.stderr
    assert "timeline written to" in result.stdout
    check_png_data((tmp_path / "out.png").read_bytes())
