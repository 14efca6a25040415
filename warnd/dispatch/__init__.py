"""Dispatch: accepted alerts → deliveries, sent through the channels, tracked.

Modules, one job each:

``config``     the ``[dispatch]`` settings
``states``     the delivery state machine
``lua``        the scripts that change delivery records
``store``      delivery records: compact per-alert arrays in Redis
``lanes``      Redis Streams work queues, retries schedule, dead letters
``ratelimit``  channel rate limits shared across processes
``planner``    alert → audience → variants → batches in the lanes; Cancel/Update
``worker``     channel workers: claim, send, record, retry, reconcile
``reconcile``  deliveries in doubt: the provider's query API before any resend
``ack``        acknowledgement (叫应) tokens, deadlines, escalation
``receipts``   asynchronous receipts applied to deliveries
``service``    one process's dispatch: the aiohttp ``cleanup_ctx`` entry

This package imports only ``config`` eagerly (the settings model needs it).
"""

from warnd.dispatch.config import DispatchSettings

__all__ = ["DispatchSettings"]
