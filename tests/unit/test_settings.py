import pytest
from pydantic import ValidationError

from worker.runtime.settings import WorkerSettings


def test_a_recv_window_too_short_for_any_request_to_be_sent_is_refused() -> None:
    # Requests are not signed within 1 s (the venue clock's safety margin) of their expiry: with
    # a 1 s window every order ended REJECTED (not_at_venue_after_3_attempts) without being sent.
    with pytest.raises(ValidationError, match="recv_window_ms"):
        WorkerSettings(bootstrap_servers="127.0.0.1:9092", recv_window_ms=1_000)
    assert WorkerSettings(bootstrap_servers="127.0.0.1:9092", recv_window_ms=2_000).recv_window_ms == 2_000
