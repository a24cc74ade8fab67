"""The course's workload generators (their logic, ``tests.integration.course_generators``), run as they are on the
folder `hybrid samples sample DIR --format course` writes, against `hybrid web` with real workers on local
instances: 100 correct of 100. With the project's own ``name,label`` header they count nothing, as the issue says."""
from __future__ import annotations

import pytest

from tests.integration import course_generators
from tests.integration.test_web_tier import WebServer

pytestmark = [pytest.mark.model, pytest.mark.timeout(400)]
COUNT = 100


@pytest.fixture(scope="module")
def sample_sets(tmp_path_factory):
    """The same 100 images labelled in both formats: course/ with course.csv, hybrid/ with hybrid.csv."""
    from app_tier.classifier import load_classifier
    from hybrid.tools.samples import build_samples, expected_path

    classifier = load_classifier("auto", 1)
    root = tmp_path_factory.mktemp("generators")
    for csv_format in ("course", "hybrid"):
        build_samples(root / csv_format, COUNT, seed=11, classifier=classifier, csv_format=csv_format)
    assert expected_path(root / "course").read_text().startswith("Image,Results\n")
    return root


@pytest.fixture
def web_tier(stack, state_dir, tmp_path):
    rig = stack(worker__idle_timeout="120")
    rig.launch(4)
    server = WebServer(rig, state_dir, tmp_path / "web.log").start()
    yield server
    server.stop()


def _server_argument(variant: str, url: str) -> str:
    """What the generator is given: the URL, or for ``--ip_addr`` a host:port whose appended ``:8000/`` lands in
    the URL's fragment, which is never sent (the generator itself is not changed)."""
    return f"{url}/" if variant == "verify" else f"{url[len('http://'):]}/#"


@pytest.mark.parametrize("variant", course_generators.VARIANTS)
def test_every_course_generator_counts_100_correct_on_the_course_format(variant, sample_sets, web_tier):
    folder = str(sample_sets / "course") + "/"
    counts = course_generators.run(variant, _server_argument(variant, web_tier.url), folder,
                                   str(sample_sets / "course.csv"), COUNT)
    assert (counts.responses, counts.failed, counts.correct, counts.wrong, counts.swallowed) == (
        COUNT, 0, COUNT, 0, [])


def test_the_project_format_counts_nothing_silently_in_the_course_generator(sample_sets, web_tier):
    """The failure the issue reports, kept as a test of what the course format fixes."""
    counts = course_generators.run("retrying", _server_argument("retrying", web_tier.url),
                                   str(sample_sets / "hybrid"), str(sample_sets / "hybrid.csv"), COUNT)
    assert (counts.responses, counts.correct, counts.wrong) == (COUNT, 0, 0)
    assert counts.swallowed and counts.swallowed[0].startswith("KeyError")


def test_hybrid_workload_reads_the_course_format_too(sample_sets, web_tier):
    from hybrid.tools.workload import find_images, read_expected, run_workload

    report = run_workload(f"{web_tier.url}/", find_images(sample_sets / "course"), concurrency=50,
                          expected=read_expected(sample_sets / "course.csv"))
    assert report.counts() == {"correct": COUNT, "wrong": 0, "failed": 0}
