"""Redis commands packed by hand, for bulk writes whose arguments are bytes already.

redis-py packs every argument of every command through its generic encoder;
for a command of a thousand arguments (a batch's HSET, a bucket's records)
that costs more than the work it carries. :class:`Wire` joins each command
once and sends the lot on one pooled connection, like a non-transactional
pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError


def pack(args: Sequence[bytes]) -> bytes:
    """One Redis command in the wire protocol (RESP), its arguments already bytes."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


class Wire:
    """Commands packed by hand and sent on one pooled connection, replies read in order.

    Like a non-transactional pipeline: every reply is read before the first
    error reply is raised, so the connection stays in step; a connection
    error leaves the connection closed (never reused with replies unread).
    """

    __slots__ = ("_commands",)

    def __init__(self) -> None:
        self._commands: list[bytes] = []

    def __len__(self) -> int:
        return len(self._commands)

    def add(self, *args: bytes) -> None:
        self._commands.append(pack(args))

    def add_packed(self, command: bytes) -> None:
        self._commands.append(command)

    def zrem(self, key: str, member: str) -> None:
        self.add(b"ZREM", key.encode(), member.encode())

    def srem(self, key: str, member: str) -> None:
        self.add(b"SREM", key.encode(), member.encode())

    async def execute(self, redis: Redis) -> list[Any]:
        if not self._commands:
            return []
        pool = redis.connection_pool
        conn = await cast(Any, pool).get_connection()  # untyped in redis-py
        try:
            await conn.send_packed_command(self._commands)
            replies: list[Any] = []
            error: ResponseError | None = None
            for _ in self._commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
                    error = error or exc
        except BaseException:
            await conn.disconnect(nowait=True)  # replies left unread: never reuse it
            raise
        finally:
            await pool.release(conn)
        if error is not None:
            raise error
        return replies
