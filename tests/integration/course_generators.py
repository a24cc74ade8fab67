"""The ASU CSE546 course's workload generators, their logic restated for the tests (not copied; MIT-licensed
originals by VISA Lab):

- ``verify``: ``multithread_workload_generator_verify_results_updated.py`` (course years up to 2024):
  ``--url --image_folder --prediction_file --num_request``; image path ``image_folder + name``.
- ``ip_addr``: the later ``workload_generator.py`` with ``--ip_addr`` (URL ``http://{ip_addr}:8000/``) that catches
  every exception and counts it as a failed request.
- ``retrying``: ``workload_generator.py`` of CSE546-Cloud-Computing/CSE546-SPRING-2026 at
  c216523a261383a698a9497b708208048b5a116f: as ``ip_addr``, and requests that raise ``RequestException`` are sent
  again until none do.

What they share, and what these functions keep exactly:

- the first ``num_request`` entries of ``os.listdir(image_folder)``, every file whatever it is, each posted as
  multipart field ``inputFile`` from a pool of 100 threads (``executor.map``);
- the expected labels read with ``pandas.read_csv`` and looked up as
  ``df.loc[df['Image'] == filename.split('.')[0], 'Results'].iloc[0]``: a CSV without the columns ``Image`` and
  ``Results`` raises ``KeyError`` inside the thread, which ``executor.map`` keeps to itself unless its results are
  read (only ``verify`` reads them), so the run reports 0 correct and 0 wrong and says nothing;
- a 200 is counted as a response and then compared: ``verify`` compares ``Results`` with
  ``response.text.split(':')[1]`` as they are, the others both stripped.

pandas is not a dependency of the project: ``read_csv`` here reads the header row and the cells as strings, which
is what pandas gives for these files (names like ``test_000`` and labels are strings either way).
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from threading import Lock

import requests

VARIANTS = ("verify", "ip_addr", "retrying")


@dataclass
class Counts:
    """The generators' statistics: their names for them in the comments."""

    responses: int = 0  # "completed successfully"
    failed: int = 0  # "failed requests" (status other than 200, or an exception where it is caught)
    correct: int = 0  # "correct predictions"
    wrong: int = 0  # "wrong predictions"
    swallowed: list[str] = field(default_factory=list)  # exceptions executor.map kept to itself
    lock: Lock = field(default_factory=Lock)


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def expected_result(table: list[dict[str, str]], filename: str) -> str:
    """``df.loc[df['Image'] == filename.split('.')[0], 'Results'].iloc[0]``: KeyError without the columns,
    IndexError when no row matches."""
    if table and ("Image" not in table[0] or "Results" not in table[0]):
        raise KeyError("Image")
    matches = [row["Results"] for row in table if row["Image"] == filename.split(".")[0]]
    return matches[0]


def run(variant: str, server: str, image_folder: str, prediction_file: str, num_request: int) -> Counts:
    """One run of ``variant`` against ``server`` (``verify``: the URL; the others: what they are given as
    ``--ip_addr``, which becomes ``http://{ip_addr}:8000/``)."""
    url = server if variant == "verify" else f"http://{server}:8000/"
    table, counts = read_csv(prediction_file), Counts()
    names = os.listdir(image_folder)[:num_request]
    paths = [image_folder + name if variant == "verify" else os.path.join(image_folder, name) for name in names]

    def send_one_request(image_path: str) -> None:
        try:
            _send(variant, url, image_path, table, counts)
        except requests.RequestException:
            if variant != "retrying":
                raise
            retry.append(image_path)

    retry: list[str] = []
    _map(send_one_request, paths, counts, reads_results=variant == "verify")
    while retry:
        again, retry[:] = list(retry), []
        _map(send_one_request, again, counts, reads_results=False)
    return counts


def _send(variant: str, url: str, image_path: str, table: list[dict[str, str]], counts: Counts) -> None:
    try:
        with open(image_path, "rb") as handle:
            response = requests.post(url, files={"inputFile": handle})
        if response.status_code != 200:
            with counts.lock:
                counts.failed += 1
            return
        filename = image_path.split("/")[-1] if variant == "verify" else os.path.basename(image_path)
        with counts.lock:
            counts.responses += 1
        correct_result = expected_result(table, filename)
        got = response.text.split(":")[1]
        right = correct_result == got if variant == "verify" else correct_result.strip() == got.strip()
        with counts.lock:
            counts.correct += right
            counts.wrong += not right
    except Exception:
        if variant != "ip_addr":  # only that one catches every exception (and counts it as a failed request)
            raise
        with counts.lock:
            counts.failed += 1


def _map(function, paths: list[str], counts: Counts, reads_results: bool) -> None:
    with ThreadPoolExecutor(max_workers=100) as executor:
        results = executor.map(function, paths)
        if reads_results:
            list(results)  # an exception in a thread is raised here
            return
    try:
        list(results)
    except Exception as exc:  # noqa: BLE001 - never read by the originals: recorded for the test, not raised
        counts.swallowed.append(f"{type(exc).__name__}: {exc}")
