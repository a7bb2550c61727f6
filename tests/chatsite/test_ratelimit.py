"""Fixed-window rate limits in Redis: counted per subject, refusals not counted, keys expire."""

from chatsite.errors import AppError
from chatsite.ratelimit import rate_limit_check, rate_window
from chatsite.redis_clients import get_redis
from tests.support.cases import RedisTransactionTestCase

WINDOW = 10**9  # seconds: no window boundary is crossed during a test


def take(cost: int = 1, *, subject: str = "alice", limit: int = 5) -> bool:
    """Take `cost` from the subject's limit; False if it was refused."""
    try:
        rate_limit_check(scope="test", subject=subject, limit=limit, window=WINDOW, cost=cost)
    except AppError as err:
        assert err.code == "rate_limited"
        return False
    return True


class RateLimitTests(RedisTransactionTestCase):
    def test_requests_up_to_the_limit_pass_and_the_next_is_refused(self) -> None:
        self.assertEqual([take() for _ in range(6)], [True] * 5 + [False])

    def test_a_refused_request_is_not_counted(self) -> None:
        self.assertTrue(take(3))
        self.assertFalse(take(3))
        self.assertTrue(take(2))
        self.assertFalse(take(1))

    def test_each_subject_has_its_own_count(self) -> None:
        self.assertTrue(take(5, subject="alice"))
        self.assertTrue(take(5, subject="bob"))
        self.assertFalse(take(1, subject="alice"))

    def test_the_window_key_expires_even_when_its_first_request_is_refused(self) -> None:
        self.assertFalse(take(6))
        key = rate_window(scope="test", subject="alice", window=WINDOW).key
        self.assertEqual(int(get_redis().get(key)), 0)
        self.assertGreater(get_redis().pttl(key), 0)
