"""The backplane's wire format on bytes: ASP.NET Core's golden vectors and its reader's rules."""

from __future__ import annotations

import msgpack
import pytest

from signalr_chat.signalr.protocol import JSON, MESSAGEPACK, InvocationMessage
from signalr_chat.signalr.redis.wire import (
    BackplaneProtocolError,
    GroupAction,
    GroupCommand,
    RedisChannels,
    RedisInvocation,
    read_ack,
    read_completion,
    read_group_command,
    read_invocation,
    write_ack,
    write_completion,
    write_group_command,
    write_invocation,
)

DUMMY = {"p1": b"\x2a", "p2": b"\x2a"}


def test_channel_names_are_dotnets_with_the_prefix_joined_raw() -> None:
    channels = RedisChannels("Chat.Hubs.ChatHub", "host_0123", prefix="MyApp")
    assert channels.all == b"MyAppChat.Hubs.ChatHub:all"
    assert channels.groups == b"MyAppChat.Hubs.ChatHub:internal:groups"
    assert channels.ack == b"MyAppChat.Hubs.ChatHub:internal:ack:host_0123"
    assert channels.returns == b"MyAppChat.Hubs.ChatHub:internal:return:host_0123"
    assert channels.connection("c1") == b"MyAppChat.Hubs.ChatHub:connection:c1"
    assert channels.group("Room 1") == b"MyAppChat.Hubs.ChatHub:group:Room 1"
    assert channels.user("alice") == b"MyAppChat.Hubs.ChatHub:user:alice"
    assert RedisChannels("H", "s").all == b"H:all"


@pytest.mark.parametrize(
    ("excluded", "golden"),
    [
        ((), "92 90 82 a2 70 31 c4 01 2a a2 70 32 c4 01 2a"),
        (("a",), "92 91 a1 61 82 a2 70 31 c4 01 2a a2 70 32 c4 01 2a"),
    ],
)
def test_invocation_matches_aspnetcores_golden_bytes(excluded: tuple[str, ...], golden: str) -> None:
    data = bytes.fromhex(golden)
    assert write_invocation(DUMMY, excluded) == data
    assert read_invocation(data) == RedisInvocation(DUMMY, excluded)


def test_invocation_for_a_client_result_carries_its_id_and_return_channel() -> None:
    data = write_invocation(DUMMY, (), "abc", "H:internal:return:s")
    assert msgpack.unpackb(data)[2:] == ["abc", "H:internal:return:s"]
    assert read_invocation(data) == RedisInvocation(DUMMY, (), "abc", "H:internal:return:s")


def test_payloads_are_framed_hub_messages_in_bin() -> None:
    payloads = {p.name: p.encode(InvocationMessage("Recv", ["hi"])) for p in (JSON, MESSAGEPACK)}
    data = write_invocation(payloads)
    assert data.startswith(b"\x92\x90\x82\xa4json\xc4")
    assert payloads["json"].endswith(b"\x1e")
    assert read_invocation(data).payloads == payloads


@pytest.mark.parametrize(("action", "byte"), [(GroupAction.ADD, "01"), (GroupAction.REMOVE, "02")])
def test_group_command_matches_aspnetcores_golden_bytes(action: GroupAction, byte: str) -> None:
    data = bytes.fromhex(f"95 2a a1 53 {byte} a1 47 a1 43")
    command = GroupCommand(42, "S", action, "G", "C")
    assert write_group_command(command) == data
    assert read_group_command(data) == command


@pytest.mark.parametrize(
    ("ack_id", "golden"),
    [(0, "91 00"), (42, "91 2a"), (180, "91 cc b4"), (384, "91 cd 01 80"), (70000, "91 ce 00 01 11 70")],
)
def test_ack_matches_aspnetcores_golden_bytes(ack_id: int, golden: str) -> None:
    assert write_ack(ack_id) == bytes.fromhex(golden)
    assert read_ack(bytes.fromhex(golden)) == ack_id


def test_completion_names_its_protocol() -> None:
    data = write_completion("messagepack", b"\x05\x94\x03\x80\xa1x\x01")
    assert data == b"\x92\xabmessagepack\xc4\x07\x05\x94\x03\x80\xa1x\x01"
    assert read_completion(data) == ("messagepack", b"\x05\x94\x03\x80\xa1x\x01")


def test_longer_arrays_are_read_and_the_rest_discarded_as_dotnet_does() -> None:
    assert read_ack(msgpack.packb([7, "future", "fields"])) == 7
    assert read_invocation(msgpack.packb([[], DUMMY, "id", "ret", "extra"])).invocation_id == "id"


@pytest.mark.parametrize(
    ("reader", "data", "text"),
    [
        (read_invocation, msgpack.packb([[]]), "Insufficient items in Invocation array."),
        (read_group_command, msgpack.packb([1, "S", 1, "G"]), "Insufficient items in GroupCommand array."),
        (read_ack, msgpack.packb([]), "Insufficient items in Ack array."),
        (read_completion, msgpack.packb(["json"]), "Insufficient items in Completion array."),
        (read_group_command, msgpack.packb([1, "S", 0, "G", "C"]), "unknown action 0"),
        (read_invocation, msgpack.packb([[], {"json": "text, not bin"}]), "payloads must map"),
        (read_invocation, msgpack.packb([[1], {}]), "excluded ids must be strings"),
        (read_ack, b"\xc1", "Invalid Ack message"),
        (read_ack, msgpack.packb({"not": "an array"}), "not an array"),
        (read_invocation, b"\x92\x90", "Invalid Invocation message"),
    ],
)
def test_malformed_messages_raise_the_backplanes_own_error(reader: object, data: bytes, text: str) -> None:
    with pytest.raises(BackplaneProtocolError, match=text):
        reader(data)  # type: ignore[operator]
