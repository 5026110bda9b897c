"""Fixtures for tests against the real Kafka broker (`ops/kafka up` or $KAFKA_BOOTSTRAP_SERVERS).

Every test gets its own topic names (a random suffix), consumer group and transactional ids, so
tests never see each other's data, and its topics are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.broker.helpers import ROOT, TestTopics
from worker.io.kafka import BrokerUnreachable, KafkaConfig, bootstrap_from_env
from worker.io.topics import apply_topics, write_variant


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/broker/" in str(item.fspath):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def kafka() -> KafkaConfig:
    config = KafkaConfig(bootstrap_from_env(), connect_timeout_s=10)
    try:
        asyncio.run(config.check_reachable())
    except BrokerUnreachable as exc:
        pytest.fail(f"{exc} (`make test` starts one for you)")
    return config


TopicsFactory = Callable[..., Awaitable[TestTopics]]


@pytest.fixture
async def topics_factory(kafka: KafkaConfig, tmp_path: Path) -> AsyncIterator[TopicsFactory]:
    """Makes a private copy of topics.yaml (or `source`; random suffix, optional format overrides)
    and its topics."""
    created: list[TestTopics] = []

    async def make(partitions: int | None = None, source: Path | None = None, **formats: str) -> TestTopics:
        suffix = uuid.uuid4().hex[:8]
        path = tmp_path / f"topics-{suffix}.yaml"
        file = write_variant(source or ROOT / "topics.yaml", path, suffix, partitions, formats)
        async with kafka.admin_session() as admin:
            await apply_topics(admin, file)
        made = TestTopics(path, file, suffix)
        created.append(made)
        return made

    yield make
    async with kafka.admin_session() as admin:
        for made in created:
            await admin.delete_topics([spec.name for spec in made.file.topics.values()])


@pytest.fixture
async def topics(topics_factory: TopicsFactory) -> TestTopics:
    return await topics_factory()


# The private SASL_SSL broker (issue 13): started once, by the first test that asks for it.
from tests.broker.secure_broker import secure_broker  # noqa: E402, F401
