"""Data files named in the configuration, imported again only when their content changes.

``[areas] import`` and ``[subscribers] import`` name files that warnd imports
at start. Each file's SHA-256 is recorded (a Redis hash: resolved path →
digest) once it is imported, so a restart with unchanged files does no work.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from redis.asyncio import Redis

from warnd.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ChangedFile:
    path: Path
    data: bytes
    digest: str

    async def mark_imported(self, redis: Redis, digests_key: str) -> None:
        """Record this content as imported: the same bytes are skipped next time."""
        await redis.hset(digests_key, str(self.path.resolve()), self.digest)


async def changed_files(
    redis: Redis, digests_key: str, files: list[Path], *, setting: str, force: bool = False
) -> AsyncIterator[ChangedFile]:
    """The files whose content differs from their last import (all of them with ``force``).

    A file that cannot be read stops start-up: ``setting`` names the
    configuration entry in the error (e.g. ``[areas] import``).
    """
    for path in files:
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise ConfigError(f"{setting}: {path}: {exc.strerror}") from None
        digest = hashlib.sha256(data).hexdigest()
        previous = cast(str | None, await redis.hget(digests_key, str(path.resolve())))
        if previous == digest and not force:
            continue
        yield ChangedFile(path, data, digest)
