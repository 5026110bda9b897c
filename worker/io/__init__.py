"""The world outside the core: Kafka (topics, clients) and the JSONL outbox on disk."""
