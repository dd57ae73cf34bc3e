#!/usr/bin/env python3
"""A small client of the broker in Python, written from protocol/PROTOCOL.md alone.

It shows that the wire protocol can be spoken without the Rust crates: a REQ socket, one
MessagePack map per frame. Import `Client` from it, or run it:

    pyclient.py [OPTIONS] topics [--partitions]
    pyclient.py [OPTIONS] create-topic TOPIC [--partitions N]
    pyclient.py [OPTIONS] append TOPIC MESSAGE... [--key KEY] [--header NAME=VALUE]...
                                                 [--partition N]
    pyclient.py [OPTIONS] fetch TOPIC [--partition N] [--offset N] [--max N] [--print-headers]
                                     [--no-batches]
    pyclient.py [OPTIONS] append-lines TOPIC [--batch N] [--max-in-flight N] [--partition N]

    OPTIONS: [--connect EP] [--timeout SECONDS] [--user NAME]
             [--curve-server-key KEY] [--curve-key-file FILE]

Against a broker that requires users (PROTOCOL.md, "Security"), `--user NAME` logs in with PLAIN,
the password read from BROKER_PASSWORD or asked for on the terminal; `--curve-server-key KEY`
(the broker's `curve public key` line) encrypts with CURVE, as the key pair in
`--curve-key-file FILE` (secret key on its first line, as `broker keygen` writes it) or a new
pair made for this run. A refused login exits with status 3, anything else that fails with 1.

Partitions (PROTOCOL.md, "Partitions"): `append --key KEY` places the messages where the broker
would, by Kafka's murmur2 of the key (`partition_for_key`, over the count `list_topics` gives),
and names the partition; `--partition N` names one; without either the broker places them.
`fetch` reads one partition, 0 unless told otherwise.

Record batches (PROTOCOL.md, "Record batches"): `fetch` asks for the messages as the broker
stores them, record batches in one byte string, and checks and decodes them (`decode_batches`)
into the same messages a `messages` reply holds; a broker older than that answers `messages`,
which it takes as ever. `--no-batches` asks for `messages`.

Idempotent appends (PROTOCOL.md, "Idempotent appends"): `Client.append(..., producer=P,
sequence=S)` marks an append so that the same one sent again is stored once and answered with
the first sending's offsets.

Pipelining (PROTOCOL.md, "Correlating replies"): `Pipeline` is a DEALER connection with several
requests outstanding, each given its own `id` and matched with the reply that echoes it, not by
the order replies come in. `append-lines` sends standard input, `--batch` lines per append
(100), with up to `--max-in-flight` appends (8) awaiting their replies.

Needs pyzmq and msgpack: `pip install -r requirements.txt` (the file beside this one).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import time
from dataclasses import dataclass

try:
    import msgpack
    import zmq
    import zmq.utils.monitor
except ImportError as missing:  # pragma: no cover - depends on the machine
    print(
        f"error: this client needs pyzmq and msgpack ({missing}); "
        "install them with `pip install -r scripts/requirements.txt`",
        file=sys.stderr,
    )
    sys.exit(1)

#: The protocol version this client speaks (PROTOCOL.md, "Versioning").
VERSION = 1

#: Where the broker listens unless told otherwise (PROTOCOL.md, "Transport").
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"

#: How long to wait for a reply, in seconds, on top of any wait the request asks the broker for.
DEFAULT_TIMEOUT = 5.0

#: How long the CLI lets a claim wait for a logical broker to free up, in milliseconds.
CLAIM_WAIT_MS = 2000

#: The exit status of a refused login: not the 1 of a broker that is not reachable.
EXIT_AUTH_FAILED = 3

#: The most partitions a topic may have (PROTOCOL.md, "Limits").
MAX_PARTITIONS = 10_000


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (its `Utils.murmur2`, seed 0x9747b28c) as an unsigned 32-bit number."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[whole:]
    if tail:
        for i in reversed(range(len(tail))):
            h ^= tail[i] << (8 * i)
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and the broker) gives `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % max(partitions, 1)


#: The socket events that end a handshake (PROTOCOL.md, "Security": a refused handshake).
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


@dataclass
class Credentials:
    """How to log in: PLAIN with `user` and `password`, or CURVE with the broker's public key
    and a key pair of the client's own (Z85 text, 40 characters each)."""

    #: The user name (PLAIN), or None.
    user: str | None = None
    #: The user's password (PLAIN).
    password: str | None = None
    #: The broker's CURVE public key, or None for no encryption.
    curve_server_key: str | None = None
    #: The client's CURVE public key (with `curve_server_key`).
    curve_public_key: str | None = None
    #: The client's CURVE secret key (with `curve_server_key`).
    curve_secret_key: str | None = None

    def apply(self, socket) -> None:
        """Sets the socket's security options; CURVE wins when both are given."""
        if self.curve_server_key:
            socket.curve_serverkey = self.curve_server_key.encode("ascii")
            socket.curve_publickey = self.curve_public_key.encode("ascii")
            socket.curve_secretkey = self.curve_secret_key.encode("ascii")
        elif self.user is not None:
            socket.plain_username = self.user.encode("utf-8")
            socket.plain_password = (self.password or "").encode("utf-8")

    def who(self) -> str:
        """How a refusal names the client."""
        if self.user is not None:
            return f"user {self.user}"
        if self.curve_public_key:
            return f"key {self.curve_public_key}"
        return "a client without credentials"


def read_key_file(path: str) -> tuple[str, str]:
    """The (public, secret) pair from a key file whose first line is the secret key in Z85."""
    try:
        with open(path, encoding="ascii") as file:
            secret = file.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ClientError(f"cannot read the key file {path}: {e}") from e
    if len(secret) != 40:
        raise ClientError(f"{path}, line 1: a CURVE key is 40 characters of Z85")
    try:
        public = zmq.curve_public(secret.encode("ascii")).decode("ascii")
    except (zmq.ZMQError, ValueError) as e:
        raise ClientError(f"{path}, line 1: not a CURVE secret key ({e})") from e
    return public, secret


class ClientError(Exception):
    """The exchange with the broker failed: no reply in time, or a reply that makes no sense."""


class AuthenticationFailed(ClientError):
    """The broker refused the handshake: wrong credentials, or none where it requires some."""


class BrokerError(ClientError):
    """The broker answered with an error reply (PROTOCOL.md, "Error replies")."""

    def __init__(self, code: int, error: str, reason: str, first_offset=None, next_offset=None,
                 partitions=None):
        super().__init__(f"{error} ({code}): {reason}")
        #: The numeric status code, e.g. 303.
        self.code = code
        #: The code's stable name, e.g. "unknown_topic".
        self.error = error
        #: A sentence for people; never parse it.
        self.reason = reason
        #: For offset_out_of_range: the topic's first kept offset, else None.
        self.first_offset = first_offset
        #: For offset_out_of_range: the topic's next offset, else None.
        self.next_offset = next_offset
        #: For unknown_partition: how many partitions the topic has, else None.
        self.partitions = partitions

    @property
    def transient(self) -> bool:
        """Whether the same request may succeed later (a 3xx code)."""
        return self.code < 500


class DamagedBatches(ClientError):
    """A `batches` reply that does not hold together (PROTOCOL.md, "Record batches"): cut
    short, a checksum that does not match, entries that do not fill their body, an unknown flag,
    a gap in the offsets. None of it is taken."""


def _crc32c_table() -> tuple[int, ...]:
    """The 256 CRC-32C remainders of one byte, for the reflected polynomial 0x82F63B78."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


#: Built once: the CRC of every batch of every reply looks bytes up in it.
CRC32C_TABLE = _crc32c_table()


def crc32c(data) -> int:
    """CRC-32C (Castagnoli, as iSCSI): initial value and final XOR 0xFFFFFFFF."""
    crc, table = 0xFFFFFFFF, CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


#: The bytes before a batch's body: body_len:u32 crc:u32.
BATCH_PREFIX = 8

#: The fixed part of a body: base_offset:u64 count:u32 timestamp_ms:u64 flags:u8.
BODY_HEADER = 21

#: The flag bit saying that every entry carries its headers; the only one this reader knows.
FLAG_HEADERS = 0x01

#: The longest varint: ten bytes of 7 bits hold any 64-bit number.
VARINT_MAX_BYTES = 10


class _Body:
    """A reader of one batch's body, or of an entry's headers, that refuses to go past its end."""

    def __init__(self, data: bytes, start: int, end: int, where: str, of: str = "the body"):
        self.data, self.pos, self.end, self.where, self.of = data, start, end, where, of

    def damaged(self, what: str) -> DamagedBatches:
        return DamagedBatches(f"the broker's `batches` reply is damaged: {self.where}: {what}")

    def varint(self, name: str) -> int:
        value = shift = 0
        for _ in range(VARINT_MAX_BYTES):
            if self.pos >= self.end:
                raise self.damaged(f"{name} is cut short by the end of {self.of}")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value >= 1 << 64:
                    raise self.damaged(f"{name} does not fit in 64 bits")
                return value
            shift += 7
        raise self.damaged(f"{name} is a varint longer than {VARINT_MAX_BYTES} bytes")

    def take(self, length: int, name: str) -> bytes:
        if length > self.end - self.pos:
            raise self.damaged(
                f"{name} of {length} bytes runs past the end of {self.of} "
                f"({self.end - self.pos} bytes left)"
            )
        start = self.pos
        self.pos += length
        return self.data[start:self.pos]


def _headers(body: _Body, length: int) -> list:
    """The headers of the entry being read: exactly the next `length` bytes of the body."""
    end = body.pos + length
    if length > body.end - body.pos:
        raise body.damaged(f"its headers of {length} bytes run past the end of the body")
    inner = _Body(body.data, body.pos, end, f"{body.where}, its headers", "its headers")
    headers = []
    while inner.pos < end:
        name_len = inner.varint("a header's name_len")
        try:
            name = inner.take(name_len, "a header's name").decode("utf-8")
        except UnicodeDecodeError as e:
            raise inner.damaged(f"a header's name is not UTF-8 ({e})") from e
        value_len = inner.varint(f"the value_len of header {name!r}")
        value = None if value_len == 0 else inner.take(value_len - 1,
                                                       f"the value of header {name!r}")
        headers.append([name, value])
    body.pos = end
    return headers


def decode_batches(data: bytes, offset: int) -> list[dict]:
    """The messages of a `batches` reply to a fetch from `offset`, as the `messages` reply gives
    them: dicts of offset, timestamp, value, and key and headers (a list of [name, value or
    None]) only when the message has them.

    Every batch's checksum, length, flags and offsets are checked first (PROTOCOL.md, "Record
    batches"); raises DamagedBatches, naming the batch and what is wrong, rather than return
    any message of a reply that does not hold together.
    """
    if not isinstance(data, bytes):
        raise DamagedBatches(
            f"the broker's `batches` reply is damaged: `batches` is {type(data).__name__}, not bin"
        )
    messages = []
    pos, number, expected = 0, 0, offset
    while pos < len(data):
        where = f"batch {number} (at byte {pos})"
        if len(data) - pos < BATCH_PREFIX:
            raise DamagedBatches(
                f"the broker's `batches` reply is damaged: {where} is cut short: "
                f"{len(data) - pos} bytes where its length and checksum take {BATCH_PREFIX}"
            )
        body_len = int.from_bytes(data[pos:pos + 4], "little")
        crc = int.from_bytes(data[pos + 4:pos + 8], "little")
        start, end = pos + BATCH_PREFIX, pos + BATCH_PREFIX + body_len
        body = _Body(data, start, end, where)
        if end > len(data):
            raise body.damaged(
                f"cut short: its body_len is {body_len} but {len(data) - start} bytes follow"
            )
        if body_len < BODY_HEADER:
            raise body.damaged(
                f"its body_len {body_len} is shorter than a body's {BODY_HEADER}-byte header"
            )
        actual = crc32c(memoryview(data)[start:end])
        if actual != crc:
            raise body.damaged(
                f"its checksum 0x{crc:08x} does not match its body's CRC-32C 0x{actual:08x}"
            )
        base_offset = int.from_bytes(data[start:start + 8], "little")
        count = int.from_bytes(data[start + 8:start + 12], "little")
        timestamp = int.from_bytes(data[start + 12:start + 20], "little")
        flags = data[start + 20]
        body.pos = start + BODY_HEADER
        if base_offset != expected:
            raise body.damaged(
                f"a gap in the offsets: its base_offset is {base_offset}, "
                f"where {expected} comes next"
            )
        if count == 0:
            raise body.damaged("its count is 0")
        if flags & ~FLAG_HEADERS:
            raise body.damaged(f"unknown flags 0x{flags:02x} (this reader knows only bit 0)")
        for i in range(count):
            message_offset = base_offset + i
            body.where = f"{where}, offset {message_offset}"
            key_len = body.varint("key_len")
            value_len = body.varint("value_len")
            headers_len = body.varint("headers_len") if flags & FLAG_HEADERS else 0
            key = None if key_len == 0 else body.take(key_len - 1, "the key")
            message = {"offset": message_offset, "timestamp": timestamp}
            if key is not None:
                message["key"] = key
            message["value"] = body.take(value_len, "the value")
            if headers_len:
                message["headers"] = _headers(body, headers_len)
            messages.append(message)
        body.where = where
        if body.pos != end:
            raise body.damaged(
                f"its {count} entries do not fill its body: {end - body.pos} bytes are left over"
            )
        expected = base_offset + count
        pos, number = end, number + 1
    return messages


#: The most messages a fetch returns, and how many it returns when it does not say.
MAX_FETCH_MESSAGES, DEFAULT_FETCH_MESSAGES = 10000, 500


def messages_of_batches(reply: dict, offset: int, max_messages: int | None = None) -> dict:
    """A `batches` reply to a fetch from `offset` in the `messages` form: the same map with
    `messages` in place of `batches`. Its `next_offset` must follow the last message (or be
    `offset` when there is none), since a whole batch missing at the end would leave no
    other trace, and it may hold no more messages than the fetch's `max_messages` allows."""
    messages = decode_batches(reply.get("batches"), offset)
    asked = DEFAULT_FETCH_MESSAGES if max_messages is None else max_messages
    allowed = min(max(asked, 1), MAX_FETCH_MESSAGES)
    if len(messages) > allowed:
        raise DamagedBatches(
            f"the broker's `batches` reply is damaged: it holds {len(messages)} messages, "
            f"more than the {allowed} the fetch asked for"
        )
    follows = messages[-1]["offset"] + 1 if messages else offset
    if reply.get("next_offset") != follows:
        raise DamagedBatches(
            f"the broker's `batches` reply is damaged: its next_offset is "
            f"{reply.get('next_offset')!r}, but its messages end before {follows}"
        )
    converted = {name: value for name, value in reply.items() if name != "batches"}
    converted["messages"] = messages
    return converted


class Client:
    """One REQ connection to the broker; each method is one request and its reply.

    Methods return the reply's map (keys are str, message keys and values are bytes) and raise
    BrokerError for an error reply, ClientError when no reply comes in time.
    """

    #: The socket of the connection: one request, then its reply.
    SOCKET_TYPE = zmq.REQ

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: Credentials | None = None,
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        self.credentials = credentials or Credentials()
        self._context = zmq.Context.instance()
        self._socket = None
        self._monitor = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the socket without waiting for anything unsent."""
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _connect(self):
        if self._socket is None:
            socket = self._context.socket(self.SOCKET_TYPE)
            socket.setsockopt(zmq.LINGER, 0)
            self.credentials.apply(socket)
            # The handshake's outcome comes as a socket event, never as a reply: watch for it
            # so that a refused login does not look like a dead broker.
            self._monitor = socket.get_monitor_socket(HANDSHAKE_EVENTS)
            socket.connect(self.endpoint)
            self._socket = socket
        return self._socket

    def _wait(self, socket, event: int, limit_ms: int) -> bool:
        """Waits up to `limit_ms` for `socket` to be ready for `event`; raises
        AuthenticationFailed when the handshake is refused meanwhile."""
        poller = zmq.Poller()
        poller.register(socket, event)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + limit_ms / 1000
        while True:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(poller.poll(left))
            if socket in ready:
                return True
            if self._monitor in ready:
                self._check_handshake()
                continue
            if left == 0:
                return False

    def _check_handshake(self) -> None:
        while self._monitor.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(self._monitor)["event"]
            if event != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.close()
                raise AuthenticationFailed(
                    f"authentication failed for {self.credentials.who()} at {self.endpoint}"
                )

    def request(self, op: str, wait_ms: int = 0, **fields) -> dict:
        """Sends one request and returns the success reply's map.

        `wait_ms` is how long the broker may hold the reply; the receive timeout is extended by
        it. Fields whose value is None are left out, as the protocol treats both alike.
        """
        body = {"v": VERSION, "op": op}
        if wait_ms:
            body["wait_ms"] = wait_ms
        body.update((key, value) for key, value in fields.items() if value is not None)
        frame = msgpack.packb(body, use_bin_type=True)

        socket = self._connect()
        limit_ms = int(self.timeout * 1000) + wait_ms
        if not self._wait(socket, zmq.POLLOUT, limit_ms):
            self._unreachable()
        socket.send(frame)
        if not self._wait(socket, zmq.POLLIN, limit_ms):
            # A REQ socket that got no reply cannot send again: drop it, the next request
            # opens a new one.
            self._unreachable()
        return self._check(socket.recv())

    def _unreachable(self):
        self.close()
        raise ClientError(f"broker not reachable at {self.endpoint}")

    @staticmethod
    def _check(frame: bytes) -> dict:
        try:
            reply = msgpack.unpackb(frame, raw=False)
        except (ValueError, msgpack.UnpackException) as e:
            raise ClientError(f"the broker's reply is not MessagePack: {e}") from e
        if not isinstance(reply, dict):
            raise ClientError("the broker's reply is not a MessagePack map")
        if reply.get("v") != VERSION:
            version = reply.get("v")
            raise ClientError(f"the broker speaks protocol version {version!r}, not {VERSION}")
        if reply.get("reply") == "error":
            raise BrokerError(
                reply.get("code", 0),
                reply.get("error", "error"),
                reply.get("reason", ""),
                reply.get("first_offset"),
                reply.get("next_offset"),
                reply.get("partitions"),
            )
        return reply

    @staticmethod
    def _expect(reply: dict, name: str) -> dict:
        if reply.get("reply") != name:
            raise ClientError(f"expected a `{name}` reply, got {reply.get('reply')!r}")
        return reply

    def status(self) -> list[dict]:
        """Every logical broker: id, available, holder, lease_remaining_ms, topics, ..."""
        return self._expect(self.request("status"), "status").get("brokers", [])

    def claim(self, broker: int | None = None, wait_ms: int = 0, client: str | None = None) -> dict:
        """Claims a logical broker (any free one unless `broker` names one).

        Returns the `claimed` reply: `broker`, `claim` (the token) and `lease_ms`.
        """
        reply = self.request("claim", wait_ms=wait_ms, broker=broker, client=client)
        return self._expect(reply, "claimed")

    def renew(self, claim: int) -> dict:
        """Starts the claim's lease again; returns `broker` and `lease_ms`."""
        return self._expect(self.request("renew", claim=claim), "renewed")

    def release(self, claim: int) -> dict:
        """Gives the logical broker back."""
        return self._expect(self.request("release", claim=claim), "released")

    def list_topics(self, claim: int) -> list[dict]:
        """Every topic, by name: name, partitions, messages, first_offset, next_offset (those
        two of partition 0), first_offsets and next_offsets (one per partition), bytes."""
        return self._expect(self.request("list_topics", claim=claim), "topics").get("topics", [])

    def fetch(
        self,
        claim: int,
        topic: str,
        offset: int,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int = 0,
        partition: int | None = None,
        batches: bool = True,
    ) -> dict:
        """Reads messages of `partition` (0 unless given) from `offset` on.

        Returns the reply in the `messages` form: `partition`, `messages` (each with offset,
        timestamp, value, maybe key, and `headers`, a list of [name, value or None], when it
        has some), `next_offset` and `end_offset`; `reply` says which form the broker sent.

        With `batches` (the default) it asks for the messages as record batches (PROTOCOL.md,
        "Record batches") and takes either reply: `batches`, checked whole and decoded into
        the list of messages, or `messages` from a broker older than the field. Raises
        DamagedBatches for a `batches` reply that does not hold together, returning none of it.
        """
        reply = self.request(
            "fetch",
            wait_ms=wait_ms,
            claim=claim,
            topic=topic,
            offset=offset,
            max_messages=max_messages,
            max_bytes=max_bytes,
            partition=partition,
            # Left out rather than false: the request is then what it was before the field.
            batches=True if batches else None,
        )
        if not batches or reply.get("reply") != "batches":
            return self._expect(reply, "messages")
        return messages_of_batches(reply, offset, max_messages)

    def append(
        self,
        topic: str,
        messages: list,
        partition: int | None = None,
        producer: int | None = None,
        sequence: int | None = None,
    ) -> dict:
        """Appends messages, each bytes (a value), a (key, value) pair of bytes, or a
        (key, value, headers) triple whose headers are a list of (name, value) pairs, name a str
        and value bytes or None (kept in order; a name may repeat), all to `partition`, or each
        where the broker places it when None.

        `producer` and `sequence` (both or neither, each an unsigned 64-bit number) mark the
        append as an idempotent producer's (PROTOCOL.md, "Idempotent appends"): the broker
        stores it at most once, and answers the same messages sent again with the same
        `partition`, `producer` and `sequence` with the offsets the first sending got, so a
        caller that got no reply, or a `store_unavailable` that may have stored it, can send it
        again. `in_progress` (317) says the first sending is still being stored: send again
        after a short pause. Choose `producer` at random once (`random.getrandbits(64)`), and a
        new `sequence` for each new append.

        Returns the `appended` reply: `partition` (the first message's), `first_offset` and
        `last_offset` there, and `placed` (a list of {partition, first_offset, last_offset})
        when the messages went to several partitions.

        Raises ValueError for `producer` without `sequence` or the reverse, or either outside
        0 to 2**64 - 1, before sending anything (the broker would answer `malformed`).
        """
        if (producer is None) != (sequence is None):
            raise ValueError("an idempotent append needs both producer and sequence, or neither")
        for name, number in (("producer", producer), ("sequence", sequence)):
            if number is not None and not 0 <= number < 2**64:
                raise ValueError(f"{name} must be an unsigned 64-bit number, not {number}")
        records = []
        for message in messages:
            if isinstance(message, tuple):
                key, value, headers = message if len(message) == 3 else (*message, None)
                record = {"value": value} if key is None else {"key": key, "value": value}
                if headers:
                    # Each header is [str, bin or nil]; msgpack writes bytes as bin.
                    record["headers"] = [[name, data] for name, data in headers]
                records.append(record)
            else:
                records.append({"value": message})
        reply = self.request(
            "append",
            topic=topic,
            messages=records,
            partition=partition,
            producer=producer,
            sequence=sequence,
        )
        return self._expect(reply, "appended")

    def create_topic(self, topic: str, partitions: int | None = None) -> dict:
        """Creates an empty topic of `partitions` partitions (1 unless given); returns the
        `created` reply, with `partitions`."""
        reply = self.request("create_topic", topic=topic, partitions=partitions)
        return self._expect(reply, "created")

    def create_partitions(self, topic: str, partitions: int) -> dict:
        """Grows a topic to `partitions` partitions in all."""
        reply = self.request("create_partitions", topic=topic, partitions=partitions)
        return self._expect(reply, "partitions_created")

    def delete_topic(self, topic: str) -> dict:
        """Deletes a topic and its messages."""
        return self._expect(self.request("delete_topic", topic=topic), "deleted")


class Pipeline(Client):
    """One DEALER connection with up to `max_in_flight` requests awaiting their replies.

    `send` gives each request the next `id` (a counter) and returns it; `next_reply` returns the
    replies as they come, each with the `id` it echoes, so that a held reply coming after later
    requests' replies is still told apart (PROTOCOL.md, "Correlating replies"). A request whose
    reply has not come `timeout` seconds (plus its `wait_ms`) after it was sent is given up as
    unanswered: for an append, it may or may not have been stored, and it is not sent again.
    """

    SOCKET_TYPE = zmq.DEALER

    def __init__(self, *args, max_in_flight: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_in_flight = max(1, max_in_flight)
        self._next_id = 0
        #: The requests sent and unanswered: id -> (op, deadline).
        self._outstanding: dict[int, tuple[str, float]] = {}
        #: Replies taken while `send` waited for room, handed out first by `next_reply`.
        self._early: list[tuple[int, dict | ClientError]] = []

    def outstanding(self) -> int:
        """How many requests await their replies."""
        return len(self._outstanding)

    def send(self, op: str, wait_ms: int = 0, **fields) -> int:
        """Sends one request, first waiting for a reply while `max_in_flight` are outstanding
        (those replies are kept for `next_reply`); returns the request's `id`."""
        while len(self._outstanding) >= self.max_in_flight:
            self._early.append(self._receive())
        request_id = self._next_id
        self._next_id += 1
        body = {"v": VERSION, "op": op, "id": request_id}
        if wait_ms:
            body["wait_ms"] = wait_ms
        body.update((key, value) for key, value in fields.items() if value is not None)
        socket = self._connect()
        limit_ms = int(self.timeout * 1000)
        if not self._wait(socket, zmq.POLLOUT, limit_ms):
            self._unreachable()
        # `[body]` alone: the broker answers `[reply body]` alone (PROTOCOL.md, "Transport").
        socket.send(msgpack.packb(body, use_bin_type=True))
        self._outstanding[request_id] = (op, time.monotonic() + self.timeout + wait_ms / 1000)
        return request_id

    def taken(self) -> list[tuple[int, dict | ClientError]]:
        """The replies `send` took while it waited for room, as `next_reply` gives them."""
        taken, self._early = self._early, []
        return taken

    def next_reply(self) -> tuple[int, dict | ClientError]:
        """The next reply, as (id, the reply's map), or (id, the error) for an error reply or
        a request given up as unanswered. Raises ClientError when nothing is outstanding."""
        if self._early:
            return self._early.pop(0)
        if not self._outstanding:
            raise ClientError("no request awaits a reply")
        return self._receive()

    def _receive(self) -> tuple[int, dict | ClientError]:
        socket = self._connect()
        while True:
            request_id, (op, deadline) = min(self._outstanding.items(), key=lambda i: i[1][1])
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._wait(socket, zmq.POLLIN, left_ms):
                del self._outstanding[request_id]
                return request_id, ClientError(
                    f"broker not reachable at {self.endpoint}: no reply to `{op}` request "
                    f"{request_id}; an append may or may not have been stored"
                )
            frame = socket.recv()
            try:
                echoed = msgpack.unpackb(frame, raw=False).get("id")
            except (ValueError, msgpack.UnpackException, AttributeError):
                echoed = None
            try:
                reply = self._check(frame)
            except ClientError as e:
                reply = e
            # A broker from before `id` echoes none: its replies to appends, never held, come
            # in the order sent, so the oldest outstanding request is the one answered.
            if echoed is None:
                echoed = min(self._outstanding)
            if self._outstanding.pop(echoed, None) is None:
                continue
            return echoed, reply


@contextlib.contextmanager
def claimed(client: Client):
    """Claims any logical broker for the block, waiting a little, and releases it after.

    A failure to release does not hide the error that ended the block, if there was one.
    """
    claim = client.claim(wait_ms=CLAIM_WAIT_MS, client="pyclient")["claim"]
    try:
        yield claim
    except BaseException:
        try:
            client.release(claim)
        except (ClientError, zmq.ZMQError):
            pass
        raise
    client.release(claim)


def cmd_topics(client: Client, args) -> None:
    with claimed(client) as claim:
        for topic in client.list_topics(claim):
            if args.partitions:
                # A broker before partitions sends no lists: one partition, partition 0's.
                nexts = topic.get("next_offsets", [topic["next_offset"]])
                print(f"{topic['name']}\t{topic.get('partitions', 1)}\t"
                      + ",".join(str(n) for n in nexts))
                continue
            print(
                f"{topic['name']}\t{topic['messages']}\t"
                f"{topic['first_offset']}\t{topic['next_offset']}"
            )


def cmd_create_topic(client: Client, args) -> None:
    reply = client.create_topic(args.topic, args.partitions)
    print(f"created {args.topic} with {reply.get('partitions', 1)} partition(s)")


def partition_count(client: Client, topic: str) -> int | None:
    """How many partitions `topic` has, or None when it does not exist."""
    with claimed(client) as claim:
        for info in client.list_topics(claim):
            if info["name"] == topic:
                return info.get("partitions", 1)
    return None


def parse_header(text: str) -> tuple[str, bytes | None]:
    """`NAME=VALUE` as a header; `NAME` alone has no value (Kafka's null)."""
    name, equals, value = text.partition("=")
    return name, value.encode("utf-8") if equals else None


def headers_text(headers) -> str:
    """A message's headers as Kafka's console consumer prints them with print.headers=true."""
    if not headers:
        return "NO_HEADERS"
    return ",".join(f"{name}:{'null' if value is None else value.decode('utf-8', 'replace')}"
                    for name, value in headers)


def cmd_append(client: Client, args) -> None:
    key = None if args.key is None else args.key.encode("utf-8")
    headers = [parse_header(text) for text in args.header]
    values = [message.encode("utf-8") for message in args.messages]
    partition = args.partition
    if partition is None and key is not None:
        # Placed here as the broker would place it, so that the partition is known.
        count = partition_count(client, args.topic)
        if count is not None:
            partition = partition_for_key(key, count)
    reply = client.append(args.topic, [(key, value, headers) for value in values], partition)
    where = "" if partition is None else f"partition {reply['partition']} "
    print(
        f"appended {len(values)} message(s) to {args.topic} "
        f"at {where}offsets {reply['first_offset']}..{reply['last_offset']}"
    )


def cmd_fetch(client: Client, args) -> None:
    with claimed(client) as claim:
        offset, printed = args.offset, 0
        # One fetch may stop short of the end (max_bytes); go on until caught up or --max.
        while args.max is None or printed < args.max:
            wanted = None if args.max is None else args.max - printed
            reply = client.fetch(claim, args.topic, offset, max_messages=wanted,
                                 partition=args.partition, batches=not args.no_batches)
            for message in reply["messages"]:
                headers = f"{headers_text(message.get('headers'))}\t" if args.print_headers else ""
                print(f"{message['offset']}\t{headers}"
                      f"{message['value'].decode('utf-8', 'replace')}")
            printed += len(reply["messages"])
            offset = reply["next_offset"]
            if not reply["messages"] or offset >= reply["end_offset"]:
                break


def cmd_append_lines(client: Client, args) -> None:
    """Appends standard input, one message per line, `--batch` lines per append, with up to
    `--max-in-flight` appends awaiting their replies on one DEALER connection."""
    client.close()
    pipeline = Pipeline(client.endpoint, client.timeout, client.credentials,
                        max_in_flight=args.max_in_flight)
    lines_of: dict[int, tuple[int, int]] = {}
    appended = requests = 0
    failed = False

    def report(request_id, reply):
        nonlocal appended, requests, failed
        first, last = lines_of.pop(request_id)
        if isinstance(reply, dict):
            appended += last - first + 1
            requests += 1
        else:
            print(f"lines {first} to {last}: {reply}", file=sys.stderr)
            failed = True

    def flush(batch, first):
        request_id = pipeline.send("append", topic=args.topic, partition=args.partition,
                                   messages=[{"value": line} for line in batch])
        lines_of[request_id] = (first, first + len(batch) - 1)
        # Replies that came meanwhile are reported at once: memory stays bounded.
        for taken in pipeline.taken():
            report(*taken)

    try:
        batch, first, number = [], 1, 0
        for line in sys.stdin.buffer:
            number += 1
            batch.append(line.rstrip(b"\n"))
            if len(batch) == args.batch:
                flush(batch, first)
                batch, first = [], number + 1
        if batch:
            flush(batch, first)
        for taken in pipeline.taken():
            report(*taken)
        while pipeline.outstanding():
            report(*pipeline.next_reply())
    finally:
        pipeline.close()
    print(f"appended {appended} message(s) to {args.topic} in {requests} request(s)")
    if failed:
        raise ClientError("some lines were not appended")


def joined_key_values(argv):
    """`--curve-server-key KEY` as `--curve-server-key=KEY`: a Z85 key may begin with `-`, which
    argparse would take for an option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    joined = []
    while argv:
        arg = argv.pop(0)
        if arg == "--curve-server-key" and argv:
            arg = f"{arg}={argv.pop(0)}"
        joined.append(arg)
    return joined


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Talk to the broker from Python.")
    parser.add_argument("--connect", default=DEFAULT_ENDPOINT, metavar="EP",
                        help=f"the broker's endpoint (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for each reply (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--user", metavar="NAME",
                        help="log in as NAME (PLAIN); the password is BROKER_PASSWORD, or asked "
                             "for on a terminal")
    parser.add_argument("--curve-server-key", metavar="KEY",
                        help="encrypt with CURVE; KEY is the broker's `curve public key`")
    parser.add_argument("--curve-key-file", metavar="FILE",
                        help="this client's CURVE key pair: the secret key on FILE's first line "
                             "(default: a new pair for this run)")
    commands = parser.add_subparsers(dest="command", required=True)

    topics = commands.add_parser("topics", help="list the topics with their offsets")
    topics.add_argument("--partitions", action="store_true",
                        help="print each topic's partition count and next offsets instead")
    topics.set_defaults(run=cmd_topics)

    create = commands.add_parser("create-topic", help="create a topic")
    create.add_argument("topic", metavar="TOPIC")
    create.add_argument("--partitions", type=int, default=None, metavar="N",
                        help=f"how many partitions, 1 to {MAX_PARTITIONS} (default 1)")
    create.set_defaults(run=cmd_create_topic)

    append = commands.add_parser("append", help="append messages to a topic")
    append.add_argument("topic", metavar="TOPIC")
    append.add_argument("messages", metavar="MESSAGE", nargs="+")
    append.add_argument("--key", default=None, metavar="KEY", help="give every message this key")
    append.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                        help="give every message this header (NAME alone: a null value); "
                             "may be repeated, in order")
    append.add_argument("--partition", type=int, default=None, metavar="N",
                        help="append to partition N (default: by the key, else the broker's choice)")
    append.set_defaults(run=cmd_append)

    fetch = commands.add_parser("fetch", help="print a topic's messages")
    fetch.add_argument("topic", metavar="TOPIC")
    fetch.add_argument("--partition", type=int, default=None, metavar="N",
                       help="the partition to read (default 0)")
    fetch.add_argument("--offset", type=int, default=0, metavar="N",
                       help="the first offset to print (default 0)")
    fetch.add_argument("--max", type=int, default=None, metavar="N",
                       help="print at most N messages")
    fetch.add_argument("--print-headers", action="store_true",
                       help="print each message's headers before its value, as name:value pairs "
                            "joined by commas (NO_HEADERS for none)")
    fetch.add_argument("--no-batches", action="store_true",
                       help="ask for the messages one record each (the reply `messages`), not "
                            "as record batches")
    fetch.set_defaults(run=cmd_fetch)

    lines = commands.add_parser("append-lines",
                                help="append standard input, one message per line, pipelined")
    lines.add_argument("topic", metavar="TOPIC")
    lines.add_argument("--batch", type=int, default=100, metavar="N",
                       help="lines per append (default 100)")
    lines.add_argument("--max-in-flight", type=int, default=8, metavar="N",
                       help="appends awaiting their replies at once (default 8)")
    lines.add_argument("--partition", type=int, default=None, metavar="N",
                       help="append to partition N (default: the broker's choice)")
    lines.set_defaults(run=cmd_append_lines)

    args = parser.parse_args(joined_key_values(argv))
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.command == "fetch" and (args.offset < 0 or (args.max is not None and args.max < 1)):
        parser.error("--offset must be 0 or more and --max 1 or more")
    if getattr(args, "partition", None) is not None and args.partition < 0:
        parser.error("--partition must be 0 or more")
    if args.command == "create-topic" and args.partitions is not None \
            and not 1 <= args.partitions <= MAX_PARTITIONS:
        parser.error(f"--partitions must be from 1 to {MAX_PARTITIONS}")
    if args.command == "append-lines" and (args.batch < 1 or args.max_in_flight < 1):
        parser.error("--batch and --max-in-flight must be 1 or more")
    if args.curve_key_file and not args.curve_server_key:
        parser.error("--curve-key-file needs --curve-server-key")
    if args.curve_server_key and len(args.curve_server_key) != 40:
        parser.error("--curve-server-key must be 40 characters of Z85")
    return args


def credentials_of(args) -> Credentials:
    """The credentials the flags and the environment give."""
    credentials = Credentials()
    if args.curve_server_key:
        if args.curve_key_file:
            public, secret = read_key_file(args.curve_key_file)
        else:
            public, secret = (key.decode("ascii") for key in zmq.curve_keypair())
        credentials.curve_server_key = args.curve_server_key
        credentials.curve_public_key, credentials.curve_secret_key = public, secret
    elif args.user is not None:
        password = os.environ.get("BROKER_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise ClientError("--user needs BROKER_PASSWORD, or a terminal to ask on")
            password = getpass.getpass(f"password for {args.user}: ")
        credentials.user, credentials.password = args.user, password
    return credentials


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with Client(args.connect, args.timeout, credentials_of(args)) as client:
            args.run(client, args)
    except AuthenticationFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_AUTH_FAILED
    except (ClientError, zmq.ZMQError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
