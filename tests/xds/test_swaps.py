"""How a replica's cache hands a publish to its streams (no database): entries go in
slices, the loop runs what the first slice woke before the next slice, and what was
offered later is never applied before what was offered first."""

import asyncio

from workers.xds import cache as cache_module
from workers.xds.cache import Config, ConfigCache, Entry, Key

CONFIG = Config({}, {})


def key(i: int) -> Key:
    return Key("111111111111", f"mesh/shop/virtualNode/n{i}", "envoy", "redirect")


def test_a_large_publish_lets_woken_streams_run_between_slices_and_keeps_offer_order():
    count = cache_module.SWAP_SLICE * 2 + 10

    async def scenario() -> list[str]:
        cache = ConfigCache()
        cache.loop = asyncio.get_running_loop()
        events: list[str] = []
        for i in range(count):
            cache.watchers[key(i)] = {
                lambda entry, i=i: events.append(f"entry {i} {entry.version}")
            }
            cache.entries[key(i)] = Entry(key(i), "v0", 1, config=CONFIG)

        def first_woken(entry: Entry) -> None:
            # What a stream does when woken: its write runs on the loop, later.
            cache.loop.call_soon(events.append, "stream 0 wrote")

        cache.watchers[key(0)].add(first_woken)
        shared = Entry(None, "v1", 2, config=CONFIG)
        cache.offer([(key(i), shared) for i in range(count)])
        # Offered after: a newer version of the last key, then the same key gone.
        cache.offer([(key(count - 1), Entry(None, "v2", 3, config=CONFIG))])
        cache.offer([(key(count - 1), Entry(key(count - 1), None, 0, config=CONFIG))])
        while len([e for e in events if e.startswith("entry")]) < count + 2:
            await asyncio.sleep(0.01)
        return events

    events = asyncio.run(scenario())
    wrote = events.index("stream 0 wrote")
    # The first stream wrote after its slice, before the second slice was swapped in.
    assert wrote > events.index("entry 0 v1")
    assert wrote < events.index(f"entry {cache_module.SWAP_SLICE} v1")
    last = count - 1
    assert [e for e in events if e.startswith(f"entry {last} ")] == [
        f"entry {last} v1",
        f"entry {last} v2",
        f"entry {last} None",
    ]


def test_two_compiles_read_at_once_never_share_an_entry_ordered_by_the_older_one(monkeypatch):
    """C1 moves A to V (seq 100); C2 moved B to W (seq 200), which this replica already
    loaded; C3 moves B back to V (seq 300). Read in one batch, B must end on V: an Entry
    shared with A's row would carry seq 100 and lose against W's 200."""
    import django.db

    monkeypatch.setattr(django.db, "close_old_connections", lambda: None)
    cache = ConfigCache()
    a, b = key(1), key(2)
    types = [f"tv{i}" for i in range(len(cache_module.TYPES))]
    cache._configs[(7, tuple(types))] = CONFIG  # content known: nothing to read
    cache.entries[a] = Entry(a, "X", 50, config=CONFIG)
    cache.entries[b] = Entry(b, "W", 200, config=CONFIG)
    cache.watchers = {a: {lambda entry: None}, b: {lambda entry: None}}
    c1 = {"tenant": "111111111111", "version": "V", "meshId": 7, "types": types, "revision": 1}
    c3 = {**c1, "revision": 3}
    pairs, rest = cache.published([(c1, [(a, 100)]), (c3, [(b, 300)])])
    assert rest == []
    for k, entry in pairs:
        cache._swap(k, entry)
    assert (cache.entries[a].version, cache.entries[a].seq) == ("V", 100)
    assert (cache.entries[b].version, cache.entries[b].seq) == ("V", 300)
