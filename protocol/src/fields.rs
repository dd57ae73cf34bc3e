//! The one table of the fields a request or reply frame may carry, and of the fields of the
//! records inside a reply's lists, from which the codec's per-field code is generated.
//!
//! Each field is one line of a table below: its name (which is also its key on the wire), its
//! Rust type once decoded, its MessagePack type as PROTOCOL.md spells it, the reader that
//! decodes it, and the requests or replies that carry it, required or optional. From that one
//! line the `fields!` macro makes the field's slot in the codec's wire struct, its arm in the
//! loop that reads a map, its field in the rmp-serde mirror the codec's tests compare bytes
//! with, and its entry in [`REQUEST_FIELDS`] or [`REPLY_FIELDS`], which
//! `protocol/tests/document.rs` holds against PROTOCOL.md's tables. The encoder and the
//! decoder in [`crate::codec`] then map each [`crate::Request`] and [`crate::Response`]
//! variant to and from these fields. The `records!` macro does the same for the records of
//! `status`, `list_topics` and `list_groups` replies, whose lines give a name, the record's
//! own Rust type (an `Option` is optional) and the PROTOCOL.md type, and makes their writer,
//! their reader and [`BROKER_RECORD`], [`TOPIC_RECORD`], [`GROUP_RECORD`]. In the spirit of
//! malamute's `mlm_proto.xml`, from which its codec is generated.
//!
//! The order of the lines is the order in which the encoder writes the fields, which is the
//! order rmp-serde writes the mirror's (and a record's struct): the codec's tests hold the two
//! to the same bytes.

use crate::codec::read;
use crate::{BrokerStatus, GroupInfo, Message, NewMessage, Placement, TopicInfo};

/// A field of a request or reply frame, as PROTOCOL.md describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The field's name, which is also its key in the frame's map.
    pub name: &'static str,
    /// Its MessagePack type as PROTOCOL.md's tables spell it, e.g. `uint64` or `list of
    /// message records`.
    pub wire_type: &'static str,
    /// The requests (by `op`) or replies (by `reply`) that always carry it; `every` stands
    /// for every frame of its direction.
    pub required: &'static [&'static str],
    /// The requests or replies that may carry it.
    pub optional: &'static [&'static str],
}

/// Generates, from one table of fields, the wire struct with a slot per field, the loop that
/// reads a map into it, the list of [`Field`]s and, for tests, the rmp-serde mirror.
macro_rules! fields {
    (
        $(#[$struct_doc:meta])*
        struct $wire:ident<$a:lifetime>;
        $(#[$list_doc:meta])*
        const $list:ident;
        mirror $mirror:ident;
        $(
            $name:ident: $ty:ty, $wire_type:literal, $read:path,
                required [$($required:ident),*] optional [$($optional:ident),*];
        )*
    ) => {
        $(#[$struct_doc])*
        #[derive(Default)]
        pub(crate) struct $wire<$a> {
            $(
                #[doc = concat!("Field `", stringify!($name), "`.")]
                pub(crate) $name: read::Slot<$ty>,
            )*
            /// The first list met that is longer than its limit; its items were skipped unread.
            pub(crate) over: Option<read::Over>,
        }

        impl<$a> $wire<$a> {
            /// Reads the fields of a map; unknown keys are skipped, a key met twice is
            /// malformed.
            pub(crate) fn read(frame: &$a [u8]) -> Result<$wire<$a>, crate::DecodeError> {
                let mut r = crate::msgpack::Reader::new(frame);
                let mut wire = $wire::default();
                let mut unknown = read::UnknownKeys::default();
                for _ in 0..read::map_len(&mut r, "the frame")? {
                    let key = read::key(&mut r)?;
                    let r = &mut r;
                    match key {
                        $(
                            b if b == stringify!($name).as_bytes() => $read(
                                &mut wire.$name,
                                r,
                                concat!("field `", stringify!($name), "`"),
                                &mut wire.over,
                            )?,
                        )*
                        _ => unknown.skip(key, r, "the frame")?,
                    }
                }
                Ok(wire)
            }
        }

        $(#[$list_doc])*
        pub const $list: &[Field] = &[
            $(
                Field {
                    name: stringify!($name),
                    wire_type: $wire_type,
                    required: &[$(stringify!($required)),*],
                    optional: &[$(stringify!($optional)),*],
                },
            )*
        ];

        /// The same map as rmp-serde writes it from a struct in key order, for the codec's
        /// tests to compare bytes with.
        #[cfg(test)]
        #[derive(Default, serde::Serialize)]
        pub(crate) struct $mirror<$a> {
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                pub(crate) $name: Option<$ty>,
            )*
        }
    };
}

fields! {
    /// Every field a request frame may carry.
    struct WireRequest<'a>;
    /// Every field a request frame may carry, in the order the encoder writes them.
    const REQUEST_FIELDS;
    mirror SerdeRequest;
    // name (= key): Rust type, PROTOCOL.md type, reader in `codec::read`,
    //     required [by these `op`s] optional [in these]; `every` is every request.
    v: u32, "uint32", read::uint32, required [every] optional [];
    op: &'a str, "str", read::string, required [every] optional [];
    id: u64, "uint64", read::uint, required [] optional [every];
    origin: &'a str, "str", read::origin, required [] optional [every];
    claim: u64, "uint64", read::uint,
        required [renew, release, fetch, join_group, group_fetch] optional [list_topics];
    broker: u32, "uint32", read::uint32, required [] optional [claim];
    wait_ms: u64, "uint64", read::uint, required [] optional [claim, fetch, group_fetch];
    client: &'a str, "str", read::string, required [] optional [claim];
    topic: &'a str, "str", read::string,
        required [fetch, append, create_topic, create_partitions, delete_topic, join_group,
            group_fetch, ack, reset_group]
        optional [list_groups, delete_group];
    offset: u64, "uint64", read::uint, required [fetch] optional [reset_group];
    max_messages: u32, "uint32", read::uint32, required [] optional [fetch, group_fetch];
    max_bytes: u32, "uint32", read::uint32, required [] optional [fetch, group_fetch];
    messages: Vec<NewMessage<'a>>, "list of new-message records", read::new_messages,
        required [append] optional [];
    retention_messages: u64, "uint64", read::uint, required [] optional [create_topic];
    retention_bytes: u64, "uint64", read::uint, required [] optional [create_topic];
    retention_ms: u64, "uint64", read::uint, required [] optional [create_topic];
    group: &'a str, "str", read::string,
        required [join_group, group_fetch, ack, reset_group, delete_group] optional [list_groups];
    start: &'a str, "str", read::string, required [] optional [join_group];
    offsets: Vec<u64>, "list of uint64", read::ack_offsets, required [ack] optional [];
    to: &'a str, "str", read::string, required [reset_group] optional [];
    partition: u32, "uint32", read::uint32,
        required [] optional [append, fetch, ack, reset_group, delete_group];
    partitions: u32, "uint32", read::uint32, required [create_partitions] optional [create_topic];
    ordered: bool, "bool", read::boolean, required [] optional [group_fetch];
    producer: u64, "uint64", read::uint, required [] optional [append];
    sequence: u64, "uint64", read::uint, required [] optional [append];
    batches: bool, "bool", read::boolean, required [] optional [fetch];
}

fields! {
    /// Every field a reply frame may carry.
    struct WireResponse<'a>;
    /// Every field a reply frame may carry, in the order the encoder writes them.
    const REPLY_FIELDS;
    mirror SerdeResponse;
    // name (= key): Rust type, PROTOCOL.md type, reader in `codec::read`,
    //     required [by these `reply`s] optional [in these]; `every` is every reply.
    v: u32, "uint32", read::uint32, required [every] optional [];
    code: u16, "uint16", read::uint16, required [every, error] optional [];
    reply: &'a str, "str", read::string, required [every] optional [];
    id: u64, "uint64", read::uint, required [] optional [every];
    error: &'a str, "str", read::string, required [error] optional [];
    reason: &'a str, "str", read::string, required [error] optional [];
    brokers: Vec<BrokerStatus>, "list of broker records", read::records,
        required [status] optional [];
    broker: u32, "uint32", read::uint32, required [claimed, renewed, released] optional [];
    claim: u64, "uint64", read::uint, required [claimed] optional [];
    lease_ms: u64, "uint64", read::uint, required [claimed, renewed] optional [];
    topics: Vec<TopicInfo>, "list of topic records", read::records, required [topics] optional [];
    topic: &'a str, "str", read::string,
        required [messages, batches, appended, created, partitions_created, deleted, joined, delivered,
            acked, reset]
        optional [group_deleted];
    messages: Vec<Message<'a>>, "list of message records", read::messages,
        required [messages, delivered] optional [];
    first_offset: u64, "uint64", read::uint, required [appended] optional [error];
    last_offset: u64, "uint64", read::uint, required [appended] optional [];
    batches: &'a [u8], "bin", read::bin, required [batches] optional [];
    next_offset: u64, "uint64", read::uint, required [messages, batches] optional [error];
    end_offset: u64, "uint64", read::uint, required [messages, batches, joined, delivered]
        optional [];
    group: &'a str, "str", read::string,
        required [joined, delivered, acked, reset, group_deleted] optional [];
    committed_offset: u64, "uint64", read::uint,
        required [joined, delivered, acked, reset] optional [];
    members: u32, "uint32", read::uint32, required [joined] optional [];
    created: bool, "bool", read::boolean, required [joined] optional [];
    ack_timeout_ms: u64, "uint64", read::uint, required [joined] optional [];
    redelivered: Vec<u64>, "list of uint64", read::uints, required [delivered] optional [];
    reset_offset: u64, "uint64", read::uint, required [] optional [delivered];
    acked: u64, "uint64", read::uint, required [acked] optional [];
    groups: Vec<GroupInfo>, "list of group records", read::records, required [groups] optional [];
    partition: u32, "uint32", read::uint32,
        required [messages, batches, appended, delivered, acked] optional [reset, group_deleted];
    partitions: u32, "uint32", read::uint32,
        required [created, partitions_created, joined] optional [error];
    placed: Vec<Placement>, "list of placement records", read::records,
        required [] optional [appended];
}

/// Generates, from one table per record, how the small records inside the lists of
/// `status`, `list_topics` and `list_groups` replies are written and read, and the list of
/// their [`Field`]s. A field's Rust type is the record's own; an `Option` is optional
/// (left out when `None`), anything else required.
macro_rules! records {
    ($(
        $(#[$list_doc:meta])*
        $record:ident as $what:literal, const $list:ident {
            $($name:ident: $ty:ty, $wire_type:literal;)*
        }
    )*) => {$(
        impl crate::codec::Record for $record {
            fn write(&self, out: &mut Vec<u8>) {
                let mut map = crate::codec::MapWriter::start(out);
                $(crate::codec::Value::write(&self.$name, &mut map, stringify!($name));)*
                map.finish();
            }

            fn read(r: &mut crate::msgpack::Reader<'_>) -> Result<Self, crate::DecodeError> {
                $(let mut $name: read::Slot<<$ty as crate::codec::Value>::Item> = None;)*
                let mut unknown = read::UnknownKeys::default();
                for _ in 0..read::map_len(r, $what)? {
                    let key = read::key(r)?;
                    match key {
                        $(
                            b if b == stringify!($name).as_bytes() => crate::codec::fill(
                                &mut $name,
                                r,
                                concat!($what, "'s `", stringify!($name), "`"),
                                <$ty as crate::codec::Value>::read_item,
                            )?,
                        )*
                        _ => unknown.skip(key, r, $what)?,
                    }
                }
                Ok($record {$(
                    $name: <$ty as crate::codec::Value>::from_item($name.flatten())
                        .ok_or_else(|| crate::codec::missing($what, stringify!($name)))?,
                )*})
            }
        }

        $(#[$list_doc])*
        pub const $list: &[RecordField] = &[$(
            RecordField {
                name: stringify!($name),
                wire_type: $wire_type,
                always: !<$ty as crate::codec::Value>::OPTIONAL,
            },
        )*];
    )*};
}

/// A field of a record inside a reply's list, as PROTOCOL.md describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordField {
    /// The field's name, which is also its key in the record's map.
    pub name: &'static str,
    /// Its MessagePack type as PROTOCOL.md's tables spell it.
    pub wire_type: &'static str,
    /// Whether every record carries it.
    pub always: bool,
}

records! {
    // name (= key): the record's Rust type of the field (an `Option` is optional), PROTOCOL.md type

    /// The fields of a broker record, in the order they are written.
    BrokerStatus as "a broker record", const BROKER_RECORD {
        id: u32, "uint32";
        available: bool, "bool";
        holder: Option<String>, "str";
        lease_remaining_ms: Option<u64>, "uint64";
        topics: u64, "uint64";
        messages: u64, "uint64";
        bytes: u64, "uint64";
        disk_bytes: Option<u64>, "uint64";
    }

    /// The fields of a topic record, in the order they are written.
    TopicInfo as "a topic record", const TOPIC_RECORD {
        name: String, "str";
        messages: u64, "uint64";
        first_offset: u64, "uint64";
        next_offset: u64, "uint64";
        bytes: u64, "uint64";
        disk_bytes: Option<u64>, "uint64";
        partitions: u32, "uint32";
        first_offsets: Vec<u64>, "list of uint64";
        next_offsets: Vec<u64>, "list of uint64";
        retention_messages: Option<u64>, "uint64";
        retention_bytes: Option<u64>, "uint64";
        retention_ms: Option<u64>, "uint64";
    }

    /// The fields of a group record, in the order they are written.
    GroupInfo as "a group record", const GROUP_RECORD {
        group: String, "str";
        topic: String, "str";
        committed_offset: u64, "uint64";
        delivered_offset: u64, "uint64";
        end_offset: u64, "uint64";
        pending: u64, "uint64";
        members: Vec<u32>, "list of uint32";
        partition: u32, "uint32";
    }

    /// The fields of a placement record, in the order they are written.
    Placement as "a placement record", const PLACEMENT_RECORD {
        partition: u32, "uint32";
        first_offset: u64, "uint64";
        last_offset: u64, "uint64";
    }
}
