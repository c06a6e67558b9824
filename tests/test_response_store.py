"""The store behind previous_response_id: per caller, bounded by count and bytes."""

from __future__ import annotations

from localrouter.protocols.responses.store import ResponseStore


def test_a_response_is_only_its_callers():
    store = ResponseStore()
    store.put("resp_1", "alice", [{"role": "user", "content": "hi"}], b"{}", 10)
    assert store.get("resp_1", "alice") is not None
    assert store.get("resp_1", "bob") is None
    assert store.delete("resp_1", "bob") is False
    assert store.delete("resp_1", "alice") is True
    assert len(store) == 0


def test_the_oldest_go_first_when_count_or_bytes_run_out():
    store = ResponseStore(max_responses=2, max_bytes=100)
    for n in range(3):
        store.put(f"resp_{n}", "c", [], b"{}", 10)
    assert [store.get(f"resp_{n}", "c") is not None for n in range(3)] == [False, True, True]
    store.put("resp_big", "c", [], b"{}", 95)
    assert store.get("resp_2", "c") is None  # 10 + 95 > 100: the older one went
    assert store.get("resp_big", "c") is not None
    store.put("resp_huge", "c", [], b"{}", 101)  # larger than the whole store: not kept
    assert store.get("resp_huge", "c") is None
    assert store.get("resp_big", "c") is not None
