"""The event bus contract, run against Redis streams and the in-process bus alike."""
from __future__ import annotations

import threading
import time

import pytest
from serving_helpers import PrivateRedis, delete_prefix, shared_redis_url, unique_prefix

from serving.bus import (
    BARS_PREFIX,
    Backoff,
    BusConfig,
    BusUnavailable,
    GroupReader,
    InProcessBus,
    bar_id,
    bar_stream,
    open_bus,
    retrying,
)
from serving.redis_bus import RedisBus


@pytest.fixture(params=["redis", "in-process"])
def make_bus(request):
    """A factory of buses sharing one namespace (several buses = several processes' clients)."""
    prefix = unique_prefix("bus")
    made = []
    shared = InProcessBus(BusConfig(prefix=prefix, block_ms=50, claim_idle_ms=0, maxlen={BARS_PREFIX: 50}))

    def make(**overrides):
        settings = {"prefix": prefix, "block_ms": 50, "claim_idle_ms": 0, "maxlen": {BARS_PREFIX: 50}, **overrides}
        if request.param == "redis":
            bus = RedisBus(BusConfig(redis_url=shared_redis_url(), **settings))
            made.append(bus)
            return bus
        return shared

    yield make
    for bus in made:
        bus.close()
    if request.param == "redis":
        delete_prefix(shared_redis_url(), prefix)


def bars(n, start=1_700_000_000_000):
    return [{"timestamp": start + 60_000 * i, "close": 100.0 + i} for i in range(n)]


def test_publish_read_ack_in_order(make_bus):
    bus = make_bus()
    stream = bar_stream("binance", "BTC/USDT", "1m")
    for bar in bars(5):
        assert bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"])) == bar_id(bar["timestamp"])
    bus.ensure_group(stream, "g")
    got = bus.read_new(stream, "g", "c1", count=3)
    assert [m.data["close"] for m in got] == [100.0, 101.0, 102.0]
    assert [m.timestamp_ms for m in got] == [b["timestamp"] for b in bars(3)]
    assert bus.pending_count(stream, "g") == 3
    assert bus.ack(stream, "g", [m.id for m in got[:2]]) == 2
    assert bus.ack(stream, "g", [got[0].id]) == 0  # acking twice changes nothing
    rest = bus.read_new(stream, "g", "c1", count=10)
    assert [m.data["close"] for m in rest] == [103.0, 104.0]
    assert bus.read_new(stream, "g", "c1", count=10, block_ms=20) == []
    assert [m.id for m in bus.read_pending(stream, "g", "c1")] == [got[2].id] + [m.id for m in rest]


def test_a_bar_is_in_its_stream_once(make_bus):
    bus = make_bus()
    stream = bar_stream("x", "A/B", "1m")
    first = bars(3)
    for bar in first:
        bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"]))
    # a restarted feed publishing the same bars again (and an older one) adds nothing
    assert bus.publish(stream, first[1], entry_id=bar_id(first[1]["timestamp"])) is None
    assert bus.publish(stream, first[2], entry_id=bar_id(first[2]["timestamp"])) is None
    assert bus.length(stream) == 3
    assert [m.data for m in bus.range(stream)] == first


def test_every_group_gets_every_entry(make_bus):
    bus = make_bus()
    stream = "signals"
    bus.ensure_group(stream, "a")
    ids = [bus.publish(stream, {"n": i}) for i in range(4)]
    bus.ensure_group(stream, "b")            # from "0": also what came before it
    bus.ensure_group(stream, "late", start="$")
    assert [m.id for m in bus.read_new(stream, "a", "x")] == ids
    assert [m.id for m in bus.read_new(stream, "b", "y")] == ids
    assert bus.read_new(stream, "late", "z") == []
    new = bus.publish(stream, {"n": 4})
    assert [m.id for m in bus.read_new(stream, "late", "z")] == [new]


def test_a_dead_consumers_pending_entries_are_claimed_once(make_bus):
    bus = make_bus()
    stream = bar_stream("x", "A/B", "5m")
    for bar in bars(6):
        bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"]))
    dead = GroupReader(make_bus(), stream, "shadow-s1", count=4)
    taken = dead.read()
    assert len(taken) == 4
    dead.ack([taken[0].id])  # it processed one and died with three pending
    survivor = GroupReader(make_bus(), stream, "shadow-s1", count=10)
    recovered = survivor.read()
    assert [m.id for m in recovered] == [m.id for m in taken[1:]]
    assert dead.consumer not in bus.consumers(stream, "shadow-s1")
    new = survivor.read()
    assert [m.data["timestamp"] for m in new] == [b["timestamp"] for b in bars(6)[4:]]
    survivor.ack([m.id for m in recovered + new])
    assert bus.pending_count(stream, "shadow-s1") == 0
    assert survivor.read(block_ms=10) == []


def test_streams_are_bounded(make_bus):
    bus = make_bus()
    stream = bar_stream("x", "A/B", "1s")
    for bar in bars(500):
        bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"]))
    # MAXLEN ~ 50: Redis trims whole nodes, so the bound holds up to one node (100 entries)
    assert 50 <= bus.length(stream) <= 150
    assert bus.tail(stream, 1)[0].data == bars(500)[-1]
    assert [m.data for m in bus.tail(stream, 3)] == bars(500)[-3:]


def test_a_group_reads_a_long_trimmed_stream_in_order_and_ranges_are_inclusive(make_bus):
    """3,000 bars through a stream bounded at 50 (the in-process bus compacts its index on the
    way): a group reading as they come gets each bar once, in order; XRANGE bounds include their
    ids, and a bare millisecond end covers every entry of that millisecond."""
    bus = make_bus()
    stream = bar_stream("x", "A/B", "1m")
    bus.ensure_group(stream, "g")
    seen = []
    for i, bar in enumerate(bars(3000)):
        bus.publish(stream, bar, entry_id=bar_id(bar["timestamp"]))
        if i % 7 == 6:
            got = bus.read_new(stream, "g", "c", count=5)
            bus.ack(stream, "g", [m.id for m in got])
            seen += [m.data["timestamp"] for m in got]
    while got := bus.read_new(stream, "g", "c", count=5):
        seen += [m.data["timestamp"] for m in got]
    assert seen == sorted(set(seen)) and seen[-1] == bars(3000)[-1]["timestamp"]
    last = bars(3000)[-10:]
    window = bus.range(stream, bar_id(last[2]["timestamp"]), bar_id(last[5]["timestamp"]))
    assert [m.data for m in window] == last[2:6]
    assert [m.data for m in bus.range(stream, bar_id(last[2]["timestamp"]), count=2)] == last[2:4]
    other = "signals"
    first = bus.publish(other, {"n": 0})
    bus.publish(other, {"n": 1})
    assert len(bus.range(other, "-", first.split("-")[0])) >= 1


def test_blocking_read_wakes_up_on_publish(make_bus):
    bus = make_bus()
    stream = "alerts"
    bus.ensure_group(stream, "watch")
    reader = make_bus(block_ms=5000)
    got = []
    thread = threading.Thread(target=lambda: got.extend(reader.read_new(stream, "watch", "w", block_ms=5000)))
    thread.start()
    time.sleep(0.2)
    bus.publish(stream, {"kind": "drawdown"})
    thread.join(10)
    assert [m.data for m in got] == [{"kind": "drawdown"}]


def test_config_rejects_unknown_streams_and_picks_the_implementation():
    with pytest.raises(ValueError, match="unknown stream kind"):
        BusConfig(maxlen={"bras": 10})
    with pytest.raises(ValueError, match="extra"):
        BusConfig(redis_ur="redis://x")
    assert isinstance(open_bus(BusConfig()), InProcessBus)
    assert isinstance(open_bus(BusConfig(redis_url=shared_redis_url(), prefix=unique_prefix())), RedisBus)


def test_redis_restart_mid_stream_loses_nothing(tmp_path):
    """Publisher and consumer retry with backoff through a Redis restart (AOF persistence):
    every entry arrives, none twice."""
    server = PrivateRedis(tmp_path / "redis").start()
    try:
        config = BusConfig(redis_url=server.url, prefix=unique_prefix(), block_ms=50, socket_timeout_s=0.5,
                           backoff_cap_s=0.2)
        publisher, consumer = RedisBus(config), RedisBus(config)
        stream = bar_stream("x", "A/B", "1m")
        n = 300
        retries = {"publish": 0, "read": 0}
        seen: list[int] = []
        done = threading.Event()

        def publish():
            for bar in bars(n):
                retrying(lambda bar=bar: publisher.publish(stream, bar, entry_id=bar_id(bar["timestamp"])),
                         Backoff(0.02, 0.2), on_retry=lambda e: retries.__setitem__("publish", retries["publish"] + 1))
                time.sleep(0.002)

        def consume():
            reader = GroupReader(consumer, stream, "g", count=7)
            while len(seen) < n and not done.is_set():
                batch = retrying(reader.read, Backoff(0.02, 0.2),
                                 on_retry=lambda e: retries.__setitem__("read", retries["read"] + 1))
                seen.extend(m.data["timestamp"] for m in batch)
                retrying(lambda batch=batch: reader.ack([m.id for m in batch]), Backoff(0.02, 0.2))

        threads = [threading.Thread(target=publish), threading.Thread(target=consume)]
        for t in threads:
            t.start()
        time.sleep(0.25)
        server.restart(down_s=0.5)
        threads[0].join(60)
        threads[1].join(60)
        done.set()
        assert sorted(seen) == [b["timestamp"] for b in bars(n)]
        assert len(seen) == len(set(seen))
        assert retries["publish"] + retries["read"] > 0  # the restart was noticed
        assert consumer.pending_count(stream, "g") == 0
        with pytest.raises(BusUnavailable):
            server.stop()
            RedisBus(config).length(stream)
    finally:
        server.stop()
