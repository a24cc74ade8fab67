"""The scaling timeline as a picture: queue depth above, fleet size below, on one time axis."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def plot_timeline(rows: Sequence[dict[str, Any]], out: Path, title: str = "",
                  answered: Sequence[float] = ()) -> Path:
    """Writes a PNG of a timeline (``Timeline`` rows); ``answered`` are times of answered requests, if known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not rows:
        raise ValueError("the timeline is empty: nothing to plot")
    start = rows[0]["t"]
    t = [r["t"] - start for r in rows]
    figure, (queue, fleet) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5), constrained_layout=True)
    queue.step(t, [r["visible"] for r in rows], where="post", label="waiting (visible)")
    queue.step(t, [r["in_flight"] for r in rows], where="post", label="being classified (in flight)")
    if answered:
        done = sorted(a - start for a in answered)
        queue.plot(done, range(1, len(done) + 1), label="requests answered (cumulative)", color="tab:green")
    queue.set_ylabel("requests")
    queue.legend(loc="upper right", fontsize=8)
    fleet.step(t, [r["running"] for r in rows], where="post", label="running", color="tab:blue")
    fleet.step(t, [r["running"] + r["pending"] for r in rows], where="post", label="running + pending",
               color="tab:orange", linestyle="--")
    fleet.step(t, [r.get("desired", 0) for r in rows], where="post", label="desired", color="grey", linestyle=":")
    fleet.set_ylabel("app-tier instances")
    fleet.yaxis.set_major_locator(MaxNLocator(integer=True))  # instances come whole
    fleet.set_xlabel("seconds since the first tick")
    fleet.legend(loc="upper right", fontsize=8)
    figure.suptitle(title or "hybrid autoscaler timeline")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
