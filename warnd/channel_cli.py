"""``warnd channels list`` and ``warnd channels test CHANNEL ENDPOINT``.

``test`` is the first thing an operator runs after configuring a gateway:
it builds the channel from ``[channels.<name>]``, sends one test message
to one endpoint and prints the receipt the channel returned.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Callable
from datetime import datetime

from warnd.channel import Batch, Outcome, Target, mask_address
from warnd.errors import ConfigError
from warnd.identifiers import beijing_now
from warnd.model import Level, MsgType
from warnd.plugins import channels_from_settings, load_channel_classes, provider_names
from warnd.settings import Settings

TEST_TEXT = "【预警测试】这是一条 warnd 渠道测试消息，请勿转发。This is a warnd channel test."


def add_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    channels = sub.add_parser("channels", help="list channel plugins; send a test message")
    csub = channels.add_subparsers(dest="channels_command", required=True)
    with_config(csub.add_parser("list", help="installed channel plugins and configured channels"))
    test = with_config(
        csub.add_parser("test", help="send a test message through a configured channel")
    )
    test.add_argument("channel", metavar="CHANNEL")
    test.add_argument(
        "endpoint", metavar="ENDPOINT", help="phone number, robot key, mailbox, board id"
    )
    test.add_argument("--text", default=TEST_TEXT, help="message text (default: a test notice)")
    test.add_argument(
        "--level", choices=[lv.value for lv in Level], default="blue", help="colour level"
    )


def _test_batch(args: argparse.Namespace, now: datetime) -> Batch:
    text: str = args.text
    return Batch(
        targets=(Target(delivery_id=f"test-{secrets.token_hex(6)}", address=args.endpoint),),
        text=text,
        subject="warnd 渠道测试 / channel test",
        html=f"<p>{text}</p>",
        lines=("warnd 渠道测试", now.strftime("%m-%d %H:%M")),
        level=Level(args.level),
        alert_id="test",
        identifier=f"warnd-test-{now:%Y%m%d%H%M%S}",
        msg_type=MsgType.ALERT,
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.channels_command == "list":
        classes = load_channel_classes()
        print(f"{'CHANNEL':<12}{'PROVIDERS':<28}{'CONFIGURED'}")
        for name, cls in sorted(classes.items()):
            conf = settings.channels.get(name, {}).get("provider", "-")
            print(f"{name:<12}{', '.join(provider_names(cls)):<28}{conf}")
        for name in sorted(set(settings.channels) - set(classes)):
            print(f"{name:<12}{'(no such plugin)':<28}{settings.channels[name].get('provider')}")
        return 0
    if args.channel not in settings.channels:
        raise ConfigError(
            f"channel {args.channel!r} is not configured: add a [channels.{args.channel}] "
            "table to the configuration"
        )
    built = channels_from_settings(
        settings.model_copy(update={"channels": {args.channel: settings.channels[args.channel]}})
    )
    channel = built[args.channel]
    batch = _test_batch(args, beijing_now())
    await channel.start()
    try:
        receipts = await channel.send(batch)
    finally:
        await channel.stop()
    (receipt,) = receipts
    out = {
        "channel": channel.name,
        "provider": channel.provider,
        "endpoint": mask_address(args.endpoint),
        **receipt.as_dict(),
    }
    print(json.dumps(out, ensure_ascii=False, indent=2))
    if channel.async_receipts and receipt.outcome is Outcome.SENT:
        print(
            f"(the delivery report will arrive at {channel.callback_path()})",
        )
    return 0 if receipt.outcome in (Outcome.SENT, Outcome.DELIVERED) else 1
