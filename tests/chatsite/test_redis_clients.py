"""Lua scripts run by SHA1 on the shared clients, and load themselves when Redis lacks them."""

from asgiref.sync import async_to_sync

from chatsite.redis_clients import RedisScript, get_redis
from tests.support.cases import RedisTransactionTestCase

ECHO = RedisScript("return {KEYS[1], ARGV[1]}")


class RedisScriptTests(RedisTransactionTestCase):
    def test_async_run_reloads_the_script_after_redis_forgot_it(self) -> None:
        self.assertEqual(async_to_sync(ECHO.run_async)(keys=["k"], args=["a"]), [b"k", b"a"])
        get_redis().script_flush()  # as after a Redis restart
        self.assertEqual(async_to_sync(ECHO.run_async)(keys=["k"], args=["b"]), [b"k", b"b"])

    def test_sync_run_reloads_the_script_after_redis_forgot_it(self) -> None:
        self.assertEqual(ECHO.run(keys=["k"], args=["a"]), [b"k", b"a"])
        get_redis().script_flush()
        self.assertEqual(ECHO.run(keys=["k"], args=["b"]), [b"k", b"b"])
