"""The SMS gateway's usual answer, decoded straight into the fields warnd reads.

A send's answer lists up to 1,000 results, one object per number. Decoding
it into dicts (orjson) makes a dict and a string per field of every result,
most of them never read. :class:`AnswerShape` builds, from the channel's
field names, a msgspec decoder that keeps only the result list (number,
code and message id of each result) and the request id, as small structs the
garbage collector does not track; every other field is skipped unread.
Integers keep every digit (a 20-digit message id stays an ``int``).

It reads the usual answer only. Whatever does not fit the shape (results
that are not objects, a field of another type on the way, JSON that msgspec
refuses) is :data:`None`, and the caller reads the answer the general way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import msgspec

NUMBER = attrgetter("number")
CODE = attrgetter("code")
ID = attrgetter("id")


@dataclass(frozen=True, slots=True)
class Decoded:
    """The fields read from one answer."""

    results: Any
    """The result list (of structs with ``number``, ``code``, ``id``), or what
    stood there instead (``None`` when the answer has no such field)."""
    request: Any
    """The answer's request id, ``None`` when absent (or not asked for)."""


def _walk(doc: Any, attrs: Sequence[str]) -> Any:
    for a in attrs:
        if doc is None:
            return None
        doc = getattr(doc, a)
    return doc


def _path(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


class AnswerShape:
    """A decoder for answers whose results sit at ``results`` (a dotted path)
    and whose request id, if asked for, at ``request``."""

    __slots__ = ("_decoder", "_request", "_results")

    def __init__(
        self,
        results: str,
        number: str,
        code: str,
        message_id: str,
        request: str | None = None,
    ) -> None:
        row = msgspec.defstruct(
            "Result",
            [("number", Any, None), ("code", Any, None), ("id", Any, None)],
            rename={"number": number, "code": code, "id": message_id},
            gc=False,
        )
        leaves: dict[tuple[str, ...], Any] = {_path(results): list[row]}  # type: ignore[valid-type]
        if request is not None:
            leaves[_path(request)] = Any
        tree: dict[str, Any] = {}
        for path, kind in leaves.items():
            if not path:
                raise ValueError("an answer path is empty")
            node = tree
            for part in path[:-1]:
                nxt = node.setdefault(part, {})
                if not isinstance(nxt, dict):
                    raise ValueError(f"answer paths overlap at {part!r}")
                node = nxt
            if path[-1] in node:
                raise ValueError(f"answer paths overlap at {path[-1]!r}")
            node[path[-1]] = kind
        names: dict[tuple[str, ...], tuple[str, ...]] = {}
        root = _struct(tree, (), names)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(root)
        self._results = names[_path(results)]
        self._request = names[_path(request)] if request is not None else None

    @classmethod
    def of(
        cls,
        results: str,
        number: str,
        code: str,
        message_id: str,
        request: str | None = None,
    ) -> AnswerShape | None:
        """The shape of these fields, or ``None`` when they cannot make one
        (an empty or overlapping path, one name for two fields): the answer is
        then always read the general way."""
        if len({number, code, message_id}) < 3:
            return None
        try:
            return cls(results, number, code, message_id, request)
        except (ValueError, TypeError):
            return None

    def decode(self, text: str | bytes) -> Decoded | None:
        """The fields of one answer; ``None`` when it is not of this shape."""
        try:
            doc = self._decoder.decode(text)
        except msgspec.MsgspecError:
            return None
        request = _walk(doc, self._request) if self._request is not None else None
        return Decoded(_walk(doc, self._results), request)


def _struct(
    tree: dict[str, Any], at: tuple[str, ...], names: dict[tuple[str, ...], tuple[str, ...]]
) -> Any:
    """A struct type for one level of the answer, its fields named ``f0``,
    ``f1``… (JSON keys need not be identifiers); ``names`` gets, per path of
    JSON keys, the path of attributes that reads it."""
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for i, (key, kind) in enumerate(tree.items()):
        attr = f"f{i}"
        rename[attr] = key
        here = (*at, key)
        names[here] = (*names.get(at, ()), attr)
        if isinstance(kind, dict):
            kind = _struct(kind, here, names) | None
        fields.append((attr, kind, None))
    return msgspec.defstruct("Answer", fields, rename=rename, gc=False)
