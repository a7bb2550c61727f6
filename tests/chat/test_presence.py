"""The room presence functions (chat/rooms/presence.py) against real Redis, on a fake clock.

Time is `chat.rooms.presence._now_ms`, patched to a clock each test moves by hand, so
timeouts are crossed without waiting. Channel names are made up: presence only stores them.
"""

import asyncio
from unittest import mock

from django.test import override_settings

from chat.rooms.presence import (
    ACTIVE_KEY,
    presence_counts,
    presence_join,
    presence_leave,
    presence_members,
    presence_sweep,
    presence_touch,
)
from chatsite.redis_clients import get_redis
from tests.support.cases import RedisTransactionTestCase

SLUG = "lobby"
TIMEOUT_MS = 10_000
T0 = 1_800_000_000_000


def clear_room_keys() -> None:
    """Drop every rooms:* key (presence, owners, the active set); reset_redis leaves them."""
    client = get_redis()
    keys = list(client.scan_iter(match="rooms:*", count=1000))
    if keys:
        client.delete(*keys)


@override_settings(ROOM_PRESENCE_TIMEOUT=TIMEOUT_MS / 1000)
class PresenceTestCase(RedisTransactionTestCase):
    """Empty presence keys and a hand-moved clock per test."""

    def setUp(self) -> None:
        super().setUp()
        clear_room_keys()
        self.addCleanup(clear_room_keys)
        self.now = T0
        patcher = mock.patch("chat.rooms.presence._now_ms", side_effect=lambda: self.now)
        patcher.start()
        self.addCleanup(patcher.stop)

    async def join(
        self, name: str, channel: str, *, owner: str | None = None, capacity: int = 50,
        slug: str = SLUG,
    ) -> str:  # fmt: skip
        return await presence_join(
            slug=slug, name=name, channel=channel, owner=owner or f"client:{name}",
            capacity=capacity,
        )  # fmt: skip

    async def leave(self, name: str, channel: str, *, slug: str = SLUG) -> bool:
        return await presence_leave(slug=slug, name=name, channel=channel)

    async def sweep(self) -> list[tuple[str, str]]:
        """Run one sweep; the (slug, name) pairs it announced as gone."""
        gone: list[tuple[str, str]] = []

        async def on_leave(slug: str, name: str) -> None:
            gone.append((slug, name))

        await presence_sweep(on_leave=on_leave)
        return gone

    def owners(self, slug: str = SLUG) -> dict[str, str]:
        raw = get_redis().hgetall(f"rooms:owners:{slug}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def active(self) -> set[str]:
        return {s.decode() for s in get_redis().smembers(ACTIVE_KEY)}


class PresenceJoinTests(PresenceTestCase):
    """presence_join: joined, again, taken, full."""

    async def test_first_socket_of_a_name_joins_and_marks_the_room_active(self) -> None:
        self.assertEqual(await self.join("Ada", "ch-1"), "joined")
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])
        self.assertEqual(self.owners(), {"Ada": "client:Ada"})
        self.assertEqual(self.active(), {SLUG})

    async def test_second_socket_of_the_same_owner_is_again_and_one_member(self) -> None:
        await self.join("Ada", "ch-1")
        self.assertEqual(await self.join("Ada", "ch-2"), "again")
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])

    async def test_present_name_under_another_owner_is_taken_and_not_added(self) -> None:
        await self.join("Ada", "ch-1", owner="client:one")
        self.assertEqual(await self.join("Ada", "ch-2", owner="client:two"), "taken")
        self.assertEqual(self.owners(), {"Ada": "client:one"})
        # The refused socket holds no entry: the first one leaving is the member leaving.
        self.assertTrue(await self.leave("Ada", "ch-1"))
        self.assertFalse(await self.leave("Ada", "ch-2"))

    async def test_join_beyond_capacity_is_full_but_another_tab_of_a_member_is_not(self) -> None:
        self.assertEqual(await self.join("Ada", "ch-1", capacity=2), "joined")
        self.assertEqual(await self.join("Bob", "ch-2", capacity=2), "joined")
        self.assertEqual(await self.join("Cy", "ch-3", capacity=2), "full")
        self.assertEqual(await self.join("Ada", "ch-4", capacity=2), "again")
        self.assertEqual(await presence_members(slug=SLUG), ["Ada", "Bob"])

    async def test_a_full_room_has_a_place_again_after_a_member_leaves(self) -> None:
        await self.join("Ada", "ch-1", capacity=2)
        await self.join("Bob", "ch-2", capacity=2)
        await self.leave("Bob", "ch-2")
        self.assertEqual(await self.join("Cy", "ch-3", capacity=2), "joined")

    async def test_timed_out_entries_count_neither_as_members_nor_against_capacity(self) -> None:
        await self.join("Ada", "ch-1", capacity=2)
        await self.join("Bob", "ch-2", capacity=2)
        self.now += TIMEOUT_MS + 1  # both silent past the timeout, not yet swept
        self.assertEqual(await presence_members(slug=SLUG), [])
        self.assertEqual(await self.join("Cy", "ch-3", capacity=2), "joined")
        self.assertEqual(await presence_members(slug=SLUG), ["Cy"])

    async def test_timed_out_name_can_be_taken_by_another_owner(self) -> None:
        await self.join("Ada", "ch-1", owner="client:one")
        self.now += TIMEOUT_MS + 1
        self.assertEqual(await self.join("Ada", "ch-2", owner="client:two"), "joined")
        self.assertEqual(self.owners(), {"Ada": "client:two"})

    async def test_an_entry_exactly_at_the_timeout_is_still_fresh(self) -> None:
        await self.join("Ada", "ch-1")
        self.now += TIMEOUT_MS
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])
        self.assertEqual(await self.sweep(), [])

    async def test_rooms_are_independent(self) -> None:
        await self.join("Ada", "ch-1", owner="client:one", capacity=2)
        await self.join("Bob", "ch-2", capacity=2)
        self.assertEqual(
            await self.join("Ada", "ch-3", owner="client:two", capacity=2, slug="den"), "joined"
        )
        self.assertEqual(await presence_members(slug="den"), ["Ada"])
        self.assertEqual(self.active(), {SLUG, "den"})

    async def test_members_are_sorted_names(self) -> None:
        for index, name in enumerate(["cy", "Ada", "bob"]):
            await self.join(name, f"ch-{index}")
        self.assertEqual(await presence_members(slug=SLUG), ["Ada", "bob", "cy"])


class PresenceLeaveTests(PresenceTestCase):
    """presence_leave: a member leaves with its last fresh socket, and only once."""

    async def test_leave_is_true_only_when_the_last_tab_goes(self) -> None:
        await self.join("Ada", "ch-1")
        await self.join("Ada", "ch-2")
        self.assertFalse(await self.leave("Ada", "ch-1"))
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])
        self.assertTrue(await self.leave("Ada", "ch-2"))
        self.assertEqual(await presence_members(slug=SLUG), [])
        self.assertEqual(self.owners(), {})

    async def test_leaving_twice_or_with_an_unknown_socket_is_false(self) -> None:
        await self.join("Ada", "ch-1")
        self.assertTrue(await self.leave("Ada", "ch-1"))
        self.assertFalse(await self.leave("Ada", "ch-1"))
        self.assertFalse(await self.leave("Bob", "ch-9"))

    async def test_name_is_free_for_another_owner_after_the_member_left(self) -> None:
        await self.join("Ada", "ch-1", owner="client:one")
        await self.leave("Ada", "ch-1")
        self.assertEqual(await self.join("Ada", "ch-2", owner="client:two"), "joined")

    async def test_a_timed_out_other_tab_does_not_keep_the_member(self) -> None:
        await self.join("Ada", "ch-1")
        self.now += TIMEOUT_MS // 2
        await self.join("Ada", "ch-2")
        self.now += TIMEOUT_MS // 2 + 1  # ch-1 is now stale, ch-2 fresh
        self.assertTrue(await self.leave("Ada", "ch-2"))

    async def test_leave_of_a_socket_already_swept_is_false(self) -> None:
        await self.join("Ada", "ch-1")
        self.now += TIMEOUT_MS + 1
        self.assertEqual(await self.sweep(), [(SLUG, "Ada")])
        self.assertFalse(await self.leave("Ada", "ch-1"))  # its leave was announced already

    async def test_other_members_are_untouched(self) -> None:
        await self.join("Ada", "ch-1")
        await self.join("Bob", "ch-2")
        await self.leave("Ada", "ch-1")
        self.assertEqual(await presence_members(slug=SLUG), ["Bob"])
        self.assertEqual(self.owners(), {"Bob": "client:Bob"})


class PresenceTouchTests(PresenceTestCase):
    """presence_touch: keeps a socket fresh; False once its entry is gone."""

    async def test_touch_keeps_a_socket_past_the_original_timeout(self) -> None:
        await self.join("Ada", "ch-1")
        self.now += TIMEOUT_MS - 1
        self.assertTrue(await presence_touch(slug=SLUG, name="Ada", channel="ch-1"))
        self.now += TIMEOUT_MS - 1
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])
        self.assertEqual(await self.sweep(), [])

    async def test_touch_of_a_swept_or_unknown_socket_is_false_and_adds_nothing(self) -> None:
        await self.join("Ada", "ch-1")
        self.now += TIMEOUT_MS + 1
        await self.sweep()
        self.assertFalse(await presence_touch(slug=SLUG, name="Ada", channel="ch-1"))
        self.assertFalse(await presence_touch(slug=SLUG, name="Bob", channel="ch-2"))
        self.assertEqual(await presence_members(slug=SLUG), [])


class PresenceSweepTests(PresenceTestCase):
    """presence_sweep: announces exactly the names with no fresh entry left, once."""

    async def test_sweep_returns_only_names_without_a_fresh_entry(self) -> None:
        await self.join("Ada", "ch-a")  # will be stale
        await self.join("Cy", "ch-c1")  # one stale tab ...
        self.now += TIMEOUT_MS // 2
        await self.join("Bob", "ch-b")  # fresh
        await self.join("Cy", "ch-c2")  # ... and one fresh tab
        self.now += TIMEOUT_MS // 2 + 1
        self.assertEqual(await self.sweep(), [(SLUG, "Ada")])
        self.assertEqual(await presence_members(slug=SLUG), ["Bob", "Cy"])
        entries = get_redis().zrange(f"rooms:presence:{SLUG}", 0, -1)
        self.assertEqual(sorted(e.decode() for e in entries), ["Bob\nch-b", "Cy\nch-c2"])
        self.assertEqual(self.owners(), {"Bob": "client:Bob", "Cy": "client:Cy"})

    async def test_a_member_with_two_stale_tabs_is_announced_once(self) -> None:
        await self.join("Ada", "ch-1")
        await self.join("Ada", "ch-2")
        self.now += TIMEOUT_MS + 1
        self.assertEqual(await self.sweep(), [(SLUG, "Ada")])

    async def test_second_sweep_announces_nothing(self) -> None:
        await self.join("Ada", "ch-1")
        self.now += TIMEOUT_MS + 1
        self.assertEqual(await self.sweep(), [(SLUG, "Ada")])
        self.assertEqual(await self.sweep(), [])

    async def test_sweep_covers_every_active_room(self) -> None:
        await self.join("Ada", "ch-1")
        await self.join("Bob", "ch-2", slug="den")
        self.now += TIMEOUT_MS + 1
        self.assertEqual(sorted(await self.sweep()), [("den", "Bob"), (SLUG, "Ada")])

    async def test_room_leaves_the_active_set_once_its_presence_is_empty(self) -> None:
        await self.join("Ada", "ch-1")
        await self.join("Bob", "ch-2", slug="den")
        self.now += TIMEOUT_MS // 2
        await self.join("Cy", "ch-3", slug="den")
        self.now += TIMEOUT_MS // 2 + 1
        await self.sweep()
        self.assertEqual(self.active(), {"den"})  # Cy is still in den

    async def test_room_emptied_by_leaves_is_dropped_from_the_active_set_by_the_sweep(
        self,
    ) -> None:
        await self.join("Ada", "ch-1")
        await self.leave("Ada", "ch-1")
        self.assertEqual(await self.sweep(), [])
        self.assertEqual(self.active(), set())

    async def test_swept_name_is_free_for_another_owner(self) -> None:
        await self.join("Ada", "ch-1", owner="client:one")
        self.now += TIMEOUT_MS + 1
        await self.sweep()
        self.assertEqual(self.owners(), {})
        self.assertEqual(await self.join("Ada", "ch-2", owner="client:two"), "joined")

    async def test_two_racing_sweeps_announce_each_leave_exactly_once(self) -> None:
        """Two sweeps started together, as two web processes' sweepers may be.

        Both read the active set before either runs its script, so both try the same
        rooms. One pair runs on this loop (two connections of one pool), the other pair
        in a second thread with its own event loop and its own Redis client, like a
        second process. Repeated, so the interleavings vary.
        """

        def sweep_in_another_thread() -> list[tuple[str, str]]:
            return asyncio.run(self.sweep())

        for round_ in range(20):
            with self.subTest(round=round_):
                for index, name in enumerate(["Ada", "Bob", "Cy"]):
                    await self.join(name, f"ch-{round_}-{index}", slug=f"room-{index % 2}")
                self.now += TIMEOUT_MS + 1
                results = await asyncio.gather(
                    self.sweep(), self.sweep(), asyncio.to_thread(sweep_in_another_thread)
                )
                announced = sorted(pair for result in results for pair in result)
                self.assertEqual(
                    announced, [("room-0", "Ada"), ("room-0", "Cy"), ("room-1", "Bob")]
                )


class PresenceCountTests(PresenceTestCase):
    """presence_counts: members (not sockets) per room, for the rooms list."""

    async def test_counts_skip_stale_entries(self) -> None:
        await self.join("Ada", "ch-1")
        await self.join("Ada", "ch-2")
        await self.join("Bob", "ch-3")
        await self.join("Cy", "ch-4", slug="den")
        self.now += TIMEOUT_MS // 2
        await self.join("Dee", "ch-5", slug="den")
        self.now += TIMEOUT_MS // 2 + 1  # Cy is stale
        self.assertEqual(
            presence_counts(slugs=[SLUG, "den", "empty"]), {SLUG: 0, "den": 1, "empty": 0}
        )

    async def test_counts_members_not_sockets(self) -> None:
        await self.join("Ada", "ch-1")
        await self.join("Ada", "ch-2")
        await self.join("Bob", "ch-3")
        self.assertEqual(presence_counts(slugs=[SLUG, "empty"]), {SLUG: 2, "empty": 0})

    def test_counts_of_no_rooms_is_empty(self) -> None:
        self.assertEqual(presence_counts(slugs=[]), {})


class PresenceTouchRevivesTakenNameTests(PresenceTestCase):
    """A touch after the timeout does not revive an entry whose name was taken since."""

    async def test_touch_of_a_timed_out_entry_whose_name_was_taken_is_false(self) -> None:
        await self.join("Ada", "ch-1", owner="client:one")
        self.now += TIMEOUT_MS + 1
        self.assertEqual(await self.join("Ada", "ch-2", owner="client:two"), "joined")
        self.assertFalse(await presence_touch(slug=SLUG, name="Ada", channel="ch-1"))


class PresenceTouchOverfillsRoomTests(PresenceTestCase):
    """A touch after the timeout does not put a room over its capacity."""

    async def test_touch_of_a_timed_out_entry_does_not_overfill_the_room(self) -> None:
        await self.join("Ada", "ch-1", capacity=2)
        self.now += TIMEOUT_MS // 2
        await self.join("Bob", "ch-2", capacity=2)
        self.now += TIMEOUT_MS // 2 + 1  # Ada timed out, not swept
        self.assertEqual(await self.join("Cy", "ch-3", capacity=2), "joined")
        await presence_touch(slug=SLUG, name="Ada", channel="ch-1")
        self.assertLessEqual(len(await presence_members(slug=SLUG)), 2)
