//! `execcore`: execworker's compiled hot path (PyO3). See rust/execcore/README.md.

mod dec;
mod decision;
mod engine;
mod files;
mod fold;
mod history;
mod record_batch;

use dec::Dec;
use decision::{Action, OrderType, Side, Tif};
use engine::PriceRounding;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};

fn parse_dec(s: &str) -> PyResult<Dec> {
    Dec::parse(s).ok_or_else(|| PyValueError::new_err(format!("not a decimal: {s:?}")))
}

fn parse_side(s: &str) -> PyResult<Side> {
    match s {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        _ => Err(PyValueError::new_err(format!("not a side: {s:?}"))),
    }
}

/// Decodes decisions into `worker.contract.messages.Decision` field dicts.
///
/// Built once with the Python objects a decision holds (the Decimal type and the enum members),
/// so that every value is made here, without a Python call per field but the Decimals'.
#[pyclass(frozen)]
struct DecisionDecoder {
    decimal: Py<PyAny>,
    sides: [Py<PyAny>; 2],
    order_types: [Py<PyAny>; 2],
    tifs: [Py<PyAny>; 3],
    actions: [Py<PyAny>; 3],
    names: Vec<Py<PyString>>,
}

fn member(members: &Bound<'_, PyDict>, key: &str) -> PyResult<Py<PyAny>> {
    members
        .get_item(key)?
        .map(Bound::unbind)
        .ok_or_else(|| PyValueError::new_err(format!("enum member {key} missing")))
}

#[pymethods]
impl DecisionDecoder {
    /// `members` maps each enum value ("BUY", "LIMIT", "GTC", "NEW", ...) to its member.
    #[new]
    fn new(py: Python<'_>, decimal: Py<PyAny>, members: &Bound<'_, PyDict>) -> PyResult<Self> {
        Ok(DecisionDecoder {
            decimal,
            sides: [member(members, "BUY")?, member(members, "SELL")?],
            order_types: [member(members, "LIMIT")?, member(members, "MARKET")?],
            tifs: [member(members, "GTC")?, member(members, "IOC")?, member(members, "FOK")?],
            actions: [member(members, "NEW")?, member(members, "CANCEL")?, member(members, "AMEND")?],
            names: decision::FIELD_NAMES.iter().map(|n| PyString::intern(py, n).unbind()).collect(),
        })
    }

    /// `(fields, fields_set)` for a valid decision, else the error class: "size", "json" or "schema".
    fn decode<'py>(&self, py: Python<'py>, value: &[u8], max_bytes: usize) -> PyResult<Bound<'py, PyAny>> {
        let d = match decision::decode(value, max_bytes) {
            Ok(d) => d,
            Err(class) => return Ok(PyString::intern(py, class.as_str()).into_any()),
        };
        let decimal = self.decimal.bind(py);
        let dec = |s: &str| decimal.call1((s,));
        let opt_dec = |s: &Option<std::borrow::Cow<'_, str>>| -> PyResult<Bound<'py, PyAny>> {
            match s {
                Some(s) => dec(s),
                None => Ok(py.None().into_bound(py)),
            }
        };
        let opt_str = |s: &Option<std::borrow::Cow<'_, str>>| -> Bound<'py, PyAny> {
            match s {
                Some(s) => PyString::new(py, s).into_any(),
                None => py.None().into_bound(py),
            }
        };
        let values: [Bound<'py, PyAny>; 23] = [
            PyString::new(py, &d.signal_row_id).into_any(),
            d.ts_ms.into_pyobject(py)?.into_any(),
            d.event_ts_ms.into_pyobject(py)?.into_any(),
            PyString::new(py, &d.symbol).into_any(),
            self.sides[match d.side {
                Side::Buy => 0,
                Side::Sell => 1,
            }]
            .bind(py)
            .clone(),
            dec(&d.qty)?,
            opt_dec(&d.px)?,
            self.order_types[match d.order_type {
                OrderType::Limit => 0,
                OrderType::Market => 1,
            }]
            .bind(py)
            .clone(),
            self.tifs[match d.tif {
                Tif::Gtc => 0,
                Tif::Ioc => 1,
                Tif::Fok => 2,
            }]
            .bind(py)
            .clone(),
            PyString::new(py, &d.regime).into_any(),
            PyString::new(py, &d.scenario).into_any(),
            dec(&d.tick_size)?,
            dec(&d.step_size)?,
            dec(&d.min_notional)?,
            pyo3::types::PyBool::new(py, d.warmup).to_owned().into_any(),
            opt_str(&d.guard_reason),
            d.consistency.into_pyobject(py)?.into_any(),
            pyo3::types::PyBool::new(py, d.weak_signal_throttle).to_owned().into_any(),
            dec(&d.costs_bps)?,
            self.actions[match d.action {
                Action::New => 0,
                Action::Cancel => 1,
                Action::Amend => 2,
            }]
            .bind(py)
            .clone(),
            opt_str(&d.target_client_order_id),
            opt_dec(&d.new_px)?,
            opt_dec(&d.new_qty)?,
        ];
        let fields = PyDict::new(py);
        let set = PySet::empty(py)?;
        for (i, v) in values.into_iter().enumerate() {
            let name = self.names[i].bind(py);
            fields.set_item(name, v)?;
            if d.fields_set & (1 << i) != 0 {
                set.add(name)?;
            }
        }
        Ok(PyTuple::new(py, [fields.into_any(), set.into_any()])?.into_any())
    }
}

/// The error class of a value the decision contract refuses, or None if it accepts it.
#[pyfunction]
fn decision_error_class(value: &[u8], max_bytes: usize) -> Option<&'static str> {
    decision::decode(value, max_bytes).err().map(|c| c.as_str())
}

/// `align_order` on decimal strings: `(qty, px, rounding_applied, rounding_diff)` as plain
/// strings, or the RoundingError reason as a str.
#[pyfunction]
#[pyo3(signature = (side, qty, px, tick_size, step_size, min_notional, rule))]
#[allow(clippy::too_many_arguments)]
fn align_order<'py>(
    py: Python<'py>,
    side: &str,
    qty: &str,
    px: Option<&str>,
    tick_size: &str,
    step_size: &str,
    min_notional: &str,
    rule: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let rule = PriceRounding::parse(rule).ok_or_else(|| PyValueError::new_err(format!("rounding rule {rule:?}")))?;
    let px = match px {
        Some(p) => Some(parse_dec(p)?),
        None => None,
    };
    let result = engine::align_order(
        parse_side(side)?,
        &parse_dec(qty)?,
        px.as_ref(),
        &parse_dec(tick_size)?,
        &parse_dec(step_size)?,
        &parse_dec(min_notional)?,
        rule,
    );
    match result {
        Err(reason) => Ok(PyString::intern(py, reason).into_any()),
        Ok(r) => {
            let px = r.px.as_ref().map(Dec::plain);
            Ok((r.qty.plain(), px, r.applied, r.diff.plain()).into_pyobject(py)?.into_any())
        }
    }
}

/// `worker.policy.ids.client_order_id` on decimal strings (any notation).
#[pyfunction]
#[pyo3(signature = (signal_row_id, ts_ms, side, qty, px))]
fn client_order_id(signal_row_id: &str, ts_ms: i64, side: &str, qty: &str, px: Option<&str>) -> PyResult<String> {
    let px = match px {
        Some(p) => Some(parse_dec(p)?),
        None => None,
    };
    Ok(engine::client_order_id(signal_row_id, ts_ms, parse_side(side)?, &parse_dec(qty)?, px.as_ref()))
}

/// `format(Decimal(value), "f")` for a decimal string in any notation.
#[pyfunction]
fn plain(value: &str) -> PyResult<String> {
    Ok(parse_dec(value)?.plain())
}

/// `keep_fraction`'s 64-bit integer for an order id.
#[pyfunction]
fn keep_bits(client_order_id: &str) -> u64 {
    engine::keep_bits(client_order_id)
}

/// `LatencyModel.sample_ms` with the model's descending threshold table.
#[pyfunction]
fn latency_ms(base_ms: i64, thresholds: Vec<u128>, seed: i64, client_order_id: &str) -> i64 {
    engine::latency_ms(base_ms, &thresholds, seed, client_order_id)
}

/// `slippage_bps` on decimal strings; None when either price is None.
#[pyfunction]
#[pyo3(signature = (side, px_intent, px_fill))]
fn slippage_bps(side: &str, px_intent: Option<&str>, px_fill: Option<&str>) -> PyResult<Option<String>> {
    let intent = match px_intent {
        Some(p) => Some(parse_dec(p)?),
        None => None,
    };
    let fill = match px_fill {
        Some(p) => Some(parse_dec(p)?),
        None => None,
    };
    Ok(engine::slippage_bps(parse_side(side)?, intent.as_ref(), fill.as_ref()).map(|d| d.plain()))
}

fn text(v: &Bound<'_, PyAny>) -> PyResult<String> {
    // Enum members are str subclasses; Decimals print in scientific or plain notation.
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    let s = v.str()?;
    let s = s.to_str()?;
    Ok(parse_dec(s)?.plain())
}

fn opt_text(v: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if v.is_none() { Ok(None) } else { text(v).map(Some) }
}

fn opt_int(v: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    if v.is_none() { Ok(None) } else { v.extract().map(Some) }
}

/// The canonical line of an exec-event, from its field dict (`event.__dict__`) and its source's.
#[pyfunction]
fn encode_exec_event<'py>(
    py: Python<'py>,
    fields: &Bound<'py, PyDict>,
    source: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyBytes>> {
    let get = |name: &str| -> PyResult<Bound<'py, PyAny>> {
        fields.get_item(name)?.ok_or_else(|| PyValueError::new_err(format!("exec-event field {name} missing")))
    };
    let sget = |name: &str| -> PyResult<Bound<'py, PyAny>> {
        source.get_item(name)?.ok_or_else(|| PyValueError::new_err(format!("source field {name} missing")))
    };
    let event_id = text(&get("event_id")?)?;
    let client_order_id = text(&get("client_order_id")?)?;
    let signal_row_id = text(&get("signal_row_id")?)?;
    let symbol = text(&get("symbol")?)?;
    let side = text(&get("side")?)?;
    let qty = text(&get("qty")?)?;
    let px_intent = opt_text(&get("px_intent")?)?;
    let px_sent = opt_text(&get("px_sent")?)?;
    let px_fill = opt_text(&get("px_fill")?)?;
    let qty_filled = text(&get("qty_filled")?)?;
    let rounding_applied: bool = get("rounding_applied")?.extract()?;
    let rounding_diff = text(&get("rounding_diff")?)?;
    let slippage = opt_text(&get("slippage_bps")?)?;
    let exchange = opt_text(&get("exchange_order_id")?)?;
    let status = text(&get("status")?)?;
    let reason = opt_text(&get("reason")?)?;
    let topic = text(&sget("topic")?)?;
    let executor = text(&get("executor")?)?;
    let mode = text(&get("mode")?)?;
    let scenario = text(&get("scenario")?)?;
    // Optional since v1: absent from a dict built before they existed, None when unset.
    let optional = |name: &str| -> PyResult<Option<Bound<'py, PyAny>>> { fields.get_item(name) };
    let order_type = match optional("order_type")? {
        Some(v) => opt_text(&v)?,
        None => None,
    };
    let tif = match optional("tif")? {
        Some(v) => opt_text(&v)?,
        None => None,
    };
    let recv_window_ms = match optional("recv_window_ms")? {
        Some(v) => opt_int(&v)?,
        None => None,
    };
    let attempt = match optional("attempt")? {
        Some(v) => opt_int(&v)?,
        None => None,
    };
    let observed: Option<Vec<String>> = match optional("observed")? {
        Some(v) if !v.is_none() => Some(v.extract()?),
        _ => None,
    };
    let event = engine::Event {
        event_id: &event_id,
        client_order_id: &client_order_id,
        signal_row_id: &signal_row_id,
        symbol: &symbol,
        side: &side,
        qty: &qty,
        px_intent: px_intent.as_deref(),
        px_sent: px_sent.as_deref(),
        px_fill: px_fill.as_deref(),
        qty_filled: &qty_filled,
        rounding_applied,
        rounding_diff: &rounding_diff,
        slippage_bps: slippage.as_deref(),
        exchange_order_id: exchange.as_deref(),
        status: &status,
        reason: reason.as_deref(),
        sent_ts_ms: opt_int(&get("sent_ts_ms")?)?,
        ack_ts_ms: opt_int(&get("ack_ts_ms")?)?,
        event_ts_ms: get("event_ts_ms")?.extract()?,
        latency_ms: opt_int(&get("latency_ms")?)?,
        executor: &executor,
        mode: &mode,
        scenario: &scenario,
        source_topic: &topic,
        source_partition: sget("partition")?.extract()?,
        source_offset: sget("offset")?.extract()?,
        recv_window_ms,
        attempt,
        order_type: order_type.as_deref(),
        tif: tif.as_deref(),
        observed: observed.as_deref(),
    };
    let mut out = Vec::with_capacity(768);
    engine::encode_event(&mut out, &event);
    Ok(PyBytes::new(py, &out))
}

/// The replay fold of `fold.rs`, driven in chunks so that its output streams to the sinks.
#[pyclass]
struct ReplayFold {
    inner: fold::Fold,
}

#[pymethods]
impl ReplayFold {
    /// `data`: the whole JSONL file, or `values`: the records (exactly one of them).
    #[new]
    #[pyo3(signature = (data, values, *, seed, rounding, min_consistency, mode, executor, latency_base_ms, thresholds, max_bytes))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data: Option<&[u8]>,
        values: Option<Vec<Vec<u8>>>,
        seed: i64,
        rounding: &str,
        min_consistency: f64,
        mode: String,
        executor: String,
        latency_base_ms: i64,
        thresholds: Vec<u128>,
        max_bytes: usize,
    ) -> PyResult<Self> {
        let rounding =
            PriceRounding::parse(rounding).ok_or_else(|| PyValueError::new_err(format!("rounding rule {rounding:?}")))?;
        let config = fold::Config {
            seed,
            rounding,
            min_consistency,
            mode,
            executor,
            latency_base_ms,
            thresholds,
            max_bytes,
        };
        let inner = py.detach(|| match (data, &values) {
            (Some(data), None) => Ok(fold::Fold::new(config, fold::split_lines(data).into_iter())),
            (None, Some(values)) => Ok(fold::Fold::new(config, values.iter().map(Vec::as_slice))),
            _ => Err(PyValueError::new_err("give data or values")),
        })?;
        Ok(ReplayFold { inner })
    }

    #[getter]
    fn decisions(&self) -> usize {
        self.inner.decisions()
    }

    #[getter]
    fn events(&self) -> u64 {
        self.inner.events
    }

    #[getter]
    fn position(&self) -> usize {
        self.inner.position()
    }

    #[getter]
    fn done(&self) -> bool {
        self.inner.done()
    }

    /// Folds on until `max_events` events are made; returns them as (symbol, event_ts_ms,
    /// event_id, payload) when `keep`, else an empty list (they are digested and counted only).
    fn step<'py>(&mut self, py: Python<'py>, max_events: usize, keep: bool) -> PyResult<Bound<'py, PyList>> {
        let inner = &mut self.inner;
        let lines = py.detach(|| inner.step(max_events, keep));
        let list = PyList::empty(py);
        for line in lines {
            list.append((line.symbol, line.event_ts_ms, line.event_id, PyBytes::new(py, &line.payload)))?;
        }
        Ok(list)
    }

    fn hexdigest(&self) -> String {
        self.inner.hexdigest()
    }

    fn rejected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.inner.rejected {
            d.set_item(*k, *v)?;
        }
        Ok(d)
    }

    fn by_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.inner.by_status {
            d.set_item(*k, *v)?;
        }
        Ok(d)
    }
}

/// The takeover rebuild's fold of one partition's exec-events (`history.rs`).
#[pyclass]
struct HistoryFold {
    orders: history::Orders<Py<PyBytes>>,
    statuses: Vec<Py<PyAny>>,
    max_bytes: usize,
    events_read: u64,
    source_high: std::collections::HashMap<String, i64>,
    /// Set by `restore_once`: each order's first event is reported only when it can change the
    /// policy state (see `history::Restores`).
    restores: Option<history::Restores>,
}

impl HistoryFold {
    /// Folds one decoded event (`last` makes the bytes the order keeps): reports the order's
    /// first event in `firsts` (if it can change the policy) or the illegal transition.
    fn fold_event<'py>(
        &mut self,
        py: Python<'py>,
        event: &history::Event<'_>,
        last: impl FnOnce() -> Py<PyBytes>,
        firsts: &Bound<'py, PyList>,
        illegal: &Bound<'py, PyList>,
    ) -> PyResult<()> {
        match history::apply(&mut self.orders, event, last) {
            Ok(1) if self.restores.as_mut().is_none_or(|r| r.changes(event)) => firsts.append((
                event.mode.as_ref(),
                event.symbol.as_ref(),
                self.statuses[event.status as usize].bind(py),
                event.reason.as_deref(),
                event.event_ts_ms,
            ))?,
            Ok(_) => {}
            Err(bad) => illegal.append((
                bad.client_order_id,
                self.statuses[bad.current as usize].bind(py),
                self.statuses[bad.new as usize].bind(py),
                bad.event_id,
            ))?,
        }
        self.events_read += 1;
        match self.source_high.get_mut(event.source_topic.as_ref()) {
            Some(high) => *high = (*high).max(event.source_offset),
            None => {
                self.source_high.insert(event.source_topic.to_string(), event.source_offset);
            }
        }
        Ok(())
    }

    /// One order as a `cls` instance made without its `__init__`: its slots status, events,
    /// expires_ms, attempt, venue_confirmed, cancel_requested, `_raw` (the latest event's
    /// bytes) and `_event` (None) set.
    fn record<'py>(
        &self,
        py: Python<'py>,
        new: &Bound<'py, PyAny>,
        cls: &Bound<'py, PyAny>,
        order: &history::Order<Py<PyBytes>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let names = [
            pyo3::intern!(py, "status"),
            pyo3::intern!(py, "events"),
            pyo3::intern!(py, "expires_ms"),
            pyo3::intern!(py, "attempt"),
            pyo3::intern!(py, "venue_confirmed"),
            pyo3::intern!(py, "cancel_requested"),
            pyo3::intern!(py, "_raw"),
            pyo3::intern!(py, "_event"),
        ];
        let record = new.call1((cls,))?;
        let values: [Bound<'py, PyAny>; 8] = [
            self.statuses[order.status as usize].bind(py).clone(),
            order.events.into_pyobject(py)?.into_any(),
            order.expires_ms.into_pyobject(py)?.into_any(),
            order.attempt.into_pyobject(py)?.into_any(),
            pyo3::types::PyBool::new(py, order.venue_confirmed).to_owned().into_any(),
            pyo3::types::PyBool::new(py, order.cancel_requested).to_owned().into_any(),
            order.last.bind(py).clone().into_any(),
            py.None().into_bound(py),
        ];
        for (name, value) in names.iter().zip(values.iter()) {
            // SAFETY: all three are live objects held by this frame. The generic setter is
            // `object.__setattr__`: it fills the slots of a frozen dataclass.
            let rc = unsafe { pyo3::ffi::PyObject_GenericSetAttr(record.as_ptr(), name.as_ptr(), value.as_ptr()) };
            if rc != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(record)
    }
}

#[pymethods]
impl HistoryFold {
    /// `statuses`: the `OrderStatus` members, in declaration order.
    #[new]
    fn new(statuses: Vec<Py<PyAny>>, max_bytes: usize) -> PyResult<Self> {
        if statuses.len() != history::STATUS_NAMES.len() {
            return Err(PyValueError::new_err("expected the 13 OrderStatus members"));
        }
        Ok(HistoryFold {
            orders: history::Orders::default(),
            statuses,
            max_bytes,
            events_read: 0,
            source_high: std::collections::HashMap::new(),
            restores: None,
        })
    }

    /// From now on, report an order's first event in `firsts` only when restoring it can change
    /// the pre-trade policy's state. Only for a policy whose every mode has no rate limit: its
    /// walls then always admit and never change, and a restore of a symbol already restored
    /// under the same mode (one that reached the wall, if this one does) does nothing.
    fn restore_once(&mut self) {
        self.restores = Some(history::Restores::default());
    }

    /// Folds `records[start:]` (objects with `.offset` and `.value`) below offset `end`.
    ///
    /// Returns `(stopped, republish, firsts, illegal)`: `stopped` is the index of the first record
    /// this decoder does not vouch for (nothing from it on is folded: the caller asks the model),
    /// or None; `republish` holds (symbol, event_ts_ms, event_id, index) of the events at or after
    /// `mark`; `firsts` (mode, symbol, status, reason, event_ts_ms) of each order's first event, in
    /// order; `illegal` (client_order_id, current, new, event_id) of each event skipped.
    #[allow(clippy::type_complexity)]
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        records: &Bound<'py, PyList>,
        start: usize,
        end: i64,
        mark: i64,
    ) -> PyResult<(Option<usize>, Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>)> {
        let republish = PyList::empty(py);
        let firsts = PyList::empty(py);
        let illegal = PyList::empty(py);
        let offset_name = pyo3::intern!(py, "offset");
        let value_name = pyo3::intern!(py, "value");
        for index in start..records.len() {
            let record = records.get_item(index)?;
            let offset: i64 = record.getattr(offset_name)?.extract()?;
            let value = record.getattr(value_name)?;
            if offset >= end || value.is_none() {
                continue;
            }
            let value = value.cast::<PyBytes>()?;
            let bytes = value.as_bytes();
            let Some(event) = history::decode(bytes, self.max_bytes) else {
                return Ok((Some(index), republish, firsts, illegal));
            };
            self.fold_event(py, &event, || value.clone().unbind(), &firsts, &illegal)?;
            if offset >= mark {
                republish.append((event.symbol.as_ref(), event.event_ts_ms, event.event_id.as_ref(), index))?;
            }
        }
        Ok((None, republish, firsts, illegal))
    }

    /// Folds one partition's fetched record batches (`record_batch.rs`: read_committed, as
    /// aiokafka reads them) from `fetch_offset` on, the records below offset `end`. `aborted`:
    /// the Fetch response's (producer_id, first_offset) of aborted transactions.
    ///
    /// Returns `(next_offset, unhandled, refused, republish, firsts, illegal)`: where the next
    /// fetch starts; `unhandled` if a batch this reader does not handle starts at `next_offset`
    /// (read on from there another way); `refused`: (offset, value) of a record this decoder
    /// does not vouch for (nothing from it on is folded: the caller asks the model, then calls
    /// again from offset + 1); `republish` holds (symbol, event_ts_ms, event_id, value) of the
    /// events at or after `mark`; `firsts` and `illegal` as `feed`.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn feed_batches<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        fetch_offset: i64,
        end: i64,
        mark: i64,
        aborted: Vec<(i64, i64)>,
    ) -> PyResult<(
        i64,
        bool,
        Option<(i64, Bound<'py, PyBytes>)>,
        Bound<'py, PyList>,
        Bound<'py, PyList>,
        Bound<'py, PyList>,
    )> {
        let republish = PyList::empty(py);
        let firsts = PyList::empty(py);
        let illegal = PyList::empty(py);
        let mut refused = None;
        let mut failed: Option<PyErr> = None;
        let read = record_batch::read(data.as_bytes(), fetch_offset, &aborted, |record| {
            let (offset, Some(value)) = (record.offset, record.value) else {
                return true; // a tombstone
            };
            if offset >= end {
                return true;
            }
            let Some(event) = history::decode(value, self.max_bytes) else {
                refused = Some((offset, PyBytes::new(py, value)));
                return false;
            };
            let line = (offset >= mark).then(|| PyBytes::new(py, value));
            let last = || line.as_ref().map_or_else(|| PyBytes::new(py, value).unbind(), |l| l.clone().unbind());
            let folded = self.fold_event(py, &event, last, &firsts, &illegal).and_then(|()| match &line {
                Some(line) => republish.append((event.symbol.as_ref(), event.event_ts_ms, event.event_id.as_ref(), line)),
                None => Ok(()),
            });
            if let Err(err) = folded {
                failed = Some(err);
                return false;
            }
            true
        });
        if let Some(err) = failed {
            return Err(err);
        }
        let unhandled = read.stop == Some(record_batch::Stop::Unhandled);
        Ok((read.next_offset, unhandled, refused, republish, firsts, illegal))
    }

    #[getter]
    fn events_read(&self) -> u64 {
        self.events_read
    }

    fn source_high<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.source_high {
            d.set_item(k, *v)?;
        }
        Ok(d)
    }

    /// The table as {client_order_id: record} (`record` above), without removing anything.
    fn records<'py>(&self, py: Python<'py>, cls: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let new = cls.getattr(pyo3::intern!(py, "__new__"))?;
        let out = PyDict::new(py);
        for (id, order) in &self.orders {
            out.set_item(id, self.record(py, &new, cls, order)?)?;
        }
        Ok(out)
    }

    /// Removes one order and returns it as a `cls` record, or None if the fold does not hold it.
    fn take<'py>(&mut self, py: Python<'py>, client_order_id: &str, cls: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(order) = self.orders.remove(client_order_id) else {
            return Ok(None);
        };
        let new = cls.getattr(pyo3::intern!(py, "__new__"))?;
        self.record(py, &new, cls, &order).map(Some)
    }

    /// Removes the orders whose status is not in `settled` (indices into `statuses`) and returns
    /// them as {client_order_id: `cls` record}.
    fn take_unsettled<'py>(&mut self, py: Python<'py>, settled: Vec<usize>, cls: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let mask = settled.iter().fold(0u16, |m, &s| m | (1 << s));
        let ids: Vec<String> = self
            .orders
            .iter()
            .filter(|(_, o)| mask & (1 << o.status) == 0)
            .map(|(id, _)| id.clone())
            .collect();
        let new = cls.getattr(pyo3::intern!(py, "__new__"))?;
        let out = PyDict::new(py);
        for id in ids {
            if let Some(order) = self.orders.remove(&id) {
                out.set_item(&id, self.record(py, &new, cls, &order)?)?;
            }
        }
        Ok(out)
    }

    /// Forgets an order (a newer record replaced it); true if it was held.
    fn discard(&mut self, client_order_id: &str) -> bool {
        self.orders.remove(client_order_id).is_some()
    }

    /// How many held orders are in each status.
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut counts = [0u64; history::STATUS_NAMES.len()];
        for order in self.orders.values() {
            counts[order.status as usize] += 1;
        }
        let d = PyDict::new(py);
        for (status, count) in counts.iter().enumerate() {
            if *count > 0 {
                d.set_item(self.statuses[status].bind(py), *count)?;
            }
        }
        Ok(d)
    }

    /// The ids of the held orders.
    fn ids(&self) -> Vec<String> {
        self.orders.keys().cloned().collect()
    }

    fn __len__(&self) -> usize {
        self.orders.len()
    }
}

/// The committed records of one partition's fetched record batches (`record_batch.rs`), for the
/// differential tests against aiokafka: `(next_offset, unhandled, [(offset, value)])`.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn read_record_batches<'py>(
    py: Python<'py>,
    data: &[u8],
    fetch_offset: i64,
    aborted: Vec<(i64, i64)>,
) -> (i64, bool, Vec<(i64, Option<Bound<'py, PyBytes>>)>) {
    let mut out = Vec::new();
    let read = record_batch::read(data, fetch_offset, &aborted, |record| {
        out.push((record.offset, record.value.map(|v| PyBytes::new(py, v))));
        true
    });
    (read.next_offset, read.stop == Some(record_batch::Stop::Unhandled), out)
}

/// The outbox's file round (files.rs) with the GIL released: every `(part, target, content)`
/// written and fsync'ed (`threads` at a time), renamed onto its target in order, then every
/// directory in `directories` fsync'ed. Returns how many were renamed: all of them, or fewer when
/// a rename failed with PermissionError (the caller retries that one and the rest; directories
/// are then not synced). Any other failure raises OSError.
#[pyfunction]
fn write_files(
    py: Python<'_>,
    files: Vec<(String, String, Bound<'_, PyBytes>)>,
    directories: Vec<String>,
    threads: usize,
) -> PyResult<usize> {
    let staged: Vec<files::Staged> = files
        .into_iter()
        .map(|(part, target, content)| files::Staged { part, target, content: content.as_bytes().to_vec() })
        .collect();
    let outcome = py.detach(|| -> std::io::Result<usize> {
        files::write_all_synced(&staged, threads)?;
        match files::rename_all(&staged) {
            (done, Some(error)) if error.kind() == std::io::ErrorKind::PermissionDenied => Ok(done),
            (_, Some(error)) => Err(error),
            (done, None) => {
                files::sync_directories(&directories)?;
                Ok(done)
            }
        }
    });
    outcome.map_err(PyErr::from)
}

#[pymodule]
fn execcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DecisionDecoder>()?;
    m.add_class::<ReplayFold>()?;
    m.add_class::<HistoryFold>()?;
    m.add_function(wrap_pyfunction!(decision_error_class, m)?)?;
    m.add_function(wrap_pyfunction!(align_order, m)?)?;
    m.add_function(wrap_pyfunction!(client_order_id, m)?)?;
    m.add_function(wrap_pyfunction!(plain, m)?)?;
    m.add_function(wrap_pyfunction!(keep_bits, m)?)?;
    m.add_function(wrap_pyfunction!(latency_ms, m)?)?;
    m.add_function(wrap_pyfunction!(slippage_bps, m)?)?;
    m.add_function(wrap_pyfunction!(encode_exec_event, m)?)?;
    m.add_function(wrap_pyfunction!(read_record_batches, m)?)?;
    m.add_function(wrap_pyfunction!(write_files, m)?)?;
    Ok(())
}
