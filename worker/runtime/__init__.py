"""The imperative shell: the consume -> execute -> produce loop, transactions, rebalances,
recovery of state and outbox, metrics and the run summary."""
