"""One partition's batch of input records -> what to commit and what to send. Pure.

`plan_batch` is the core's step for a batch: every record becomes events (a deny, a throttle, an
intent...), a DLQ record, a drop reason, or a command for the venue. It works on a copy of the
partition's policy state (rate wall, modes) and on the order table's staged changes; the runtime
keeps both only if the batch's transaction commits (`OrderTable.commit`, `BatchPlan.policy`), so
a batch processed again after an abort meets the same state and decides the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.codec.errors import DecodeError, ErrorClass
from worker.contract.events import DlqRecord, ExecEvent
from worker.contract.orders import SourceRef
from worker.contract.trusted import trusted_fields
from worker.core.dlq import InputRecord, dlq_record
from worker.core.engine import ExecutionEngine, Prepared
from worker.core.intake import Intake
from worker.core.order_table import OrderTable
from worker.policy.modes import ModeSwitch
from worker.policy.pretrade import PolicyState

log = logging.getLogger(__name__)


@dataclass
class BatchPlan:
    policy: PolicyState  # the partition's policy state after the batch
    consumed: int = 0
    events: list[ExecEvent] = field(default_factory=list)
    dead: list[DlqRecord] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # why a record produced no event
    to_send: list[Prepared] = field(default_factory=list)  # commands for the venue
    switches: list[ModeSwitch] = field(default_factory=list)  # audited once the batch commits


def plan_batch(
    engine: ExecutionEngine, intake: Intake, table: OrderTable, policy: PolicyState, records: Iterable[InputRecord]
) -> BatchPlan:
    plan = BatchPlan(policy=policy.copy())
    engine.policy.state = plan.policy
    first_switch = len(engine.mode_switches)
    for record in records:
        plan.consumed += 1
        try:
            decision = intake.command(record)
            if decision is None:
                plan.dropped.append("signal_no_action")  # below the mode's Z: recorded, not traded
                continue
            # The record's coordinates, as read from Kafka: not validated again (contract.trusted).
            source = trusted_fields(
                SourceRef, {"topic": record.topic, "partition": record.partition, "offset": record.offset}
            )
            prepared = engine.prepare(table, decision, source)
        except DecodeError as exc:
            plan.dead.append(dlq_record(record, exc))
            continue
        except Exception as exc:
            # A bug must not stop the partition or lose the message: dead-letter it with the
            # error (and a stack trace in the log), go on with the batch.
            log.exception("internal error on %s[%d]@%d", record.topic, record.partition, record.offset)
            reason = f"internal error: {type(exc).__name__}: {exc}"[:500]
            plan.dead.append(dlq_record(record, DecodeError(ErrorClass.INTERNAL, reason)))
            continue
        plan.events.extend(prepared.events)
        if prepared.dropped:
            plan.dropped.append(prepared.dropped)
        if prepared.needs_executor:
            plan.to_send.append(prepared)
    # Taken out of the engine at once, so that other partitions' batches never see them.
    plan.switches = engine.mode_switches[first_switch:]
    del engine.mode_switches[first_switch:]
    return plan
