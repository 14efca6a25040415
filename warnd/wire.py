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
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError


def arg(value: str | bytes | int | float) -> bytes:
    """One argument as redis-py would send it (text as UTF-8, numbers as text)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode() if isinstance(value, float) else b"%d" % value


def pack(args: Sequence[bytes]) -> bytes:
    """One Redis command in the wire protocol (RESP), its arguments already bytes."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


class Wire:
    """Commands packed by hand and sent on one pooled connection, replies read in order.

    Like a non-transactional pipeline: every reply is read before the first
    error reply is raised, so the connection stays in step; a connection
    error leaves the connection closed (never reused with replies unread).
    """

    __slots__ = ("_commands", "replies")

    def __init__(self) -> None:
        self._commands: list[bytes] = []
        self.replies: list[Any] = []
        """Every reply (error replies as exceptions) once :meth:`execute` has run."""

    def __len__(self) -> int:
        return len(self._commands)

    def add(self, *args: bytes) -> None:
        self._commands.append(pack(args))

    def add_packed(self, command: bytes) -> None:
        self._commands.append(command)

    def script(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[str | bytes | int | float],
    ) -> int:
        """Queue ``EVALSHA`` of a registered script; the position of its reply.

        Read the reply with :func:`script_reply`: a Redis that lost its script
        cache (a restart, ``SCRIPT FLUSH``) answers ``NOSCRIPT``, and the
        script is then run again, loading it.
        """
        self.add(
            b"EVALSHA",
            script.sha.encode(),
            b"%d" % len(keys),
            *(k.encode() for k in keys),
            *(arg(a) for a in args),
        )
        return len(self._commands) - 1

    def zrem(self, key: str, member: str) -> None:
        self.add(b"ZREM", key.encode(), member.encode())

    def srem(self, key: str, member: str) -> None:
        self.add(b"SREM", key.encode(), member.encode())

    async def execute(self, redis: Redis, *, raise_on_error: bool = True) -> list[Any]:
        """Send every command, read every reply. An error reply is raised
        (the first, after all are read) unless ``raise_on_error`` is false:
        then it is returned in its place, for the caller to look at."""
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
        self.replies = replies
        if error is not None and raise_on_error:
            raise error
        return replies


def raise_errors(replies: Sequence[Any], *, besides: Sequence[int] = ()) -> None:
    """Raise the first error reply, but for those at ``besides`` (read on their own)."""
    for i, r in enumerate(replies):
        if isinstance(r, Exception) and i not in besides:
            raise r


async def script_reply(
    reply: Any,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[str | bytes | int | float],
) -> Any:
    """The reply of a script queued with :meth:`Wire.script`: run again (and
    loaded) if Redis did not know it, raised if it failed."""
    if isinstance(reply, NoScriptError):
        return await script(keys=list(keys), args=list(args))
    if isinstance(reply, Exception):
        raise reply
    return reply
