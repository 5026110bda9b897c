"""Reports over exec-events (an outbox or a replay's output): numbers as JSON, a page as HTML."""
