"""The writer's nap: the policy, turn by turn, with made-up clocks (no timing, no sleeping).

What the loop does with it (records gather, a barrier ends a nap) is proven by
the process tests; its effect on speed is in docs/benchmarks.md.
"""

from __future__ import annotations

import pytest

from logfunnel._core.nap import (
    BUSY_BYTES,
    IDLE,
    MAX_NAP,
    NAP,
    NO_NAP_FILL,
    Nap,
    fill,
    pipe_fill,
)


def turns(
    nap: Nap, rate: float, count: int, turn: float = 0.0001, size: int = 128, *, pipe: bool = False
) -> list[float]:
    """Run ``count`` busy turns of one connection sending ``rate`` bytes a second.

    The connection sends records of ``size`` bytes, on a socket or (``pipe``)
    a pipe, whose fill is the bytes read.  Each turn reads what gathered since
    the last read, takes ``turn`` seconds, and waits what the nap says;
    returns the waits.
    """
    now, last_read, waits = 10.0, 10.0, []
    for _ in range(count):
        started = now
        got = int(rate * (started - last_read))
        last_read = started
        now = started + turn
        filled = pipe_fill(got, 128 * 1024) if pipe else fill(got, got // size)
        wait = nap.after_turn(started, now, max(got, BUSY_BYTES), filled)
        assert wait is not None
        waits.append(wait)
        now += wait
        nap.napped_at(now)
    return waits


@pytest.mark.parametrize("size", [128, 1024, 8192])
@pytest.mark.parametrize("rate", [1e5, 1e6, 1e7, 1e8, 1e9])
def test_no_nap_lets_a_connection_fill_more_than_the_bound(rate: float, size: int) -> None:
    """At any pace and record size, a nap never lets one connection fill more than NO_NAP_FILL.

    (At 1 GB/s the turn alone brings more: then there is no nap at all.)  Within
    one record: a read counts the records it held whole, so the pace it tells
    is short of the true one by up to a record's fill.
    """
    turn = 0.0001
    for wait in turns(Nap(), rate, 200, turn, size)[1:]:
        gathered = rate * (wait + turn)
        filled = fill(int(gathered), int(gathered // size))
        assert wait == 0 or filled <= NO_NAP_FILL + fill(size, 1)


def test_no_nap_lets_a_pipe_fill_more_than_half() -> None:
    """A pipe's reads count against the bound as half of what it holds, whatever it holds."""
    turn = 0.0001
    for half in (2048, 32 * 1024, 128 * 1024):
        for rate in (1e5, 1e6, 1e7, 1e8):
            nap, now, last_read = Nap(), 10.0, 10.0
            for index in range(100):
                started = now
                got = int(rate * (started - last_read))
                last_read, now = started, started + turn
                wait = nap.after_turn(started, now, max(got, BUSY_BYTES), pipe_fill(got, half))
                assert wait is not None
                # (The first turn read nothing yet: no pace to go by.)
                assert index == 0 or wait == 0 or rate * (wait + turn) <= half * 1.0001
                now += wait
                nap.napped_at(now)


def test_small_records_fill_a_buffer_sooner_than_their_bytes_say() -> None:
    """A 20 KB read ends the nap when it held 128-byte records, not when it held 8 KB ones.

    The bound counts sends: 278 sends of 117 bytes fill a Unix socket's buffer
    (32 KiB of records), so a bound in bytes that let 8 KB records nap let
    small ones block their senders (p99 per call up; see ``_core/nap.py``).
    """
    for size, naps in ((128, False), (8192, True)):
        nap = Nap()
        turns(nap, 1e6, 20, size=size)
        read = 20 * 1024
        wait = nap.after_turn(100.0, 100.0001, read, fill(read, read // size))
        assert (wait is not None and wait > 0) is naps, size


def test_large_records_are_not_kept_waiting() -> None:
    """8 KB records at 18 µs a call (~450 MB/s), 20 µs turns: each turn reads one or two.

    Such reads were under the no-nap bound, so every other turn napped 1 ms, in
    which the connection had room for ~25 records and then waited.
    """
    waits = turns(Nap(), 4.5e8, 50, turn=0.00002)
    assert max(waits[1:]) < 0.0001


def test_slow_connections_nap_up_to_the_longest() -> None:
    """A trickle of small reads: the nap doubles from NAP up to MAX_NAP, and stays there."""
    waits = turns(Nap(), 1e5, 40)  # 100 KB/s: ~100-800 bytes a turn
    assert waits[0] == pytest.approx(NAP - 0.0001)
    assert waits[-1] == pytest.approx(MAX_NAP - 0.0001)
    assert waits == sorted(waits)


@pytest.mark.parametrize("rate", [2e6, 5e6, 1e7])
def test_one_busy_pipe_naps_up_to_the_longest_its_pace_allows(rate: float) -> None:
    """One worker writing 2-10 MB/s to its pipe: the nap grows to what its pace allows.

    Such a pipe brings 8-80 KiB a read.  The rule that halved the nap after any
    read over 8 KiB held it at ~1 ms, so the writer woke ~1,000 times a second
    for one process (writer CPU per record 2.9 µs against 1.55 µs now).
    """
    turn = 0.0001
    waits = turns(Nap(), rate, 40, turn, pipe=True)
    longest = min(MAX_NAP, 128 * 1024 / rate)  # the pace bound: half of a 256 KiB pipe
    assert 0.9 * longest < waits[-1] + turn <= longest * 1.0001
    assert waits[-1] >= 4 * NAP


def test_a_read_over_the_bound_ends_the_nap_and_the_burst_restarts_short() -> None:
    nap = Nap()
    turns(nap, 1e5, 20)
    assert nap.length == MAX_NAP
    assert nap.after_turn(100.0, 100.0001, 10**6, NO_NAP_FILL + 1) == 0.0
    assert nap.length == NAP


def test_a_quiet_turn_does_not_nap() -> None:
    """Less than BUSY_BYTES, long after the last burst: no nap, nothing to count anew."""
    nap = Nap()
    assert nap.after_turn(5.0, 5.0001, BUSY_BYTES - 1, 100) is None
    nap.napped_at(5.0)
    # Within IDLE of a burst, any read is part of it ...
    assert nap.after_turn(5.0 + IDLE / 2, 5.0 + IDLE / 2, 100, 100) is not None
    # ... and after IDLE it is not.
    assert nap.after_turn(5.0 + 2 * IDLE, 5.0 + 2 * IDLE, 100, 100) is None


def test_a_new_burst_starts_at_the_shortest_nap() -> None:
    nap = Nap()
    turns(nap, 1e5, 20)
    assert nap.length == MAX_NAP
    wait = nap.after_turn(1000.0, 1000.0, BUSY_BYTES, NO_NAP_FILL // 2)
    assert wait == pytest.approx(NAP)
