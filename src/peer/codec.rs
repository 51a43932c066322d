//! The bytes of the peer protocol: every [`message`](super::message) type,
//! encoded and decoded. Pure: no I/O.
//!
//! # Layout, protocol version 3
//!
//! Every frame, the handshake included:
//!
//! ```text
//! u32          length of the rest of the frame (kind byte and body), at most
//!              PEER_FRAME_BYTES_MAX (PEER_HELLO_BYTES_MAX for a Hello)
//! byte         kind: 1 hello, 2 request, 3 response
//! ...          the body, by kind
//! ```
//!
//! Notation:
//!
//! ```text
//! u16 u32 u64  fixed width, big-endian; i64 likewise, two's complement
//! varint       unsigned LEB128, 1 to 10 bytes (crate::wire)
//! f64          the 8 bytes of its IEEE-754 bits, big-endian
//! bytes        varint length, then that many bytes
//! string       bytes holding valid UTF-8
//! key          bytes, at most NAMESPACED_KEY_BYTES_MAX long (a client key
//!              with its database prefix, crate::db)
//! option<T>    byte 0 (none), or byte 1 then T
//! list<T>      varint count (at most PEER_LIST_LEN_MAX), then count Ts
//! record       bytes holding a record in the storage format
//!              (model::record: its own format version byte first)
//! vector       varint n (at most VECTOR_ENTRIES_MAX),
//!              n times varint node, varint counter
//!              (nodes strictly increasing, counters > 0: as in records)
//! ```
//!
//! Hello, kind 1, the first frame each side sends. The kind byte and the
//! magic say "dynokv peer protocol"; the version right after them lets a
//! node refuse any other version before reading what it cannot parse.
//!
//! ```text
//! 4 bytes      magic "DYKV"
//! u16          protocol version (`PROTOCOL_VERSION`, 8)
//! string       cluster name
//! member       the sender
//! u32          partitions (Q)
//! 16 bytes     nonce: the challenge the other side must answer
//! bytes        proof: empty, or HMAC-SHA256 (peer::auth, 32 bytes); at most 64
//! byte         purpose: 1 link (kept, carries requests both ways), 2 exchange
//!              (one membership request and its reply); the acceptor echoes
//!              the dialer's (version 3)
//!
//! member:
//! u64          node id
//! string       name
//! string       client address, host:port
//! string       peer address, host:port
//! f64          weight
//! option<string>  zone
//! ```
//!
//! Request, kind 2:
//!
//! ```text
//! u64          request id
//! byte         tag, then its fields:
//!   1 Ping
//!   2 Read        list<key>
//!   3 Replicate   list<key, bytes>: records as stored, checked where
//!                 they are used (the receiver decodes them)
//!   4 Coordinate  key, write op, byte W, byte PW (0: the cluster
//!                 default; PW from version 7)
//!   5 Scan        u16 partition, option<key> after, u32 limit
//!   6 Flush       option<byte> database (none: every database)
//!   7 Gossip      gossip
//!   8 Count       list<u16> partitions
//!   9 Probe       u64 node id: ping it for the sender (SWIM's indirect
//!                 probe of a suspect)
//!  10 Fetch       u16 partition, option<key> after, u32 limit (a handoff
//!                 stream's next batch; answered by Entries)
//!  11 Held        list<u16> partitions (which hold a record here?)
//!  12 Hint        u64 target node id, list<key, bytes>: records as
//!                 stored, to keep as hints for the target (version 7)
//!  13 Roots       list<u16> partitions: their anti-entropy roots (version 8)
//!  14 Segments    u16 partition: its anti-entropy segments (version 8)
//!  15 Leaves      u16 partition, list<u16> segments: their keys and
//!                 leaves (version 8)
//!  16 Reap        list<key, u64 leaf>: remove those still dead and
//!                 unchanged, unless holding hints (version 8)
//!
//! gossip:
//! u64          layout epoch
//! u64          layout digest
//! u64          target placement fingerprint
//! option<bytes>  the layout, in its own format (membership::layout, version 1)
//!
//! write op:
//! byte         base: 1 known | 2 context, then vector
//! byte         condition: 1 always | 2 if absent (NX) | 3 if present (XX)
//!              | 4 unchanged (a WATCHed key), then vector context and
//!              byte live (0 or 1)
//! byte         change tag, then its fields:
//!   1 Put       bytes value (at most VALUE_BYTES_MAX),
//!               byte expiry: 1 never | 2 at, then varint ms | 3 keep
//!   2 Delete
//!   3 Append    bytes data (at most VALUE_BYTES_MAX)
//!   4 SetRange  varint offset, bytes data (at most VALUE_BYTES_MAX)
//!   5 IncrBy    i64 by
//!   6 Expire    option<varint ms> at,
//!               byte flags: bit 0 NX, bit 1 XX, bit 2 GT, bit 3 LT (others 0)
//! ```
//!
//! Response, kind 3:
//!
//! ```text
//! u64          id of the request it answers
//! byte         tag, then its fields:
//!   1 Pong
//!   2 Records     list<option<bytes>>: records as stored, checked where
//!                 they are used (the coordinator decodes them)
//!   3 Ack
//!   4 Written     option<record> previous, option<record> current
//!   5 Entries     list<key, record>
//!   6 Gossip      gossip
//!   7 Error       byte code (1 storage, 2 quorum, 3 shutting down,
//!                 4 bad request, 5 not an integer, 6 overflow, 7 too large,
//!                 8 watched key changed, 9 busy, 10 hint refused,
//!                 11 unwritable: nothing applied),
//!                 string message
//!   8 Count       list<byte database (below crate::db::DATABASES),
//!                 varint keys, varint expires>
//!   9 Probed      byte alive (0 or 1): whether the probed node answered
//!  10 Held        list<u16> partitions: those asked that hold a record
//!  11 Hashes      list<u64>: roots or segments, in the order asked
//!  12 Leaves      list<key, u64 leaf>, in key order
//! ```
//!
//! Tags count from 1, so zeroed bytes are never a message. An unknown kind,
//! tag or code, a bound exceeded, invalid UTF-8 or bytes left after the
//! body are errors, never panics. Any change to this layout bumps
//! [`PROTOCOL_VERSION`].

use super::message::{
    DbCount, ErrorCode, Frame, Gossip, Hello, MAGIC, MemberInfo, PROTOCOL_VERSION, Purpose,
    Request, Response,
};
use crate::limits::{
    NAMESPACED_KEY_BYTES_MAX, PEER_FRAME_BYTES_MAX, PEER_HELLO_BYTES_MAX, PEER_LIST_LEN_MAX,
    VALUE_BYTES_MAX, VECTOR_ENTRIES_MAX,
};
use crate::model::ops::{Base, Change, Condition, ExpireWhen, Expiry, WriteOp};
use crate::model::record::{Record, decode_record, encode_record_into, encoded_len};
use crate::version::VersionVector;
use crate::wire::{DecodeError, Reader, put_varint};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Longest proof a Hello may carry (HMAC-SHA256 needs 32).
const PROOF_BYTES_MAX: usize = 64;

/// Elements reserved up front when decoding a list; longer lists grow, so a
/// hostile count cannot make us allocate ahead of the bytes that back it.
const LIST_PREALLOC_MAX: usize = 1024;

const EXPIRE_NX: u8 = 1;
const EXPIRE_XX: u8 = 2;
const EXPIRE_GT: u8 = 4;
const EXPIRE_LT: u8 = 8;

/// Declares a tag enum and its `TryFrom<u8>` (an unknown byte is
/// [`DecodeError::UnknownTag`]).
macro_rules! tags {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident = $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum $name {
            $($variant = $value,)+
        }

        impl TryFrom<u8> for $name {
            type Error = DecodeError;

            fn try_from(byte: u8) -> Result<Self, DecodeError> {
                match byte {
                    $($value => Ok(Self::$variant),)+
                    found => Err(DecodeError::UnknownTag { what: $what, found }),
                }
            }
        }
    };
}

tags! {
    /// The byte after a frame's length.
    Kind, "frame kind" { Hello = 1, Request = 2, Response = 3, }
}

tags! {
    /// Which [`Purpose`].
    PurposeTag, "connection purpose" { Link = 1, Exchange = 2, }
}

impl From<Purpose> for PurposeTag {
    fn from(purpose: Purpose) -> Self {
        match purpose {
            Purpose::Link => Self::Link,
            Purpose::Exchange => Self::Exchange,
        }
    }
}

impl From<PurposeTag> for Purpose {
    fn from(tag: PurposeTag) -> Self {
        match tag {
            PurposeTag::Link => Self::Link,
            PurposeTag::Exchange => Self::Exchange,
        }
    }
}

tags! {
    /// Which [`Request`].
    RequestTag, "request" {
        Ping = 1, Read = 2, Replicate = 3, Coordinate = 4, Scan = 5, Flush = 6, Gossip = 7,
        Count = 8, Probe = 9, Fetch = 10, Held = 11, Hint = 12, Roots = 13, Segments = 14,
        Leaves = 15, Reap = 16,
    }
}

tags! {
    /// Which [`Response`].
    ResponseTag, "response" {
        Pong = 1, Records = 2, Ack = 3, Written = 4, Entries = 5, Gossip = 6, Error = 7,
        Count = 8, Probed = 9, Held = 10, Hashes = 11, Leaves = 12,
    }
}

tags! {
    /// Which [`Base`].
    BaseTag, "write base" { Known = 1, Context = 2, }
}

tags! {
    /// Which [`Condition`].
    ConditionTag, "write condition" { Always = 1, IfAbsent = 2, IfPresent = 3, Unchanged = 4, }
}

tags! {
    /// Which [`Change`].
    ChangeTag, "write change" {
        Put = 1, Delete = 2, Append = 3, SetRange = 4, IncrBy = 5, Expire = 6,
    }
}

tags! {
    /// Which [`Expiry`].
    ExpiryTag, "expiry" { Never = 1, At = 2, Keep = 3, }
}

tags! {
    /// An [`Option`]'s presence byte.
    OptionTag, "option" { Absent = 0, Present = 1, }
}

impl TryFrom<u8> for ErrorCode {
    type Error = DecodeError;

    fn try_from(byte: u8) -> Result<Self, DecodeError> {
        Ok(match byte {
            1 => Self::Storage,
            2 => Self::Quorum,
            3 => Self::ShuttingDown,
            4 => Self::BadRequest,
            5 => Self::NotAnInteger,
            6 => Self::Overflow,
            7 => Self::TooLarge,
            8 => Self::WatchedKeyChanged,
            9 => Self::Busy,
            10 => Self::HintRefused,
            11 => Self::Unwritable,
            found => {
                return Err(DecodeError::UnknownTag {
                    what: "error code",
                    found,
                });
            }
        })
    }
}

// ---------------------------------------------------------------- encoding

/// Appends a Hello frame, length prefix included.
pub fn encode_hello(hello: &Hello, out: &mut BytesMut) {
    framed(out, Kind::Hello, |out| {
        out.put_slice(&MAGIC);
        out.put_u16(hello.version);
        put_str(out, &hello.cluster);
        put_member(out, &hello.member);
        out.put_u32(hello.partitions);
        out.put_slice(&hello.nonce);
        put_bytes(out, &hello.proof);
        out.put_u8(PurposeTag::from(hello.purpose) as u8);
    });
}

/// Appends a request or response frame, length prefix included.
///
/// A frame longer than [`PEER_FRAME_BYTES_MAX`] is written with a length
/// the receiver refuses (never a wrong one); senders bound what they send.
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Request { id, request } => framed(out, Kind::Request, |out| {
            out.put_u64(*id);
            put_request(out, request);
        }),
        Frame::Response { id, response } => framed(out, Kind::Response, |out| {
            out.put_u64(*id);
            put_response(out, response);
        }),
    }
}

/// Writes the length prefix and kind byte around what `body` appends.
fn framed(out: &mut BytesMut, kind: Kind, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(kind as u8);
    body(out);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.put_slice(bytes);
}

fn put_str(out: &mut BytesMut, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_option<T>(out: &mut BytesMut, value: Option<&T>, put: impl FnOnce(&mut BytesMut, &T)) {
    match value {
        None => out.put_u8(OptionTag::Absent as u8),
        Some(value) => {
            out.put_u8(OptionTag::Present as u8);
            put(out, value);
        }
    }
}

fn put_list<T>(out: &mut BytesMut, items: &[T], put: impl Fn(&mut BytesMut, &T)) {
    put_varint(out, items.len() as u64);
    for item in items {
        put(out, item);
    }
}

fn put_leaves(out: &mut BytesMut, leaves: &[(Bytes, u64)]) {
    put_list(out, leaves, |out, (key, leaf)| {
        put_bytes(out, key);
        out.put_u64(*leaf);
    });
}

fn get_leaves(r: &mut Reader<'_>) -> Result<Vec<(Bytes, u64)>, DecodeError> {
    get_list(r, "leaf", |r| {
        Ok((get_key(r)?, u64::from_be_bytes(fixed(r)?)))
    })
}

fn put_record(out: &mut BytesMut, record: &Record) {
    put_varint(out, encoded_len(record) as u64);
    encode_record_into(record, out);
}

fn put_vector(out: &mut BytesMut, vector: &VersionVector) {
    put_list(out, vector.entries(), |out, &(node, counter)| {
        put_varint(out, node);
        put_varint(out, counter);
    });
}

fn put_member(out: &mut BytesMut, member: &MemberInfo) {
    out.put_u64(member.id);
    put_str(out, &member.name);
    put_str(out, &member.client_addr);
    put_str(out, &member.peer_addr);
    out.put_u64(member.weight.to_bits());
    put_option(out, member.zone.as_ref(), |out, zone| put_str(out, zone));
}

fn put_request(out: &mut BytesMut, request: &Request) {
    match request {
        Request::Ping => out.put_u8(RequestTag::Ping as u8),
        Request::Read { keys } => {
            out.put_u8(RequestTag::Read as u8);
            put_list(out, keys, |out, key| put_bytes(out, key));
        }
        Request::Replicate { entries } => {
            out.put_u8(RequestTag::Replicate as u8);
            put_list(out, entries, |out, (key, record)| {
                put_bytes(out, key);
                put_bytes(out, record);
            });
        }
        Request::Coordinate { key, op, w, pw } => {
            out.put_u8(RequestTag::Coordinate as u8);
            put_bytes(out, key);
            put_write_op(out, op);
            out.put_u8(*w);
            out.put_u8(*pw);
        }
        Request::Hint { target, entries } => {
            out.put_u8(RequestTag::Hint as u8);
            out.put_u64(*target);
            put_list(out, entries, |out, (key, record)| {
                put_bytes(out, key);
                put_bytes(out, record);
            });
        }
        Request::Scan {
            partition,
            after,
            limit,
        } => {
            out.put_u8(RequestTag::Scan as u8);
            out.put_u16(*partition);
            put_option(out, after.as_ref(), |out, key| put_bytes(out, key));
            out.put_u32(*limit);
        }
        Request::Flush { db } => {
            out.put_u8(RequestTag::Flush as u8);
            put_option(out, db.as_ref(), |out, db| out.put_u8(*db));
        }
        Request::Gossip(gossip) => {
            out.put_u8(RequestTag::Gossip as u8);
            put_gossip(out, gossip);
        }
        Request::Fetch {
            partition,
            after,
            limit,
        } => {
            out.put_u8(RequestTag::Fetch as u8);
            out.put_u16(*partition);
            put_option(out, after.as_ref(), |out, key| put_bytes(out, key));
            out.put_u32(*limit);
        }
        Request::Count { partitions } => {
            out.put_u8(RequestTag::Count as u8);
            put_list(out, partitions, |out, &partition| out.put_u16(partition));
        }
        Request::Probe { target } => {
            out.put_u8(RequestTag::Probe as u8);
            out.put_u64(*target);
        }
        Request::Held { partitions } => {
            out.put_u8(RequestTag::Held as u8);
            put_list(out, partitions, |out, &partition| out.put_u16(partition));
        }
        Request::Roots { partitions } => {
            out.put_u8(RequestTag::Roots as u8);
            put_list(out, partitions, |out, &partition| out.put_u16(partition));
        }
        Request::Segments { partition } => {
            out.put_u8(RequestTag::Segments as u8);
            out.put_u16(*partition);
        }
        Request::Leaves {
            partition,
            segments,
        } => {
            out.put_u8(RequestTag::Leaves as u8);
            out.put_u16(*partition);
            put_list(out, segments, |out, &segment| out.put_u16(segment));
        }
        Request::Reap { entries } => {
            out.put_u8(RequestTag::Reap as u8);
            put_leaves(out, entries);
        }
    }
}

fn put_write_op(out: &mut BytesMut, op: &WriteOp) {
    match &op.base {
        Base::Known => out.put_u8(BaseTag::Known as u8),
        Base::Context(vector) => {
            out.put_u8(BaseTag::Context as u8);
            put_vector(out, vector);
        }
    }
    match &op.condition {
        Condition::Always => out.put_u8(ConditionTag::Always as u8),
        Condition::IfAbsent => out.put_u8(ConditionTag::IfAbsent as u8),
        Condition::IfPresent => out.put_u8(ConditionTag::IfPresent as u8),
        Condition::Unchanged { context, live } => {
            out.put_u8(ConditionTag::Unchanged as u8);
            put_vector(out, context);
            out.put_u8(u8::from(*live));
        }
    }
    match &op.change {
        Change::Put { value, expiry } => {
            out.put_u8(ChangeTag::Put as u8);
            put_bytes(out, value);
            match expiry {
                Expiry::Never => out.put_u8(ExpiryTag::Never as u8),
                Expiry::At(at) => {
                    out.put_u8(ExpiryTag::At as u8);
                    put_varint(out, *at);
                }
                Expiry::Keep => out.put_u8(ExpiryTag::Keep as u8),
            }
        }
        Change::Delete => out.put_u8(ChangeTag::Delete as u8),
        Change::Append(data) => {
            out.put_u8(ChangeTag::Append as u8);
            put_bytes(out, data);
        }
        Change::SetRange { offset, data } => {
            out.put_u8(ChangeTag::SetRange as u8);
            put_varint(out, *offset as u64);
            put_bytes(out, data);
        }
        Change::IncrBy(by) => {
            out.put_u8(ChangeTag::IncrBy as u8);
            out.put_i64(*by);
        }
        Change::Expire { at, when } => {
            out.put_u8(ChangeTag::Expire as u8);
            put_option(out, at.as_ref(), |out, &at| put_varint(out, at));
            let flags = [
                (when.nx, EXPIRE_NX),
                (when.xx, EXPIRE_XX),
                (when.gt, EXPIRE_GT),
                (when.lt, EXPIRE_LT),
            ]
            .into_iter()
            .filter(|&(set, _)| set)
            .fold(0, |flags, (_, bit)| flags | bit);
            out.put_u8(flags);
        }
    }
}

fn put_response(out: &mut BytesMut, response: &Response) {
    match response {
        Response::Pong => out.put_u8(ResponseTag::Pong as u8),
        Response::Records { records } => {
            out.put_u8(ResponseTag::Records as u8);
            put_list(out, records, |out, record| {
                put_option(out, record.as_ref(), |out, bytes| put_bytes(out, bytes));
            });
        }
        Response::Ack => out.put_u8(ResponseTag::Ack as u8),
        Response::Written { previous, current } => {
            out.put_u8(ResponseTag::Written as u8);
            put_option(out, previous.as_deref(), put_record);
            put_option(out, current.as_deref(), put_record);
        }
        Response::Entries { entries } => {
            out.put_u8(ResponseTag::Entries as u8);
            put_list(out, entries, |out, (key, record)| {
                put_bytes(out, key);
                put_record(out, record);
            });
        }
        Response::Gossip(gossip) => {
            out.put_u8(ResponseTag::Gossip as u8);
            put_gossip(out, gossip);
        }
        Response::Error { code, message } => {
            out.put_u8(ResponseTag::Error as u8);
            out.put_u8(*code as u8);
            put_str(out, message);
        }
        Response::Count { dbs } => {
            out.put_u8(ResponseTag::Count as u8);
            put_list(out, dbs, |out, count| {
                out.put_u8(count.db);
                put_varint(out, count.keys);
                put_varint(out, count.expires);
            });
        }
        Response::Probed { alive } => {
            out.put_u8(ResponseTag::Probed as u8);
            out.put_u8(u8::from(*alive));
        }
        Response::Held { partitions } => {
            out.put_u8(ResponseTag::Held as u8);
            put_list(out, partitions, |out, &partition| out.put_u16(partition));
        }
        Response::Hashes { hashes } => {
            out.put_u8(ResponseTag::Hashes as u8);
            put_list(out, hashes, |out, &hash| out.put_u64(hash));
        }
        Response::Leaves { leaves } => {
            out.put_u8(ResponseTag::Leaves as u8);
            put_leaves(out, leaves);
        }
    }
}

fn put_gossip(out: &mut BytesMut, gossip: &Gossip) {
    out.put_u64(gossip.epoch);
    out.put_u64(gossip.digest);
    out.put_u64(gossip.target);
    put_option(out, gossip.layout.as_ref(), |out, layout| {
        put_bytes(out, layout)
    });
}

fn get_gossip(r: &mut Reader<'_>) -> Result<Gossip, DecodeError> {
    Ok(Gossip {
        epoch: u64::from_be_bytes(fixed(r)?),
        digest: u64::from_be_bytes(fixed(r)?),
        target: u64::from_be_bytes(fixed(r)?),
        layout: get_option(r, |r| get_bytes(r, "layout byte", PEER_FRAME_BYTES_MAX))?,
    })
}

// ---------------------------------------------------------------- framing

/// The member list as kept in a data directory (meta `members`): the
/// format byte 1, then `list<member>`. Lets a restarted node know its
/// cluster before any peer answers.
pub fn encode_members(members: &[MemberInfo]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(MEMBERS_FORMAT_V1);
    put_list(&mut out, members, put_member);
    out.to_vec()
}

/// Reads what [`encode_members`] wrote.
///
/// # Errors
/// [`DecodeError`] for bytes it did not write.
pub fn decode_members(bytes: &[u8]) -> Result<Vec<MemberInfo>, DecodeError> {
    let mut r = Reader::new(bytes);
    match r.u8()? {
        MEMBERS_FORMAT_V1 => {}
        found => return Err(DecodeError::UnknownVersion { found }),
    }
    let members = get_list(&mut r, "member", get_member)?;
    r.finish()?;
    Ok(members)
}

const MEMBERS_FORMAT_V1: u8 = 1;

/// Takes one whole length-prefixed frame body off the front of `buf` (kind
/// byte first): `Ok(None)` until it has fully arrived.
///
/// # Errors
/// [`DecodeError::TooMany`] for a length past [`PEER_FRAME_BYTES_MAX`]
/// (the connection cannot be resynchronised: drop it).
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    split(buf, "peer frame byte", PEER_FRAME_BYTES_MAX)
}

/// [`split_frame`] for the handshake, before the other end has proved
/// anything: the kind byte and magic are checked as soon as they arrive
/// (so another protocol is refused without waiting for a "frame" of its
/// bytes), and the length is bounded by [`PEER_HELLO_BYTES_MAX`].
///
/// # Errors
/// [`DecodeError::BadMagic`] when the bytes after the length are not a
/// Hello's; [`DecodeError::TooMany`] for a length past the bound.
pub fn split_hello(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    let expected = hello_head();
    let arrived = buf.get(4..).unwrap_or_default();
    let n = arrived.len().min(expected.len());
    if arrived[..n] != expected[..n] {
        return Err(DecodeError::BadMagic);
    }
    split(buf, "hello frame byte", PEER_HELLO_BYTES_MAX)
}

/// The kind byte and magic every Hello body starts with.
fn hello_head() -> [u8; 5] {
    let [a, b, c, d] = MAGIC;
    [Kind::Hello as u8, a, b, c, d]
}

fn split(buf: &mut BytesMut, what: &'static str, max: usize) -> Result<Option<Bytes>, DecodeError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    let Ok(body_len) = usize::try_from(len) else {
        return Err(too_long(what, len, max));
    };
    if body_len > max {
        return Err(too_long(what, len, max));
    }
    if buf.len() - 4 < body_len {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(body_len).freeze()))
}

fn too_long(what: &'static str, len: u32, max: usize) -> DecodeError {
    DecodeError::TooMany {
        what,
        count: u64::from(len),
        max: max as u64,
    }
}

// ---------------------------------------------------------------- decoding

/// Decodes a Hello frame body (kind byte first, as [`split_hello`] returns
/// it).
///
/// # Errors
/// [`DecodeError::BadMagic`] when it does not start with a Hello's kind
/// byte and magic (another protocol); [`DecodeError::UnsupportedProtocol`]
/// for another protocol version (nothing after the version is read); any
/// other [`DecodeError`] for malformed bytes.
pub fn decode_hello(body: &[u8]) -> Result<Hello, DecodeError> {
    let expected = hello_head();
    let n = body.len().min(expected.len());
    if body[..n] != expected[..n] {
        return Err(DecodeError::BadMagic);
    }
    let mut r = Reader::new(body);
    r.bytes(expected.len())?;
    let version = u16::from_be_bytes(fixed(&mut r)?);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedProtocol { found: version });
    }
    let hello = Hello {
        version,
        cluster: get_string(&mut r, "cluster name")?,
        member: get_member(&mut r)?,
        partitions: u32::from_be_bytes(fixed(&mut r)?),
        nonce: fixed(&mut r)?,
        proof: get_bytes(&mut r, "proof byte", PROOF_BYTES_MAX)?.to_vec(),
        purpose: PurposeTag::try_from(r.u8()?)?.into(),
    };
    r.finish()?;
    Ok(hello)
}

/// Decodes a request or response frame body (kind byte first, as
/// [`split_frame`] returns it).
///
/// # Errors
/// [`DecodeError`] for bytes [`encode_frame`] would not write, a Hello
/// included.
pub fn decode_frame(body: &[u8]) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(body);
    let frame = match Kind::try_from(r.u8()?)? {
        Kind::Hello => {
            return Err(DecodeError::Malformed {
                what: "frame (a hello after the handshake)",
            });
        }
        Kind::Request => Frame::Request {
            id: u64::from_be_bytes(fixed(&mut r)?),
            request: get_request(&mut r)?,
        },
        Kind::Response => Frame::Response {
            id: u64::from_be_bytes(fixed(&mut r)?),
            response: get_response(&mut r)?,
        },
    };
    r.finish()?;
    Ok(frame)
}

fn fixed<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], DecodeError> {
    let mut out = [0; N];
    out.copy_from_slice(r.bytes(N)?);
    Ok(out)
}

fn get_bytes(r: &mut Reader<'_>, what: &'static str, max: usize) -> Result<Bytes, DecodeError> {
    let len = r.count(what, max)?;
    Ok(Bytes::copy_from_slice(r.bytes(len)?))
}

fn get_db(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let db = r.u8()?;
    if usize::from(db) < crate::db::DATABASES {
        Ok(db)
    } else {
        Err(DecodeError::Malformed {
            what: "database index",
        })
    }
}

fn get_key(r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
    get_bytes(r, "key byte", NAMESPACED_KEY_BYTES_MAX)
}

fn get_string(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let len = r.count(what, PEER_FRAME_BYTES_MAX)?;
    let text = std::str::from_utf8(r.bytes(len)?).map_err(|_| DecodeError::Malformed { what })?;
    Ok(text.to_owned())
}

fn get_option<T>(
    r: &mut Reader<'_>,
    get: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match OptionTag::try_from(r.u8()?)? {
        OptionTag::Absent => Ok(None),
        OptionTag::Present => get(r).map(Some),
    }
}

fn get_list<T>(
    r: &mut Reader<'_>,
    what: &'static str,
    get: impl Fn(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let count = r.count(what, PEER_LIST_LEN_MAX)?;
    // every element takes at least one byte
    if count > r.remaining() {
        return Err(DecodeError::Truncated {
            needed: count - r.remaining(),
        });
    }
    let mut items = Vec::with_capacity(count.min(LIST_PREALLOC_MAX));
    for _ in 0..count {
        items.push(get(r)?);
    }
    Ok(items)
}

fn get_record(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
    let len = r.count("record byte", PEER_FRAME_BYTES_MAX)?;
    decode_record(r.bytes(len)?)
}

/// A record's bytes, passed on undecoded (checked where they are used).
fn get_record_bytes(r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
    get_bytes(r, "record byte", PEER_FRAME_BYTES_MAX)
}

fn get_vector(r: &mut Reader<'_>) -> Result<VersionVector, DecodeError> {
    let count = r.count("vector entry", VECTOR_ENTRIES_MAX)?;
    let mut entries: Vec<(u64, u64)> = Vec::with_capacity(count.min(LIST_PREALLOC_MAX));
    for _ in 0..count {
        let node = r.varint()?;
        let counter = r.varint()?;
        let ordered = entries.last().is_none_or(|&(last, _)| last < node);
        if counter == 0 || !ordered {
            return Err(DecodeError::Malformed {
                what: "version vector",
            });
        }
        entries.push((node, counter));
    }
    Ok(VersionVector::from_entries(entries))
}

fn get_member(r: &mut Reader<'_>) -> Result<MemberInfo, DecodeError> {
    Ok(MemberInfo {
        id: u64::from_be_bytes(fixed(r)?),
        name: get_string(r, "node name")?,
        client_addr: get_string(r, "client address")?,
        peer_addr: get_string(r, "peer address")?,
        weight: f64::from_bits(u64::from_be_bytes(fixed(r)?)),
        zone: get_option(r, |r| get_string(r, "zone"))?,
    })
}

fn get_request(r: &mut Reader<'_>) -> Result<Request, DecodeError> {
    Ok(match RequestTag::try_from(r.u8()?)? {
        RequestTag::Ping => Request::Ping,
        RequestTag::Read => Request::Read {
            keys: get_list(r, "key", get_key)?,
        },
        RequestTag::Replicate => Request::Replicate {
            entries: get_list(r, "entry", |r| Ok((get_key(r)?, get_record_bytes(r)?)))?,
        },
        RequestTag::Coordinate => Request::Coordinate {
            key: get_key(r)?,
            op: get_write_op(r)?,
            w: r.u8()?,
            pw: r.u8()?,
        },
        RequestTag::Hint => Request::Hint {
            target: u64::from_be_bytes(fixed(r)?),
            entries: get_list(r, "entry", |r| Ok((get_key(r)?, get_record_bytes(r)?)))?,
        },
        RequestTag::Scan => Request::Scan {
            partition: u16::from_be_bytes(fixed(r)?),
            after: get_option(r, get_key)?,
            limit: u32::from_be_bytes(fixed(r)?),
        },
        RequestTag::Flush => Request::Flush {
            db: get_option(r, get_db)?,
        },
        RequestTag::Gossip => Request::Gossip(get_gossip(r)?),
        RequestTag::Fetch => Request::Fetch {
            partition: u16::from_be_bytes(fixed(r)?),
            after: get_option(r, get_key)?,
            limit: u32::from_be_bytes(fixed(r)?),
        },
        RequestTag::Count => Request::Count {
            partitions: get_list(r, "partition", |r| Ok(u16::from_be_bytes(fixed(r)?)))?,
        },
        RequestTag::Probe => Request::Probe {
            target: u64::from_be_bytes(fixed(r)?),
        },
        RequestTag::Held => Request::Held {
            partitions: get_list(r, "partition", |r| Ok(u16::from_be_bytes(fixed(r)?)))?,
        },
        RequestTag::Roots => Request::Roots {
            partitions: get_list(r, "partition", |r| Ok(u16::from_be_bytes(fixed(r)?)))?,
        },
        RequestTag::Segments => Request::Segments {
            partition: u16::from_be_bytes(fixed(r)?),
        },
        RequestTag::Leaves => Request::Leaves {
            partition: u16::from_be_bytes(fixed(r)?),
            segments: get_list(r, "segment", |r| Ok(u16::from_be_bytes(fixed(r)?)))?,
        },
        RequestTag::Reap => Request::Reap {
            entries: get_leaves(r)?,
        },
    })
}

fn get_write_op(r: &mut Reader<'_>) -> Result<WriteOp, DecodeError> {
    let base = match BaseTag::try_from(r.u8()?)? {
        BaseTag::Known => Base::Known,
        BaseTag::Context => Base::Context(get_vector(r)?),
    };
    let condition = match ConditionTag::try_from(r.u8()?)? {
        ConditionTag::Always => Condition::Always,
        ConditionTag::IfAbsent => Condition::IfAbsent,
        ConditionTag::IfPresent => Condition::IfPresent,
        ConditionTag::Unchanged => Condition::Unchanged {
            context: Box::new(get_vector(r)?),
            live: get_flag(r, "watched liveness")?,
        },
    };
    let change = match ChangeTag::try_from(r.u8()?)? {
        ChangeTag::Put => Change::Put {
            value: get_bytes(r, "value byte", VALUE_BYTES_MAX)?,
            expiry: match ExpiryTag::try_from(r.u8()?)? {
                ExpiryTag::Never => Expiry::Never,
                ExpiryTag::At => Expiry::At(r.varint()?),
                ExpiryTag::Keep => Expiry::Keep,
            },
        },
        ChangeTag::Delete => Change::Delete,
        ChangeTag::Append => Change::Append(get_bytes(r, "value byte", VALUE_BYTES_MAX)?),
        ChangeTag::SetRange => Change::SetRange {
            offset: usize::try_from(r.varint()?).map_err(|_| DecodeError::Malformed {
                what: "setrange offset",
            })?,
            data: get_bytes(r, "value byte", VALUE_BYTES_MAX)?,
        },
        ChangeTag::IncrBy => Change::IncrBy(i64::from_be_bytes(fixed(r)?)),
        ChangeTag::Expire => {
            let at = get_option(r, |r| r.varint())?;
            let flags = r.u8()?;
            if flags & !(EXPIRE_NX | EXPIRE_XX | EXPIRE_GT | EXPIRE_LT) != 0 {
                return Err(DecodeError::Malformed {
                    what: "expire flags",
                });
            }
            Change::Expire {
                at,
                when: ExpireWhen {
                    nx: flags & EXPIRE_NX != 0,
                    xx: flags & EXPIRE_XX != 0,
                    gt: flags & EXPIRE_GT != 0,
                    lt: flags & EXPIRE_LT != 0,
                },
            }
        }
    };
    Ok(WriteOp {
        base,
        condition,
        change,
    })
}

fn get_response(r: &mut Reader<'_>) -> Result<Response, DecodeError> {
    Ok(match ResponseTag::try_from(r.u8()?)? {
        ResponseTag::Pong => Response::Pong,
        ResponseTag::Records => Response::Records {
            records: get_list(r, "record", |r| get_option(r, get_record_bytes))?,
        },
        ResponseTag::Ack => Response::Ack,
        ResponseTag::Written => Response::Written {
            previous: get_option(r, get_record)?.map(Box::new),
            current: get_option(r, get_record)?.map(Box::new),
        },
        ResponseTag::Entries => Response::Entries {
            entries: get_list(r, "entry", |r| Ok((get_key(r)?, get_record(r)?)))?,
        },
        ResponseTag::Gossip => Response::Gossip(get_gossip(r)?),
        ResponseTag::Error => Response::Error {
            code: ErrorCode::try_from(r.u8()?)?,
            message: get_string(r, "error message")?,
        },
        ResponseTag::Count => Response::Count {
            dbs: get_list(r, "database count", |r| {
                Ok(DbCount {
                    db: get_db(r)?,
                    keys: r.varint()?,
                    expires: r.varint()?,
                })
            })?,
        },
        ResponseTag::Probed => Response::Probed {
            alive: get_flag(r, "probe outcome")?,
        },
        ResponseTag::Held => Response::Held {
            partitions: get_list(r, "partition", |r| Ok(u16::from_be_bytes(fixed(r)?)))?,
        },
        ResponseTag::Hashes => Response::Hashes {
            hashes: get_list(r, "hash", |r| Ok(u64::from_be_bytes(fixed(r)?)))?,
        },
        ResponseTag::Leaves => Response::Leaves {
            leaves: get_leaves(r)?,
        },
    })
}

/// A byte that is 0 (false) or 1 (true).
fn get_flag(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Malformed { what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{Content, Sibling, encode_record};
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;

    // ------------------------------------------------------------ goldens

    fn encoded_frame(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out);
        out.to_vec()
    }

    /// Checks `frame` encodes to exactly `golden` and `golden` decodes back.
    fn assert_golden(frame: &Frame, golden: &[u8]) {
        assert_eq!(encoded_frame(frame), golden);
        let mut buf = BytesMut::from(golden);
        let body = split_frame(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(&decode_frame(&body).unwrap(), frame);
    }

    fn sample_hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            cluster: "c".into(),
            member: MemberInfo {
                id: 7,
                name: "n1".into(),
                client_addr: "h:1".into(),
                peer_addr: "h:2".into(),
                weight: 1.0,
                zone: Some("z".into()),
            },
            partitions: 4096,
            nonce: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            proof: vec![],
            purpose: Purpose::Exchange,
        }
    }

    #[rustfmt::skip]
    const HELLO_GOLDEN: &[u8] = &[
        0, 0, 0, 61,                    // length
        1,                              // kind: hello
        b'D', b'Y', b'K', b'V',         // magic
        0, 8,                           // protocol version 8
        1, b'c',                        // cluster "c"
        0, 0, 0, 0, 0, 0, 0, 7,         // node id 7
        2, b'n', b'1',                  // name "n1"
        3, b'h', b':', b'1',            // client address "h:1"
        3, b'h', b':', b'2',            // peer address "h:2"
        0x3f, 0xf0, 0, 0, 0, 0, 0, 0,   // weight 1.0
        1, 1, b'z',                     // zone Some("z")
        0, 0, 0x10, 0,                  // partitions 4096
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, // nonce
        0,                              // proof: empty
        2,                              // purpose: exchange
    ];

    #[test]
    fn member_lists_round_trip() {
        let members = vec![MemberInfo {
            id: 7,
            name: "n".into(),
            client_addr: "127.0.0.1:1".into(),
            peer_addr: "127.0.0.1:2".into(),
            weight: 2.0,
            zone: Some("z".into()),
        }];
        assert_eq!(decode_members(&encode_members(&members)), Ok(members));
        assert!(decode_members(&[2]).is_err());
    }

    // Proves an anti-entropy round between identical replicas sends at
    // most 64 KiB per pair (issue 22): one Roots request for every
    // partition at the default Q and its Hashes answer, framed.
    #[test]
    fn a_quiet_exchange_round_fits_in_64_kib() {
        let q = crate::limits::PARTITIONS_DEFAULT;
        let mut out = BytesMut::new();
        let request = Frame::Request {
            id: u64::MAX,
            request: Request::Roots {
                partitions: (0..q).map(|p| p as u16).collect(),
            },
        };
        encode_frame(&request, &mut out);
        let asked = out.len();
        out.clear();
        let answer = Frame::Response {
            id: u64::MAX,
            response: Response::Hashes {
                hashes: vec![u64::MAX; q as usize],
            },
        };
        encode_frame(&answer, &mut out);
        let answered = out.len();
        assert!(asked + answered <= 64 << 10, "{asked} + {answered} bytes");
        assert_eq!((asked, answered), (8_208, 32_784));
    }

    #[test]
    fn golden_hello() {
        let mut out = BytesMut::new();
        encode_hello(&sample_hello(), &mut out);
        assert_eq!(&out[..], HELLO_GOLDEN);
        let body = split_hello(&mut out).unwrap().unwrap();
        assert!(out.is_empty());
        assert_eq!(decode_hello(&body), Ok(sample_hello()));
    }

    #[test]
    fn golden_read_request() {
        let frame = Frame::Request {
            id: 1,
            request: Request::Read {
                keys: vec![Bytes::from_static(b"k"), Bytes::from_static(b"ab")],
            },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 16,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 1,     // id 1
            2,                          // Read
            2,                          // two keys
            1, b'k',                    //   "k"
            2, b'a', b'b',              //   "ab"
        ];
        assert_golden(&frame, golden);
    }

    #[test]
    fn golden_gossip_and_fetch() {
        #[rustfmt::skip]
        let gossip: &[u8] = &[
            0, 0, 0, 38,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 4,     // id 4
            7,                          // Gossip
            0, 0, 0, 0, 0, 0, 0, 5,     // epoch 5
            0, 0, 0, 0, 0, 0, 0, 6,     // digest 6
            0, 0, 0, 0, 0, 0, 0, 7,     // target fingerprint 7
            1, 2, 1, 0,                 // layout: Some, 2 bytes [1, 0]
        ];
        let request = Request::Gossip(Gossip {
            epoch: 5,
            digest: 6,
            target: 7,
            layout: Some(Bytes::from_static(&[1, 0])),
        });
        assert_golden(&Frame::Request { id: 4, request }, gossip);
        #[rustfmt::skip]
        let fetch: &[u8] = &[
            0, 0, 0, 19,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 5,     // id 5
            10,                         // Fetch
            0, 9,                       // partition 9
            1, 1, b'k',                 // after: Some("k")
            0, 0, 2, 0,                 // limit 512
        ];
        let request = Request::Fetch {
            partition: 9,
            after: Some(Bytes::from_static(b"k")),
            limit: 512,
        };
        assert_golden(&Frame::Request { id: 5, request }, fetch);
    }

    #[test]
    fn golden_hint_request() {
        #[rustfmt::skip]
        let hint: &[u8] = &[
            0, 0, 0, 25,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 8,     // id 8
            12,                         // Hint
            0, 0, 0, 0, 0, 0, 0, 7,     // target: node 7
            1,                          // one entry
            1, b'k',                    //   key "k"
            3, b'r', b'e', b'c',        //   record bytes "rec"
        ];
        let request = Request::Hint {
            target: 7,
            entries: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"rec"))],
        };
        assert_golden(&Frame::Request { id: 8, request }, hint);
    }

    #[test]
    fn golden_probe_and_probed() {
        #[rustfmt::skip]
        let probe: &[u8] = &[
            0, 0, 0, 18,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 3,     // id 3
            9,                          // Probe
            0, 0, 0, 0, 0, 0, 0, 7,     // target: node 7
        ];
        assert_golden(
            &Frame::Request {
                id: 3,
                request: Request::Probe { target: 7 },
            },
            probe,
        );
        #[rustfmt::skip]
        let probed: &[u8] = &[
            0, 0, 0, 11,                // length
            3,                          // kind: response
            0, 0, 0, 0, 0, 0, 0, 3,     // id 3
            9,                          // Probed
            1,                          // alive
        ];
        let frame = Frame::Response {
            id: 3,
            response: Response::Probed { alive: true },
        };
        assert_golden(&frame, probed);
        // Only 0 and 1 are a flag.
        let mut body = probed[4..].to_vec();
        body[10] = 2;
        assert_eq!(
            decode_frame(&body),
            Err(DecodeError::Malformed {
                what: "probe outcome"
            })
        );
    }

    /// The record of `model::record`'s golden test: two siblings.
    fn two_siblings() -> Record {
        crate::model::record::sample()
    }

    #[test]
    fn golden_replicate_request() {
        let frame = Frame::Request {
            id: 2,
            request: Request::Replicate {
                entries: vec![(
                    Bytes::from_static(b"k"),
                    Bytes::from(encode_record(&two_siblings())),
                )],
            },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 36,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 2,     // id 2
            3,                          // Replicate
            1,                          // one entry
            1, b'k',                    // key "k"
            22,                         // record: 22 bytes, the storage format
            1,                          //   format version
            2, 7, 1, 9, 1,              //   context {7:1, 9:1}
            2,                          //   two siblings
            7, 1, 0xe8, 0x07, 2, 0x88, 0x27, 2, b'h', b'i', // (7,1) ts 1000, expires 5000, "hi"
            9, 1, 0xe9, 0x07, 1,        //   (9,1) ts 1001, tombstone
        ];
        assert_golden(&frame, golden);
    }

    #[test]
    fn golden_coordinate_request() {
        // VSET k v PX ... with a context, W 2
        let frame = Frame::Request {
            id: 3,
            request: Request::Coordinate {
                key: Bytes::from_static(b"k"),
                op: WriteOp {
                    base: Base::Context(VersionVector::from_entries([(7, 1), (9, 2)])),
                    condition: Condition::Always,
                    change: Change::Put {
                        value: Bytes::from_static(b"v"),
                        expiry: Expiry::At(5000),
                    },
                },
                w: 2,
                pw: 1,
            },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 27,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 3,     // id 3
            4,                          // Coordinate
            1, b'k',                    // key "k"
            2, 2, 7, 1, 9, 2,           // base: context {7:1, 9:2}
            1,                          // condition: always
            1, 1, b'v',                 // Put "v"
            2, 0x88, 0x27,              //   expires at 5000
            2,                          // W 2
            1,                          // PW 1
        ];
        assert_golden(&frame, golden);
    }

    /// One sibling, (7,1) at 1000 ms: "v"; 12 bytes encoded.
    fn one_sibling() -> Record {
        let mut record = Record::new();
        record.update(
            &VersionVector::new(),
            7,
            Sibling::value(Bytes::from_static(b"v"), 1000),
        );
        record
    }

    #[test]
    fn golden_written_response() {
        let frame = Frame::Response {
            id: 3,
            response: Response::Written {
                previous: None,
                current: Some(Box::new(one_sibling())),
            },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 25,                // length
            3,                          // kind: response
            0, 0, 0, 0, 0, 0, 0, 3,     // id 3
            4,                          // Written
            0,                          // previous: none
            1, 12,                      // current: some, 12 bytes
            1, 1, 7, 1, 1,              //   version 1, context {7:1}, one sibling
            7, 1, 0xe8, 0x07, 0, 1, b'v', // (7,1) ts 1000, value "v"
        ];
        assert_golden(&frame, golden);
    }

    #[test]
    fn golden_records_response() {
        let frame = Frame::Response {
            id: 4,
            response: Response::Records {
                records: vec![None, Some(Bytes::from(encode_record(&one_sibling())))],
            },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 26,                // length
            3,                          // kind: response
            0, 0, 0, 0, 0, 0, 0, 4,     // id 4
            2,                          // Records
            2,                          // two
            0,                          //   none
            1, 12,                      //   some, 12 bytes
            1, 1, 7, 1, 1,              //     version 1, context {7:1}, one sibling
            7, 1, 0xe8, 0x07, 0, 1, b'v', //   (7,1) ts 1000, value "v"
        ];
        assert_golden(&frame, golden);
    }

    #[test]
    fn golden_flush_and_count() {
        let flush = Frame::Request {
            id: 5,
            request: Request::Flush { db: Some(9) },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 12,                // length
            2,                          // kind: request
            0, 0, 0, 0, 0, 0, 0, 5,     // id 5
            6,                          // Flush
            1, 9,                       // database 9
        ];
        assert_golden(&flush, golden);
        let count = Frame::Response {
            id: 5,
            response: Response::Count {
                dbs: vec![DbCount {
                    db: 9,
                    keys: 300,
                    expires: 1,
                }],
            },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 15,                // length
            3,                          // kind: response
            0, 0, 0, 0, 0, 0, 0, 5,     // id 5
            8,                          // Count
            1,                          // one database
            9, 0xac, 0x02, 1,           //   9: 300 keys, 1 expires
        ];
        assert_golden(&count, golden);
        // database 16 does not exist
        let mut bad = golden[4..].to_vec();
        bad[11] = 16;
        assert!(matches!(
            decode_frame(&bad),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn golden_error_response() {
        let frame = Frame::Response {
            id: 4,
            response: Response::Error {
                code: ErrorCode::Quorum,
                message: "no quorum".into(),
            },
        };
        #[rustfmt::skip]
        let golden: &[u8] = &[
            0, 0, 0, 21,                // length
            3,                          // kind: response
            0, 0, 0, 0, 0, 0, 0, 4,     // id 4
            7,                          // Error
            2,                          // code: quorum
            9, b'n', b'o', b' ', b'q', b'u', b'o', b'r', b'u', b'm',
        ];
        assert_golden(&frame, golden);
    }

    // ------------------------------------------------------------ refusals

    #[test]
    fn hello_refuses_other_protocols_and_versions() {
        let body = &HELLO_GOLDEN[4..];
        let mut other = body.to_vec();
        other[1] = b'X';
        assert_eq!(decode_hello(&other), Err(DecodeError::BadMagic));
        // a request frame, or nothing at all, is not a hello
        assert_eq!(decode_hello(&[2, 0, 0]), Err(DecodeError::BadMagic));
        assert!(matches!(
            decode_hello(&[]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut newer = body.to_vec();
        newer[5..7].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
        newer.truncate(7); // a later version's hello may be anything after
        assert_eq!(
            decode_hello(&newer),
            Err(DecodeError::UnsupportedProtocol {
                found: PROTOCOL_VERSION + 1
            })
        );
        // a purpose that is neither link nor exchange
        let mut purpose = body.to_vec();
        if let Some(last) = purpose.last_mut() {
            *last = 3;
        }
        assert_eq!(
            decode_hello(&purpose),
            Err(DecodeError::UnknownTag {
                what: "connection purpose",
                found: 3
            })
        );
        // a hello is not a frame after the handshake
        assert!(matches!(
            decode_frame(body),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn split_hello_refuses_foreign_bytes_early() {
        // RESP and HTTP: refused by their first bytes, not by waiting
        for foreign in [
            &b"*1\r\n$4\r\nPING\r\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"\0\0\0\x09\x01DY",
        ] {
            let mut buf = BytesMut::from(foreign);
            let refused = split_hello(&mut buf);
            if foreign.starts_with(b"\0") {
                assert_eq!(refused, Ok(None), "a partial hello head waits");
            } else {
                assert_eq!(refused, Err(DecodeError::BadMagic));
            }
        }
        let mut long = BytesMut::from(&[0, 1, 0, 1, 1, b'D', b'Y', b'K', b'V'][..]);
        assert!(matches!(
            split_hello(&mut long),
            Err(DecodeError::TooMany { .. })
        ));
    }

    #[test]
    fn refuses_bad_tags_and_lengths() {
        let with = |tail: &[u8]| {
            let mut body = vec![2, 0, 0, 0, 0, 0, 0, 0, 1];
            body.extend_from_slice(tail);
            decode_frame(&body)
        };
        assert_eq!(
            decode_frame(&[9]),
            Err(DecodeError::UnknownTag {
                what: "frame kind",
                found: 9
            })
        );
        assert_eq!(
            with(&[0]),
            Err(DecodeError::UnknownTag {
                what: "request",
                found: 0
            })
        );
        assert_eq!(
            with(&[1]),
            Ok(Frame::Request {
                id: 1,
                request: Request::Ping
            })
        );
        assert_eq!(with(&[1, 0]), Err(DecodeError::Trailing { extra: 1 }));
        // Scan with an option byte of 2
        assert_eq!(
            with(&[5, 0, 0, 2]),
            Err(DecodeError::UnknownTag {
                what: "option",
                found: 2
            })
        );
        // Count with a list past the list bound, then past the input
        let mut huge = vec![8];
        huge.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(matches!(with(&huge), Err(DecodeError::TooMany { .. })));
        assert!(matches!(
            with(&[8, 100]),
            Err(DecodeError::Truncated { .. })
        ));
        // Gossip whose layout is longer than the input
        let mut gossip = vec![7];
        gossip.extend_from_slice(&[0; 24]);
        gossip.extend_from_slice(&[1, 100]);
        assert!(matches!(with(&gossip), Err(DecodeError::Truncated { .. })));
        // a key past NAMESPACED_KEY_BYTES_MAX (a Read of one key)
        let mut long_key = vec![2, 1];
        crate::wire::put_varint(&mut long_key, NAMESPACED_KEY_BYTES_MAX as u64 + 1);
        assert!(matches!(with(&long_key), Err(DecodeError::TooMany { .. })));
        // a vector out of order, a zero counter
        assert!(matches!(
            with(&[4, 1, b'k', 2, 2, 9, 1, 7, 1, 1, 2, 2]),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            with(&[4, 1, b'k', 2, 1, 9, 0, 1, 2, 2]),
            Err(DecodeError::Malformed { .. })
        ));
        // an error response with invalid UTF-8 and with an unknown code
        let response = |tail: &[u8]| {
            let mut body = vec![3, 0, 0, 0, 0, 0, 0, 0, 1];
            body.extend_from_slice(tail);
            decode_frame(&body)
        };
        assert_eq!(
            response(&[7, 1, 1, 0xff]),
            Err(DecodeError::Malformed {
                what: "error message"
            })
        );
        assert_eq!(
            response(&[7, 12, 0]),
            Err(DecodeError::UnknownTag {
                what: "error code",
                found: 12
            })
        );
    }

    #[test]
    fn split_frame_bounds_the_length() {
        let too_long = (PEER_FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        let mut buf = BytesMut::from(&too_long[..]);
        assert!(matches!(
            split_frame(&mut buf),
            Err(DecodeError::TooMany { .. })
        ));
        let mut max = BytesMut::from(&(PEER_FRAME_BYTES_MAX as u32).to_be_bytes()[..]);
        assert_eq!(split_frame(&mut max), Ok(None));
        assert_eq!(max.len(), 4, "nothing taken until the frame is whole");
    }

    // ------------------------------------------------------------ strategies

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_node() -> impl Strategy<Value = u64> {
        prop_oneof![1u64..5, any::<u64>()]
    }

    fn arb_sibling() -> impl Strategy<Value = Sibling> {
        (
            prop_oneof![
                arb_bytes(8).prop_map(Content::Value),
                Just(Content::Tombstone)
            ],
            any::<u64>(),
            option::of(any::<u64>()),
        )
            .prop_map(|(content, timestamp_ms, expire_at_ms)| Sibling {
                content,
                timestamp_ms,
                expire_at_ms,
            })
    }

    /// Records as replicas make them: a short history of writes, each from
    /// a client that had seen nothing (a new sibling) or everything.
    fn arb_record() -> impl Strategy<Value = Record> {
        vec((arb_node(), any::<bool>(), arb_sibling()), 0..5).prop_map(|history| {
            let mut record = Record::new();
            for (node, seen_all, sibling) in history {
                let context = if seen_all {
                    record.context().clone()
                } else {
                    VersionVector::new()
                };
                record.update(&context, node, sibling);
            }
            record
        })
    }

    fn arb_vector() -> impl Strategy<Value = VersionVector> {
        vec((arb_node(), 1u64..), 0..4).prop_map(VersionVector::from_entries)
    }

    fn arb_string() -> impl Strategy<Value = String> {
        ".{0,8}"
    }

    fn arb_member() -> impl Strategy<Value = MemberInfo> {
        (
            any::<u64>(),
            arb_string(),
            arb_string(),
            arb_string(),
            any::<f64>().prop_filter("NaN is not equal to itself", |w| !w.is_nan()),
            option::of(arb_string()),
        )
            .prop_map(
                |(id, name, client_addr, peer_addr, weight, zone)| MemberInfo {
                    id,
                    name,
                    client_addr,
                    peer_addr,
                    weight,
                    zone,
                },
            )
    }

    fn arb_write_op() -> impl Strategy<Value = WriteOp> {
        let base = prop_oneof![Just(Base::Known), arb_vector().prop_map(Base::Context)];
        let condition = prop_oneof![
            Just(Condition::Always),
            Just(Condition::IfAbsent),
            Just(Condition::IfPresent),
            (arb_vector(), any::<bool>()).prop_map(|(context, live)| Condition::Unchanged {
                context: Box::new(context),
                live,
            }),
        ];
        let expiry = prop_oneof![
            Just(Expiry::Never),
            any::<u64>().prop_map(Expiry::At),
            Just(Expiry::Keep),
        ];
        let when = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(nx, xx, gt, lt)| ExpireWhen { nx, xx, gt, lt });
        let change = prop_oneof![
            (arb_bytes(8), expiry).prop_map(|(value, expiry)| Change::Put { value, expiry }),
            Just(Change::Delete),
            arb_bytes(8).prop_map(Change::Append),
            (any::<usize>(), arb_bytes(8))
                .prop_map(|(offset, data)| Change::SetRange { offset, data }),
            any::<i64>().prop_map(Change::IncrBy),
            (option::of(any::<u64>()), when).prop_map(|(at, when)| Change::Expire { at, when }),
        ];
        (base, condition, change).prop_map(|(base, condition, change)| WriteOp {
            base,
            condition,
            change,
        })
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Ping),
            vec(arb_bytes(8), 0..4).prop_map(|keys| Request::Read { keys }),
            vec((arb_bytes(8), arb_bytes(24)), 0..4)
                .prop_map(|entries| Request::Replicate { entries }),
            (any::<u64>(), vec((arb_bytes(8), arb_bytes(24)), 0..4))
                .prop_map(|(target, entries)| Request::Hint { target, entries }),
            (arb_bytes(8), arb_write_op(), any::<u8>()).prop_map(|(key, op, w)| {
                Request::Coordinate {
                    key,
                    op,
                    w,
                    pw: w / 2,
                }
            }),
            (any::<u16>(), option::of(arb_bytes(8)), any::<u32>()).prop_map(
                |(partition, after, limit)| Request::Scan {
                    partition,
                    after,
                    limit
                }
            ),
            option::of(0u8..16).prop_map(|db| Request::Flush { db }),
            arb_gossip().prop_map(Request::Gossip),
            vec(any::<u16>(), 0..4).prop_map(|partitions| Request::Count { partitions }),
            any::<u64>().prop_map(|target| Request::Probe { target }),
            (any::<u16>(), option::of(arb_bytes(8)), any::<u32>()).prop_map(
                |(partition, after, limit)| Request::Fetch {
                    partition,
                    after,
                    limit
                }
            ),
            vec(any::<u16>(), 0..4).prop_map(|partitions| Request::Held { partitions }),
            vec(any::<u16>(), 0..4).prop_map(|partitions| Request::Roots { partitions }),
            any::<u16>().prop_map(|partition| Request::Segments { partition }),
            (any::<u16>(), vec(any::<u16>(), 0..4)).prop_map(|(partition, segments)| {
                Request::Leaves {
                    partition,
                    segments,
                }
            }),
            vec((arb_bytes(8), any::<u64>()), 0..4).prop_map(|entries| Request::Reap { entries }),
        ]
    }

    fn arb_gossip() -> impl Strategy<Value = Gossip> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            option::of(arb_bytes(32)),
        )
            .prop_map(|(epoch, digest, target, layout)| Gossip {
                epoch,
                digest,
                target,
                layout,
            })
    }

    fn arb_error_code() -> impl Strategy<Value = ErrorCode> {
        (1u8..=9).prop_map(|code| ErrorCode::try_from(code).unwrap())
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        prop_oneof![
            Just(Response::Pong),
            vec(option::of(arb_bytes(24)), 0..4).prop_map(|records| Response::Records { records }),
            Just(Response::Ack),
            (
                option::of(arb_record().prop_map(Box::new)),
                option::of(arb_record().prop_map(Box::new))
            )
                .prop_map(|(previous, current)| Response::Written { previous, current }),
            vec((arb_bytes(8), arb_record()), 0..4)
                .prop_map(|entries| Response::Entries { entries }),
            arb_gossip().prop_map(Response::Gossip),
            vec(any::<u16>(), 0..4).prop_map(|partitions| Response::Held { partitions }),
            (arb_error_code(), arb_string())
                .prop_map(|(code, message)| Response::Error { code, message }),
            vec((0u8..16, any::<u64>(), any::<u64>()), 0..3).prop_map(|dbs| Response::Count {
                dbs: dbs
                    .into_iter()
                    .map(|(db, keys, expires)| DbCount { db, keys, expires })
                    .collect()
            }),
            any::<bool>().prop_map(|alive| Response::Probed { alive }),
            vec(any::<u64>(), 0..4).prop_map(|hashes| Response::Hashes { hashes }),
            vec((arb_bytes(8), any::<u64>()), 0..4).prop_map(|leaves| Response::Leaves { leaves }),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u64>(), arb_request()).prop_map(|(id, request)| Frame::Request { id, request }),
            (any::<u64>(), arb_response())
                .prop_map(|(id, response)| Frame::Response { id, response }),
        ]
    }

    fn arb_hello() -> impl Strategy<Value = Hello> {
        (
            arb_string(),
            arb_member(),
            any::<u32>(),
            any::<[u8; 16]>(),
            prop_oneof![Just(vec![]), vec(any::<u8>(), 32..=32)],
            prop_oneof![Just(Purpose::Link), Just(Purpose::Exchange)],
        )
            .prop_map(
                |(cluster, member, partitions, nonce, proof, purpose)| Hello {
                    version: PROTOCOL_VERSION,
                    cluster,
                    member,
                    partitions,
                    nonce,
                    proof,
                    purpose,
                },
            )
    }

    /// Encodes, splits and decodes `frame`, and checks that every strict
    /// prefix of its bytes waits in `split_frame` and every strict prefix of
    /// its body fails to decode.
    fn check_round_trip(frame: &Frame) -> Result<(), TestCaseError> {
        let bytes = encoded_frame(frame);
        let mut buf = BytesMut::from(&bytes[..]);
        let body = split_frame(&mut buf)?.ok_or_else(|| TestCaseError::fail("incomplete"))?;
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&decode_frame(&body)?, frame);
        for cut in 0..bytes.len() {
            let mut partial = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(split_frame(&mut partial), Ok(None));
            prop_assert_eq!(partial.len(), cut);
        }
        for cut in 0..body.len() {
            prop_assert!(decode_frame(&body[..cut]).is_err());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn records_are_as_long_as_said_and_decode_shared(record in arb_record()) {
            let bytes = Bytes::from(crate::model::record::encode_record(&record));
            prop_assert_eq!(bytes.len(), encoded_len(&record));
            let shared = crate::model::record::decode_record_shared(&bytes);
            prop_assert_eq!(shared.as_ref(), Ok(&record));
            prop_assert_eq!(decode_record(&bytes), shared);
        }

        #[test]
        fn requests_round_trip(id: u64, request in arb_request()) {
            check_round_trip(&Frame::Request { id, request })?;
        }

        #[test]
        fn responses_round_trip(id: u64, response in arb_response()) {
            check_round_trip(&Frame::Response { id, response })?;
        }

        #[test]
        fn hellos_round_trip(hello in arb_hello()) {
            let mut out = BytesMut::new();
            encode_hello(&hello, &mut out);
            let bytes = out.to_vec();
            let body = split_hello(&mut out)?.ok_or_else(|| TestCaseError::fail("incomplete"))?;
            prop_assert!(out.is_empty());
            prop_assert_eq!(decode_hello(&body)?, hello);
            for cut in 0..bytes.len() {
                let mut partial = BytesMut::from(&bytes[..cut]);
                prop_assert_eq!(split_hello(&mut partial), Ok(None));
            }
            for cut in 0..body.len() {
                prop_assert!(decode_hello(&body[..cut]).is_err());
            }
        }

        #[test]
        fn streams_split_at_any_chunking(
            frames in vec(arb_frame(), 1..4),
            chunk in 1usize..64,
        ) {
            let mut stream = BytesMut::new();
            for frame in &frames {
                encode_frame(frame, &mut stream);
            }
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(body) = split_frame(&mut buf)? {
                    decoded.push(decode_frame(&body)?);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn garbage_never_panics(bytes in vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(body)) = split_frame(&mut buf) {
                let _ = decode_frame(&body);
                let _ = decode_hello(&body);
            }
            let _ = split_hello(&mut BytesMut::from(&bytes[..]));
            let _ = decode_frame(&bytes);
            let _ = decode_hello(&bytes);
        }

        #[test]
        fn garbage_after_a_valid_head_never_panics(
            kind in 1u8..=3,
            tag in 0u8..=11,
            tail in vec(any::<u8>(), 0..64),
        ) {
            let mut body = vec![kind, 0, 0, 0, 0, 0, 0, 0, 1, tag];
            body.extend_from_slice(&tail);
            let _ = decode_frame(&body);
            let mut hello = hello_head().to_vec();
            hello.extend_from_slice(&[0, 1]);
            hello.extend_from_slice(&tail);
            let _ = decode_hello(&hello);
        }

        #[test]
        fn corrupted_frames_never_panic(
            frame in arb_frame(),
            at in any::<prop::sample::Index>(),
            byte: u8,
        ) {
            let mut bytes = encoded_frame(&frame);
            let at = at.index(bytes.len());
            bytes[at] = byte;
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(body)) = split_frame(&mut buf) {
                let _ = decode_frame(&body);
            }
        }
    }
}
