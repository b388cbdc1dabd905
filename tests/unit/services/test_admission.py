"""The login admission gate (no sockets): a window of unfinished logins paced by the measured login rate, a
FIFO with positions and expected waits, places that lapse, and a per-address bound."""

from __future__ import annotations

from runtime.services.admission import ASSIGN_MEMORY, MSG_SERVER_FULL, NONE, Admission, MsgServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def roomy() -> MsgServer:
    return MsgServer("10.0.0.1", "10.0.0.1", 8000, 100_000, 0, "h")


def gate(clock: Clock, **kw: object) -> Admission:
    args: dict[str, object] = {"window_min": 4, "target_seconds": 1.0, "clock": clock}
    args.update(kw)
    return Admission(10_000, 10_000, 5.0, **args)  # type: ignore[arg-type]


def test_window_of_unfinished_logins_then_fifo() -> None:
    clock = Clock()
    adm, servers = gate(clock), [roomy()]
    assert [adm.decide(servers).code for _ in range(4)] == [NONE] * 4
    waiting = [adm.decide(servers, address="a") for _ in range(3)]
    assert [(d.code, d.position) for d in waiting] == [
        (MSG_SERVER_FULL, 1),
        (MSG_SERVER_FULL, 2),
        (MSG_SERVER_FULL, 3),
    ]
    assert all(d.ticket and d.expected_wait_ms > 0 and 0 < d.retry_after_ms <= 2100 for d in waiting)
    assert waiting[2].expected_wait_ms > waiting[0].expected_wait_ms
    adm.completed()  # one login finished: one slot, and it goes to the head of the line
    assert adm.decide(servers, address="b").code == MSG_SERVER_FULL  # a newcomer does not jump the queue
    assert adm.decide(servers, waiting[1].ticket).code == MSG_SERVER_FULL  # second waits for the first
    assert adm.decide(servers, waiting[0].ticket).code == NONE
    assert adm.decide(servers, waiting[1].ticket).position == 1  # moved up


def test_window_follows_the_measured_login_rate() -> None:
    clock = Clock()
    adm, servers = gate(clock, target_seconds=2.0), [roomy()]
    assert adm.window(clock.now) == 4  # nothing measured yet
    for _ in range(50):  # 100 logins finish per second for half a second
        clock.now += 0.01
        adm.completed()
    assert 90 <= adm.measured_rate(clock.now) <= 110
    assert 180 <= adm.window(clock.now) <= 220  # two seconds of the measured pace may be in flight
    admitted = sum(adm.decide(servers).code == NONE for _ in range(300))
    assert 180 <= admitted <= 220
    clock.now += ASSIGN_MEMORY + 1  # nothing finished for a while: the floor again, stale admissions gone
    assert adm.window(clock.now) == 4 and adm.decide(servers).code == NONE and len(adm.unfinished) == 1


def test_an_admitted_client_that_never_logs_in_frees_its_slot() -> None:
    clock = Clock()
    adm, servers = gate(clock, window_min=1), [roomy()]
    assert adm.decide(servers).code == NONE
    queued = adm.decide(servers)
    assert queued.code == MSG_SERVER_FULL
    clock.now += ASSIGN_MEMORY + 0.1
    assert adm.decide(servers, queued.ticket).code == NONE


def test_a_place_lapses_when_its_client_stops_asking() -> None:
    clock = Clock()
    adm, servers = gate(clock, window_min=1), [roomy()]
    adm.decide(servers)
    gone = adm.decide(servers, address="x")
    stays = adm.decide(servers, address="y")
    assert (gone.position, stays.position) == (1, 2)
    start = clock.now
    for _ in range(2):  # `stays` keeps asking on time; `gone` never comes back
        clock.now += stays.retry_after_ms / 1000
        stays = adm.decide(servers, stays.ticket, "y")
    clock.now = start + 7.6  # past `gone`'s retry-after (at most 2.05 s) plus ticket_ttl (5 s)
    stays = adm.decide(servers, stays.ticket, "y")
    assert stays.position == 1 and gone.ticket not in adm.queue


def test_one_address_cannot_fill_the_queue() -> None:
    clock = Clock()
    adm, servers = gate(clock, window_min=1, max_queued_per_address=3), [roomy()]
    adm.decide(servers)
    places = [adm.decide(servers, address="flood") for _ in range(5)]
    assert [bool(p.ticket) for p in places] == [True, True, True, False, False]
    assert places[3].code == MSG_SERVER_FULL and "address" in places[3].text
    assert adm.decide(servers, address="other").position == 4  # others still queue behind the three


def test_lookups_that_cannot_come_back_take_no_place_and_first_places_lapse_sooner() -> None:
    clock = Clock()
    adm, servers = gate(clock, window_min=1), [roomy()]
    adm.decide(servers)
    legacy = adm.decide(servers, enqueue=False)  # TeamTalk's TCP lookup: "full", no queue place
    assert legacy.code == MSG_SERVER_FULL and not legacy.ticket and not adm.queue
    never_back = adm.decide(servers)  # e.g. a TeamTalk client on HTTP: it never presents the ticket
    came_back = adm.decide(servers)
    assert (never_back.position, came_back.position) == (1, 2)
    clock.now += came_back.retry_after_ms / 1000
    came_back = adm.decide(servers, came_back.ticket)
    clock.now += 2.0 + 0.1  # past FIRST_GRACE after the first answer's retry-after, within ticket_ttl
    assert adm.decide(servers, came_back.ticket).position == 1
    assert never_back.ticket not in adm.queue


def test_queue_ranks_and_lapses_match_a_plain_list() -> None:
    """The O(log n) queue structure against a list model, through thousands of arrivals (past the first
    renumbering), re-asks, admissions from anywhere in the line, and lapses."""
    import random

    from runtime.services.admission import _Place, _Places

    rng = random.Random(7)
    places, model = _Places(), []  # model: [ticket, deadline] in arrival order
    now, serial = 0.0, 0
    for _ in range(6000):
        now += 0.01
        op = rng.random()
        if op < 0.45 or not model:
            serial += 1
            ticket = f"t{serial}"
            deadline = now + rng.uniform(0.5, 5)
            places.put(ticket, _Place("a", deadline))
            model.append([ticket, deadline])
        elif op < 0.7:
            entry = rng.choice(model)
            entry[1] = now + rng.uniform(0.5, 5)
            places.put(entry[0], _Place("a", entry[1]))
        elif op < 0.85:
            entry = model.pop(rng.randrange(len(model)))
            assert places.pop(entry[0]) is not None
        else:
            gone = set(places.lapsed(now))
            assert gone == {t for t, d in model if d < now}
            model = [e for e in model if e[0] not in gone]
            for ticket in gone:
                places.pop(ticket)
        assert len(places) == len(model)
        for k in rng.sample(range(len(model)), min(3, len(model))):
            assert places.rank(model[k][0]) == k
    assert serial > 1024  # the arrival numbers were renumbered at least once


def test_a_released_place_goes_at_once_and_those_behind_move_up() -> None:
    clock = Clock()
    adm, servers = gate(clock, window_min=1), [roomy()]
    adm.decide(servers)
    gone = adm.decide(servers, address="x")
    stays = adm.decide(servers, address="y")
    assert (gone.position, stays.position) == (1, 2)
    assert adm.release(gone.ticket) is True
    assert gone.ticket not in adm.queue
    assert adm.release(gone.ticket) is False  # twice, or a ticket never issued: nothing to release
    assert adm.decide(servers, stays.ticket, "y").position == 1
    assert adm.decide(servers, address="x").position == 2  # the address's count went down too
