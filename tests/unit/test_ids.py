from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from worker.contract.enums import Side
from worker.policy.ids import CLIENT_ORDER_ID_PATTERN, client_order_id, event_id


@given(
    row=st.text(min_size=1, max_size=128),
    ts=st.integers(min_value=0, max_value=2**53),
    side=st.sampled_from(list(Side)),
    qty=st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1e9"), places=8),
    px=st.none() | st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1e9"), places=8),
)
def test_client_order_id_fits_the_venue_rule(row: str, ts: int, side: Side, qty: Decimal, px: Decimal | None) -> None:
    coid = client_order_id(row, ts, side, qty, px)
    assert CLIENT_ORDER_ID_PATTERN.match(coid)
    assert client_order_id(row, ts, side, qty, px) == coid  # derived, not drawn


def test_equal_decimals_give_equal_ids_and_any_field_changes_it() -> None:
    base = client_order_id("r", 1, Side.BUY, Decimal("0.10"), Decimal("100"))
    assert base == client_order_id("r", 1, Side.BUY, Decimal("0.1"), Decimal("1E+2"))
    variants = {
        client_order_id("r2", 1, Side.BUY, Decimal("0.1"), Decimal("100")),
        client_order_id("r", 2, Side.BUY, Decimal("0.1"), Decimal("100")),
        client_order_id("r", 1, Side.SELL, Decimal("0.1"), Decimal("100")),
        client_order_id("r", 1, Side.BUY, Decimal("0.2"), Decimal("100")),
        client_order_id("r", 1, Side.BUY, Decimal("0.1"), Decimal("101")),
        client_order_id("r", 1, Side.BUY, Decimal("0.1"), None),
    }
    assert base not in variants and len(variants) == 6


def test_event_id_is_order_scoped_and_fits_the_charset() -> None:
    coid = client_order_id("r", 1, Side.BUY, Decimal(1), None)
    assert event_id(coid, 3) == f"{coid}.3"
