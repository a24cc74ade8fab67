"""Request counters and a latency histogram, rendered in the Prometheus text format."""
from __future__ import annotations

import threading
from collections import Counter

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: Counter[tuple[str, int]] = Counter()
        self.buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, outcome: str, status: int, seconds: float) -> None:
        with self._lock:
            self.responses[(outcome, status)] += 1
            self.latency_sum += seconds
            self.latency_count += 1
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[index] += 1

    def render(self, gauges: dict[str, float]) -> str:
        with self._lock:
            lines = ["# HELP hybrid_web_responses_total Classification requests answered, by outcome and status.",
                     "# TYPE hybrid_web_responses_total counter"]
            lines += [f'hybrid_web_responses_total{{outcome="{o}",status="{s}"}} {n}'
                      for (o, s), n in sorted(self.responses.items())]
            lines += ["# HELP hybrid_web_request_seconds Time to answer a classification request.",
                      "# TYPE hybrid_web_request_seconds histogram"]
            lines += [f'hybrid_web_request_seconds_bucket{{le="{b}"}} {n}' for b, n in zip(BUCKETS, self.buckets)]
            lines += [f'hybrid_web_request_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"hybrid_web_request_seconds_sum {self.latency_sum:.6f}",
                      f"hybrid_web_request_seconds_count {self.latency_count}"]
        for name, value in sorted(gauges.items()):
            lines += [f"# TYPE hybrid_web_{name} gauge", f"hybrid_web_{name} {value:g}"]
        return "\n".join(lines) + "\n"
