"""Checkers on tiny hand-written histories (each anomaly found, and not when absent), the
history reader's errors, property tests over histories of a correct model log, and histories
of deliberately broken systems (acks without quorum; follower reads without ReadIndex) that
must go red. The models are small on purpose and sit next to their assertions."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chaos.checkers import check_all, check_dir, expected_topics
from chaos.history import (
    HistoryWriter,
    MalformedLine,
    MalformedOp,
    Op,
    UnpairedOp,
    iter_history,
    pair_ops,
    read_history,
)


class H:
    """A history under construction; each op is invoked and completed at once unless split."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.t = 0

    def ev(self, process: Any, typ: str, f: str, value: Any = None, **kw: Any) -> Op:
        self.t += 10
        op = Op(
            process=process, type=typ, f=f, value=value, time=self.t, line=len(self.ops) + 1, **kw
        )
        self.ops.append(op)
        return op

    def op(
        self,
        process: Any,
        f: str,
        value: Any = None,
        typ: str = "ok",
        out: Any = None,
        inv: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        self.ev(process, "invoke", f, value, **(inv if inv is not None else kw))
        self.ev(process, typ, f, value if out is None else out, **kw)

    def send(
        self, p: Any, v: Any, offset: int | None, part: int = 0, typ: str = "ok", f: str = "send"
    ) -> None:
        if typ == "ok":
            self.op(
                p,
                f,
                v,
                inv={"topic": "q", "partition": part},
                topic="q",
                partition=part,
                offset=offset,
            )
        else:
            self.op(p, f, v, typ=typ, topic="q", partition=part)

    def poll(self, p: Any, items: list[list[Any]], typ: str = "ok") -> None:
        self.op(p, "poll", None, typ=typ, out=items, inv={}, topic="q")

    def drain(self, items: list[list[Any]], part: int = 0, f: str = "drain", **kw: Any) -> None:
        self.op("drainer", f, None, out=items, topic="q", partition=part, **kw)

    def check(self, workloads: list[str] | None = None) -> dict[str, Any]:
        return check_all(self.ops, workloads)


def counts(res: dict[str, Any]) -> dict[str, int]:
    return {k: v["count"] for k, v in res["anomalies"].items()}


def queue_ok() -> H:
    h = H()
    h.send(0, "a", 0)
    h.send(0, "b", 1)
    h.send(1, "c", 3)  # offset 2 is a control entry: offsets may have gaps
    h.poll(9, [[0, 0, "a"], [0, 1, "b"]])
    h.poll(9, [[0, 3, "c"]])
    return h


def test_valid_queue_history_has_no_anomalies() -> None:
    h = queue_ok()
    h.drain([[0, "a"], [1, "b"], [3, "c"]])
    res = h.check()
    assert res["valid"] is True, res["anomalies"]
    assert res["anomalies"] == {}
    assert res["stats"]["checkers"]["queue/lost"]["acknowledged"] == 3


def test_lost_acknowledged_record() -> None:
    h = queue_ok()
    h.drain([[0, "a"], [3, "c"]])
    res = h.check()
    assert res["valid"] is False
    assert counts(res)["lost"] == 1
    assert res["anomalies"]["lost"]["examples"][0]["value"] == "b"


def test_no_final_drain_is_unknown_not_valid() -> None:
    assert queue_ok().check()["valid"] == "unknown"


def test_indeterminate_append_may_be_absent_or_present() -> None:
    for present in (False, True):
        h = queue_ok()
        h.send(2, "maybe", None, typ="info")
        h.drain([[0, "a"], [1, "b"], [3, "c"]] + ([[4, "maybe"]] if present else []))
        res = h.check()
        assert res["valid"] is True, res["anomalies"]
        lost = res["stats"]["checkers"]["queue/lost"]
        assert lost["indeterminate_present" if present else "indeterminate_absent"] == 1


def test_never_completed_invocation_counts_as_indeterminate() -> None:
    h = queue_ok()
    h.drain([[0, "a"], [1, "b"], [3, "c"], [4, "late"]])
    h.ev(5, "invoke", "send", "late", topic="q", partition=0)  # the recorder died here
    assert h.check()["valid"] is True


def test_failed_append_that_shows_up_is_an_aborted_read() -> None:
    h = queue_ok()
    h.send(2, "nope", None, typ="fail")
    h.drain([[0, "a"], [1, "b"], [3, "c"], [4, "nope"]])
    assert counts(h.check()) == {"aborted-read": 1}


def test_unexpected_value() -> None:
    h = queue_ok()
    h.drain([[0, "a"], [1, "b"], [3, "c"], [4, "ghost"]])
    assert counts(h.check()) == {"unexpected": 1}


def test_duplicate() -> None:
    h = queue_ok()
    h.drain([[0, "a"], [1, "b"], [3, "c"], [4, "b"]])
    c = counts(h.check())
    assert c["duplicate"] == 1
    assert "lost" not in c


def test_inconsistent_offsets_between_reads() -> None:
    h = queue_ok()
    h.poll(8, [[0, 0, "a"], [0, 1, "c"]])  # another consumer saw "c" at offset 1
    h.drain([[0, "a"], [1, "b"], [3, "c"]])
    c = counts(h.check())
    assert c["inconsistent-offset"] == 1


def test_ack_naming_the_wrong_offset_is_inconsistent() -> None:
    h = H()
    h.send(0, "a", 0)
    h.send(0, "b", 5)  # acked at 5, but the log has it at 1
    h.drain([[0, "a"], [1, "b"]])
    assert counts(h.check())["inconsistent-offset"] == 1


def test_reorder_within_a_producer() -> None:
    h = H()
    h.send(0, "a", 0)
    h.send(0, "b", 1)
    h.drain([[0, "b"], [1, "a"]])
    c = counts(h.check())
    assert c["reorder"] == 1
    # Different producers may interleave freely, so only one pair is reported.
    h2 = H()
    h2.send(0, "a", 1)
    h2.op(1, "send", "b", inv={"topic": "q", "partition": 0}, topic="q", partition=0, offset=0)
    h2.drain([[0, "b"], [1, "a"]])
    assert "reorder" not in counts(h2.check())


def test_consumer_skip_and_step_back() -> None:
    h = queue_ok()
    h.poll(7, [[0, 0, "a"], [0, 3, "c"]])  # skipped "b" at 1 (offset 2 is no record)
    h.poll(6, [[0, 1, "b"], [0, 0, "a"]])  # went back without a reset
    h.drain([[0, "a"], [1, "b"], [3, "c"]])
    c = counts(h.check())
    assert c == {"poll-skip": 1, "poll-nonmonotonic": 1}
    # An assign, or a poll with an unknown outcome, resets the consumer's position.
    h2 = queue_ok()
    h2.poll(9, [], typ="info")
    h2.poll(9, [[0, 0, "a"]])
    h2.op(9, "assign", [["q", 0]])
    h2.poll(9, [[0, 3, "c"]])
    h2.drain([[0, "a"], [1, "b"], [3, "c"]])
    assert h2.check()["valid"] is True


def test_nonlinearizable_append() -> None:
    h = H()
    h.send(0, "a", 1)
    h.send(1, "b", 0)  # began after "a" was acknowledged, yet got a lower offset
    h.drain([[0, "b"], [1, "a"]])
    c = counts(h.check())
    assert c["nonlinearizable-append"] == 1
    # Concurrent appends may take either order.
    h2 = H()
    h2.ev(0, "invoke", "send", "a", topic="q", partition=0)
    h2.ev(1, "invoke", "send", "b", topic="q", partition=0)
    h2.ev(0, "ok", "send", "a", topic="q", partition=0, offset=1)
    h2.ev(1, "ok", "send", "b", topic="q", partition=0, offset=0)
    h2.drain([[0, "b"], [1, "a"]])
    assert h2.check()["valid"] is True


def test_indeterminate_append_that_landed_is_bound_by_real_time() -> None:
    h = H()
    h.send(0, "a", 1)
    h.send(1, "x", None, typ="info")  # began after "a" was acked; shows up below it
    h.drain([[0, "x"], [1, "a"]])
    assert counts(h.check())["nonlinearizable-append"] == 1


def log_history(stale: bool) -> H:
    h = H()
    h.send(0, 1, 0, f="append")
    h.send(0, 2, 1, f="append")
    h.op(5, "read", None, out=[[0, 1]] if stale else [[0, 1], [1, 2]], topic="q", partition=0)
    h.op(5, "read", None, out=[[0, 1], [1, 2]], topic="q", partition=0, final=True)
    return h


def test_stale_read() -> None:
    assert log_history(stale=False).check()["valid"] is True
    res = log_history(stale=True).check()
    assert counts(res) == {"stale-read": 1}
    # A read concurrent with the append may miss it.
    h = H()
    h.send(0, 1, 0, f="append")
    h.ev(0, "invoke", "append", 2, topic="q", partition=0)
    h.op(5, "read", None, out=[[0, 1]], topic="q", partition=0)
    h.ev(0, "ok", "append", 2, topic="q", partition=0, offset=1)
    h.op(5, "read", None, out=[[0, 1], [1, 2]], topic="q", partition=0, final=True)
    assert h.check()["valid"] is True


def test_log_without_a_marked_final_read_uses_the_latest() -> None:
    h = H()
    h.send(0, 1, 0, f="append")
    h.op(5, "read", None, out=[], topic="q", partition=0)
    assert counts(h.check()) == {"lost": 1}


def cdc(h: H, p: Any, key: str, version: int, offset: int | None, typ: str = "ok") -> None:
    kw: dict[str, Any] = {"topic": "c", "partition": 0, "key": key}
    if typ == "ok":
        h.op(p, "cdc-send", version, inv=kw, offset=offset, **kw)
    else:
        h.op(p, "cdc-send", version, typ=typ, **kw)


def cdc_base() -> H:
    h = H()
    cdc(h, 0, "k", 1, 0)
    cdc(h, 0, "k", 2, None, typ="fail")
    cdc(h, 0, "k", 3, 1)
    cdc(h, 0, "k", 4, 2)
    return h


def test_cdc_order() -> None:
    h = cdc_base()
    h.op(9, "cdc-poll", None, out=[[0, 0, "k", 1], [0, 1, "k", 3]], inv={}, topic="c")
    h.op(9, "cdc-poll", None, out=[[0, 2, "k", 4]], inv={}, topic="c")
    h.op(
        "d", "cdc-drain", None, out=[[0, "k", 1], [1, "k", 3], [2, "k", 4]], topic="c", partition=0
    )
    assert h.check()["valid"] is True  # version 2 failed, so its absence is fine
    bad = cdc_base()
    bad.op(9, "cdc-poll", None, out=[[0, 0, "k", 1], [0, 2, "k", 4]], inv={}, topic="c")
    bad.op(8, "cdc-poll", None, out=[[0, 1, "k", 3], [0, 0, "k", 1]], inv={}, topic="c")
    bad.op(
        "d", "cdc-drain", None, out=[[0, "k", 1], [1, "k", 3], [2, "k", 4]], topic="c", partition=0
    )
    c = counts(bad.check())
    assert c["cdc-missing"] == 2  # consumer 9 missed 3; consumer 8 started at 3, missing 1
    assert c["cdc-out-of-order"] == 1


def test_metadata_convergence() -> None:
    def base() -> H:
        h = H()
        h.op(0, "create", "t1")
        h.op(0, "create", "t2")
        h.op(1, "delete", "t2")
        h.op(1, "create", "t3", typ="info")  # may or may not exist
        h.op(1, "create", "t4", typ="fail")
        return h

    h = base()
    for node in (1, 2, 3):
        h.op(9, "list", None, out=["t1", "other"], node=node, final=True)
    assert h.check()["valid"] is True
    assert expected_topics(pair_ops(h.ops)) == {"t1": "present", "t2": "absent", "t3": "either"}
    bad = base()
    bad.op(9, "list", None, out=["t1", "t2", "t3"], node=1, final=True)
    bad.op(9, "list", None, out=["t1", "t2"], node=2, final=True)
    assert counts(bad.check()) == {"metadata-divergence": 1, "metadata-mismatch": 1}
    nolists = base()
    nolists.op(9, "list", None, out=["t1"])  # not final: says nothing about convergence
    assert nolists.check()["valid"] == "unknown"


def test_concurrent_create_and_delete_accept_either() -> None:
    h = H()
    h.ev(0, "invoke", "create", "t")
    h.ev(1, "invoke", "delete", "t")
    h.ev(0, "ok", "create", "t")
    h.ev(1, "ok", "delete", "t")
    assert expected_topics(pair_ops(h.ops)) == {"t": "either"}


def test_requested_workload_without_ops_is_unknown() -> None:
    h = queue_ok()
    h.drain([[0, "a"], [1, "b"], [3, "c"]])
    assert h.check(["queue"])["valid"] is True
    assert h.check(["queue", "log"])["valid"] == "unknown"
    with pytest.raises(ValueError):
        h.check(["nope"])


# --- the history file ------------------------------------------------------------------


def test_writer_reader_round_trip_and_check_dir(tmp_path: Any) -> None:
    with HistoryWriter(tmp_path / "history.jsonl") as w:
        a = w.invoke(0, "send", "a", topic="q", partition=0, time_ns=1)
        w.complete(a, "ok", "a", offset=0, time_ns=2, trace="x")
        d = w.invoke(1, "drain", topic="q", partition=0, time_ns=3)
        w.complete(d, "ok", [[0, "a"]], time_ns=4)
    ops = read_history(tmp_path / "history.jsonl")
    assert [o.line for o in ops] == [1, 2, 3, 4]
    assert ops[1].partition == 0 and ops[1].offset == 0 and ops[1].extra == {"trace": "x"}
    assert ops[3].partition == 0  # carried over from the invocation
    res = check_dir(tmp_path)
    assert res["valid"] is True
    json.dumps(res)  # results.json is written from this dict as is


def test_writer_flushes_every_event() -> None:
    buf = io.StringIO()
    w = HistoryWriter(buf)
    w.invoke("p", "poll", time_ns=5)
    assert json.loads(buf.getvalue()) == {
        "process": "p",
        "type": "invoke",
        "f": "poll",
        "value": None,
        "time": 5,
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"process": 0, "type": "ok", "f": "send"', "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"process": 0, "type": "ok", "f": "send"}', "missing required key 'time'"),
        ('{"process": 0, "type": "done", "f": "send", "time": 1}', "type must be"),
        ('{"process": 0, "type": "ok", "f": "send", "time": "1"}', "time must be"),
        ('{"process": null, "type": "ok", "f": "send", "time": 1}', "process must be"),
        ('{"process": 0, "type": "ok", "f": "send", "time": 1, "offset": "3"}', "offset must be"),
    ],
)
def test_malformed_line_is_reported_with_its_number(line: str, reason: str) -> None:
    good = '{"process": 0, "type": "invoke", "f": "send", "value": 1, "time": 0}'
    with pytest.raises(MalformedLine) as e:
        list(iter_history([good, "", line, good]))
    assert e.value.line == 3
    assert reason in e.value.reason
    assert "line 3" in str(e.value)


def test_pairing_errors() -> None:
    h = H()
    h.ev(0, "invoke", "send", 1)
    h.ev(0, "invoke", "send", 2)
    with pytest.raises(UnpairedOp) as e:
        pair_ops(h.ops)
    assert e.value.line == 2
    h2 = H()
    h2.ev(0, "ok", "send", 1)
    with pytest.raises(UnpairedOp):
        pair_ops(h2.ops)


def test_malformed_op_shapes() -> None:
    h = H()
    h.poll(9, [[0, "zero", "a"]])
    with pytest.raises(MalformedOp) as e:
        h.check()
    assert e.value.line == 2
    h2 = H()
    h2.send(0, "a", 0)
    h2.send(1, "a", 1)
    with pytest.raises(MalformedOp, match="unique"):
        h2.check()
    h3 = H()
    h3.op(0, "send", "a", inv={"topic": "q", "partition": 0}, topic="q", partition=0)
    with pytest.raises(MalformedOp, match="offset"):
        h3.check()
    h4 = queue_ok()
    h4.op(9, "poll", None, out=[[0, 0, "a"]], inv={})  # no topic: would match nothing
    with pytest.raises(MalformedOp, match="topic"):
        h4.check()


# --- property tests: a correct model log, and one injected fault ---------------------------

PARTS = 2


class ModelLog:
    """A correct replicated log seen from outside: each operation takes effect atomically at
    one instant between its invocation and its completion; offsets may skip (control
    entries); an ``info`` outcome may hide an effect or its absence."""

    def __init__(self, workload: str, draw: Any) -> None:
        self.w, self.draw, self.h = workload, draw, H()
        self.logs: dict[int, list[tuple[int, Any]]] = {p: [] for p in range(PARTS)}
        self.next_offset = dict.fromkeys(range(PARTS), 0)
        self.pending: dict[int, dict[str, Any]] = {}
        self.positions: dict[int, dict[int, int]] = {}
        self.versions: dict[str, int] = {}
        self.counter = 0

    def item(self, p: int, o: int, v: Any, with_partition: bool) -> list[Any]:
        head = [p, o] if with_partition else [o]
        return head + (list(v) if self.w == "cdc" else [v])

    def step(self, proc: int) -> None:
        st_ = self.pending.get(proc)
        d = self.draw
        if proc < 10:  # a producer
            send = {"queue": "send", "log": "append", "cdc": "cdc-send"}[self.w]
            if st_ is None:
                if self.w == "cdc":
                    key = f"k{proc}-{d(st.integers(0, 1))}"
                    part = (proc + int(key[-1])) % PARTS
                    self.versions[key] = self.versions.get(key, 0) + 1
                    value: Any = (key, self.versions[key])
                    self.h.ev(proc, "invoke", send, value[1], topic="q", partition=part, key=key)
                else:
                    self.counter += 1
                    value, part = self.counter, d(st.integers(0, PARTS - 1))
                    self.h.ev(proc, "invoke", send, value, topic="q", partition=part)
                self.pending[proc] = {"f": send, "value": value, "part": part, "offset": None}
                return
            v, part, kw = st_["value"], st_["part"], {"topic": "q", "partition": st_["part"]}
            wire = v[1] if self.w == "cdc" else v
            if self.w == "cdc":
                kw["key"] = v[0]
            if st_["offset"] is None:
                outcome = d(st.sampled_from(["apply"] * 4 + ["fail", "info"]))
                if outcome == "apply":
                    self.next_offset[part] += d(st.sampled_from([0, 0, 0, 1]))  # control entry
                    offset = st_["offset"] = self.next_offset[part]
                    self.next_offset[part] += 1
                    self.logs[part].append((offset, v))
                    return
                self.h.ev(proc, outcome, send, wire, **kw)
            else:
                typ = d(st.sampled_from(["ok"] * 5 + ["info"]))
                self.h.ev(
                    proc,
                    typ,
                    send,
                    wire,
                    **kw,
                    **({"offset": st_["offset"]} if typ == "ok" else {}),
                )
            del self.pending[proc]
            return
        if self.w == "log":
            part = st_["part"] if st_ else d(st.integers(0, PARTS - 1))
            if st_ is None:
                self.h.ev(proc, "invoke", "read", None, topic="q", partition=part)
                self.pending[proc] = {"part": part}
                return
            items = [self.item(part, o, v, False) for o, v in self.logs[part]]
            self.h.ev(proc, "ok", "read", items, topic="q", partition=part)
            del self.pending[proc]
            return
        poll = "cdc-poll" if self.w == "cdc" else "poll"
        if st_ is None:
            if d(st.integers(0, 9)) == 0:
                self.h.op(proc, "cdc-assign" if self.w == "cdc" else "assign", [0, 1])
                self.positions[proc] = dict.fromkeys(range(PARTS), 0)
                return
            self.h.ev(proc, "invoke", poll, None, topic="q")
            self.pending[proc] = {}
            return
        pos = self.positions.setdefault(proc, dict.fromkeys(range(PARTS), 0))
        items = []
        for part in range(PARTS):
            n = d(st.integers(0, 3))
            for o, v in self.logs[part][pos[part] : pos[part] + n]:
                items.append(self.item(part, o, v, True))
            pos[part] = min(pos[part] + n, len(self.logs[part]))
        typ = d(st.sampled_from(["ok"] * 8 + ["info"]))
        self.h.ev(proc, typ, poll, items if typ == "ok" else None, topic="q")
        del self.pending[proc]

    def finish(self) -> H:
        for proc in list(self.pending):
            while proc in self.pending:
                self.step(proc)
        for part in range(PARTS):
            items = [self.item(part, o, v, False) for o, v in self.logs[part]]
            f = {"queue": "drain", "log": "read", "cdc": "cdc-drain"}[self.w]
            self.h.op("final", f, None, out=items, topic="q", partition=part, final=self.w == "log")
        return self.h


def model_history(data: Any, workload: str) -> H:
    m = ModelLog(workload, data.draw)
    procs = [0, 1, 2, 10, 11]
    for _ in range(data.draw(st.integers(0, 120))):
        m.step(data.draw(st.sampled_from(procs)))
    return m.finish()


# Modest example counts: these run in CI next to everything else (about a second unloaded).
PROPS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROPS
@given(data=st.data(), workload=st.sampled_from(["queue", "log", "cdc"]))
def test_correct_model_histories_are_valid(data: Any, workload: str) -> None:
    res = model_history(data, workload).check()
    assert res["valid"] in (True, "unknown") and res["anomalies"] == {}, res["anomalies"]
    if res["stats"]["operations"]:
        assert res["valid"] is True


def _final(h: H, part: int) -> Op:
    return next(
        o
        for o in reversed(h.ops)
        if o.type == "ok" and o.partition == part and o.f in ("drain", "read")
    )


def _acked(h: H) -> list[Op]:
    return [o for o in h.ops if o.type == "ok" and o.f in ("send", "append")]


@PROPS
@given(
    data=st.data(),
    workload=st.sampled_from(["queue", "log"]),
    fault=st.sampled_from(["lost", "duplicate", "reorder"]),
)
def test_one_injected_fault_is_always_detected(data: Any, workload: str, fault: str) -> None:
    h = model_history(data, workload)
    acked = _acked(h)
    assume(acked)
    if fault == "reorder":
        pairs = [
            (a, b)
            for a in acked
            for b in acked
            if a.process == b.process and a.partition == b.partition and a.time < b.time
        ]
        assume(pairs)
        a, b = data.draw(st.sampled_from(pairs))
        items = _final(h, a.partition or 0).value
        ia = next(i for i, x in enumerate(items) if x[1] == a.value)
        ib = next(i for i, x in enumerate(items) if x[1] == b.value)
        items[ia][1], items[ib][1] = b.value, a.value
    else:
        w = data.draw(st.sampled_from(acked))
        items = _final(h, w.partition or 0).value
        if fault == "lost":
            items[:] = [x for x in items if x[1] != w.value]
        else:
            items.append([items[-1][0] + 1, w.value])
    res = h.check()
    assert res["valid"] is False
    assert counts(res).get(fault, 0) >= 1, res["anomalies"]


# --- deliberately broken systems must go red ------------------------------------------------


class ToyCluster:
    """Three replicas of one partition. Correct: an append is acknowledged once a majority
    (leader + one follower) has it, and reads go through the leader (ReadIndex). Broken
    variants: ``quorum_acks=False`` acknowledges after the leader's local append;
    ``read_index=False`` lets a lagging follower answer reads."""

    def __init__(self, quorum_acks: bool = True, read_index: bool = True) -> None:
        self.logs: list[list[tuple[int, Any]]] = [[], [], []]
        self.leader, self.quorum_acks, self.read_index = 0, quorum_acks, read_index

    def append(self, value: Any) -> int:
        log = self.logs[self.leader]
        offset = log[-1][0] + 1 if log else 0
        log.append((offset, value))
        if self.quorum_acks:
            self.sync((self.leader + 1) % 3)
        return offset

    def sync(self, follower: int) -> None:
        self.logs[follower] = list(self.logs[self.leader])

    def crash_leader(self) -> None:
        # The survivors elect the one with the longest log (Raft's up-to-date rule); the old
        # leader rejoins and is truncated to the new leader's log.
        old = self.leader
        self.leader = max((r for r in range(3) if r != old), key=lambda r: len(self.logs[r]))
        self.sync(old)

    def read(self, replica: int) -> list[list[Any]]:
        src = self.leader if self.read_index else replica
        return [[o, v] for o, v in self.logs[src]]


def run_append(h: H, c: ToyCluster, p: int, v: Any, f: str) -> None:
    h.ev(p, "invoke", f, v, topic="q", partition=0)
    h.ev(p, "ok", f, v, topic="q", partition=0, offset=c.append(v))


@pytest.mark.parametrize("quorum_acks", [True, False])
def test_acks_without_quorum_lose_records(quorum_acks: bool) -> None:
    h, c = H(), ToyCluster(quorum_acks=quorum_acks)
    run_append(h, c, 0, "a", "send")
    c.sync(1)
    run_append(h, c, 0, "b", "send")  # broken: acked with only the leader holding it
    c.crash_leader()
    run_append(h, c, 1, "c", "send")
    c.sync(2)
    h.drain(c.read(c.leader))
    res = h.check()
    if quorum_acks:
        assert res["valid"] is True, res["anomalies"]
    else:
        assert res["valid"] is False
        found = counts(res)
        assert found["lost"] == 1
        # "c" reused b's offset although it began after b was acknowledged.
        assert found["nonlinearizable-append"] == 1 and found["inconsistent-offset"] == 1


@pytest.mark.parametrize("read_index", [True, False])
def test_follower_reads_without_read_index_are_stale(read_index: bool) -> None:
    h, c = H(), ToyCluster(read_index=read_index)
    run_append(h, c, 0, 1, "append")  # committed on replicas 0 and 1; replica 2 lags
    h.op(5, "read", None, out=c.read(replica=2), topic="q", partition=0)
    c.sync(2)
    h.op(5, "read", None, out=c.read(replica=0), topic="q", partition=0, final=True)
    res = h.check()
    if read_index:
        assert res["valid"] is True, res["anomalies"]
    else:
        assert counts(res) == {"stale-read": 1}
