"""`execworker explain`: the causal chain of one order, from its input message to its last event.

Built from what was recorded (exec-events and the input message they point at), never from a
re-run: input coordinates and the decoded command, the mode and gate outcome, the rounding, every
venue request and answer the events record, and every exec-event in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.runtime.outcomes import event_seq


def _s(value: object) -> str | None:
    return None if value is None else str(value)


def gate_outcome(first: ExecEvent) -> dict[str, Any]:
    """What the local gates decided, from the order's first event."""
    if first.status is OrderStatus.DENIED:
        return {"outcome": "denied", "reason": first.reason, "sent_to_venue": False}
    if first.status is OrderStatus.THROTTLED:
        return {"outcome": "throttled", "reason": first.reason, "sent_to_venue": False}
    return {"outcome": "passed", "reason": None, "sent_to_venue": True}


def venue_exchanges(events: list[ExecEvent]) -> list[dict[str, Any]]:
    """Every request and answer the events record, in order: a new `sent_ts_ms` is a request
    (the intent's, or a resend's), a new `ack_ts_ms` an answer (the venue's or the simulator's)."""
    steps: list[dict[str, Any]] = []
    sent_seen: set[int] = set()
    ack_seen: set[int] = set()
    for event in events:
        if event.status in (OrderStatus.DENIED, OrderStatus.THROTTLED):
            continue
        if event.sent_ts_ms is not None and event.sent_ts_ms not in sent_seen:
            sent_seen.add(event.sent_ts_ms)
            steps.append(
                {
                    "kind": "request",
                    "event_id": event.event_id,
                    "at_ms": event.sent_ts_ms,
                    "executor": event.executor,
                    "px": _s(event.px_sent),
                    "qty": _s(event.qty),
                }
            )
        if event.ack_ts_ms is not None and event.ack_ts_ms not in ack_seen:
            ack_seen.add(event.ack_ts_ms)
            steps.append(
                {
                    "kind": "answer",
                    "event_id": event.event_id,
                    "at_ms": event.ack_ts_ms,
                    "status": event.status.value,
                    "reason": event.reason,
                    "exchange_order_id": event.exchange_order_id,
                    "latency_ms": event.latency_ms,
                    "px_fill": _s(event.px_fill),
                    "qty_filled": _s(event.qty_filled),
                }
            )
    return steps


def explain(
    client_order_id: str,
    events: Iterable[ExecEvent],
    command: dict[str, Any] | None = None,
    input_note: str | None = None,
) -> dict[str, Any]:
    """The chain as a JSON-ready dict. `command` is the decoded input message (a decision or a
    signal), `input_note` why it is missing."""
    mine = sorted((e for e in events if e.client_order_id == client_order_id), key=event_seq)
    if not mine:
        return {"client_order_id": client_order_id, "found": False, "events": []}
    first, last = mine[0], mine[-1]
    return {
        "client_order_id": client_order_id,
        "found": True,
        "final_status": last.status.value,
        "input": {
            "topic": first.source.topic,
            "partition": first.source.partition,
            "offset": first.source.offset,
            "signal_row_id": first.signal_row_id,
            "command": command,
            "note": input_note,
        },
        "mode": first.mode,
        "scenario": first.scenario,
        "gates": gate_outcome(first),
        "rounding": {
            "applied": first.rounding_applied,
            "px_intent": _s(first.px_intent),
            "px_sent": _s(first.px_sent),
            "rounding_diff": _s(first.rounding_diff),
            "qty_intent": _s(command.get("qty")) if command else None,
            "qty": _s(first.qty),
        },
        "venue": venue_exchanges(mine),
        "events": [e.model_dump(mode="json") for e in mine],
    }


def render(chain: dict[str, Any]) -> str:
    """The chain as text for a person."""
    coid = chain["client_order_id"]
    if not chain["found"]:
        return f"order {coid}: no exec-event found"
    src = chain["input"]
    lines = [f"order {coid}  (final status {chain['final_status']})", ""]
    lines.append(
        f"1. input      {src['topic']}[{src['partition']}]@{src['offset']}  signal_row_id {src['signal_row_id']}"
    )
    command = src["command"]
    if command is not None:
        keys = ("action", "symbol", "side", "order_type", "tif", "qty", "px", "ts_ms", "event_ts_ms", "regime")
        shown = "  ".join(f"{k}={command[k]}" for k in keys if command.get(k) is not None)
        lines.append(f"   decoded    {shown}")
        extra = {k: command[k] for k in ("warmup", "guard_reason", "score") if command.get(k) not in (None, False)}
        if extra:
            lines.append("   flags      " + "  ".join(f"{k}={v}" for k, v in extra.items()))
    else:
        lines.append(f"   decoded    (not read: {src['note']})")
    gates = chain["gates"]
    lines.append(f"2. mode       {chain['mode']}  scenario {chain['scenario']}")
    verdict = gates["outcome"] + (f" ({gates['reason']})" if gates["reason"] else "")
    lines.append(f"3. gates      {verdict}; {'sent to the venue' if gates['sent_to_venue'] else 'never sent'}")
    rnd = chain["rounding"]
    moved = "applied" if rnd["applied"] else "none"
    lines.append(
        f"4. rounding   {moved}: px {rnd['px_intent']} -> {rnd['px_sent']} (diff {rnd['rounding_diff']}), "
        f"qty {rnd['qty_intent'] or '?'} -> {rnd['qty']}"
    )
    lines.append("5. venue")
    if not chain["venue"]:
        lines.append("   (no request)")
    for step in chain["venue"]:
        if step["kind"] == "request":
            lines.append(f"   -> request  at {step['at_ms']}  {step['executor']}  px {step['px']} qty {step['qty']}")
        else:
            detail = f"{step['status']}" + (f" ({step['reason']})" if step["reason"] else "")
            fill = f"  filled {step['qty_filled']} @ {step['px_fill']}" if step["px_fill"] else ""
            latency = f"  latency {step['latency_ms']} ms" if step["latency_ms"] is not None else ""
            venue_id = f"  venue id {step['exchange_order_id']}" if step["exchange_order_id"] else ""
            lines.append(f"   <- answer   at {step['at_ms']}  {detail}{fill}{latency}{venue_id}")
    lines.append("6. exec-events")
    for event in chain["events"]:
        reason = f"  reason {event['reason']}" if event["reason"] else ""
        lines.append(f"   {event['event_id']}  {event['status']}{reason}  event_ts_ms {event['event_ts_ms']}")
    return "\n".join(lines)
