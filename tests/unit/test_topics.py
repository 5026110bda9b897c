from pathlib import Path

import pytest

from worker.io.topics import TopicsConfigError, load_topics

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_topics_file_is_valid() -> None:
    topics = load_topics(ROOT / "topics.yaml")
    assert topics.role("decisions").name == "decisions.v1"
    assert topics.role("exec_events").partitions == topics.role("decisions").partitions


def test_mismatched_co_partitioned_topics_are_refused(tmp_path: Path) -> None:
    text = (
        (ROOT / "topics.yaml")
        .read_text()
        .replace("name: exec-events.v1\n    partitions: 6", "name: exec-events.v1\n    partitions: 3")
    )
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    with pytest.raises(TopicsConfigError, match="same number of partitions"):
        load_topics(path)


def test_a_missing_file_says_which_flag_to_use(tmp_path: Path) -> None:
    with pytest.raises(TopicsConfigError, match="--topics"):
        load_topics(tmp_path / "nope.yaml")
