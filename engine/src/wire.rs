//! The network messages of the sync protocol and their frames. Every decode
//! here checks sizes before it decodes, and is fuzzed (`fuzz/`). The
//! signing bytes of a change are in `change::signing`, what the store keeps
//! in `stored`, and the CBOR building blocks all three share in `codec`.
//!
//! A frame on the wire is one byte of protocol version followed by one CBOR
//! message (serde_cbor's packed form: struct fields and enum variants by
//! index). Batches and heads travel compressed: a zstd frame of CBOR, with
//! its uncompressed length and a blake3 checksum of the compressed bytes
//! checked before decompressing, and decompression bounded by that length.
//! docs/protocol.md specifies the messages field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use partitions::{Filter, Partition, RecordType};
use serde::{Deserialize, Serialize};

use crate::change::signing::{BasesSer, BasesWire, OpSer, OpWire, bases_from_wire, no_bases};
use crate::change::{Bases, Change, Op, RecordKey};
use crate::codec::{ByteBuf, ByteBufRef, Bytes16, Bytes32, Bytes64, SealField, cbor_decode, truncate_utf8};
use crate::ids::{AuthorKey, Counter, Hlc, InstanceId, RecordId};
use crate::limits::{
    BATCH_CHAINS_MAX, BATCH_CHANGES_MAX, BATCH_RUNS_MAX, CREDENTIALS_BYTES_MAX, DECOMPRESSED_BYTES_MAX,
    HEADS_ENTRIES_MAX, MESSAGE_BYTES_MAX, REASON_BYTES_MAX, RUN_LEAVES_MAX, TYPE_RULES_MAX,
};
use crate::region::TypeRules;
use crate::seal::{self, RunKnown, Seal};
use crate::vector::VersionVector;

pub use crate::codec::DecodeError;

/// The protocol version this engine speaks: the first byte of every frame.
/// Version 2 seals changes in runs (`seal.rs`): one signature and a proof
/// per run in a batch, where version 1 carried a signature per change.
pub const PROTOCOL_VERSION: u8 = 2;

/// zstd level for batches. On Morango-shaped records level 1 gives 141 wire
/// bytes a record against 138 at level 3, and an in-process sync 24% faster
/// (tests/src/bin/engine_bench, 20,000 records): compression is not where
/// the bytes are (signatures do not compress), speed is.
const ZSTD_LEVEL: i32 = 1;

// ---------------------------------------------------------------------------
// Messages

/// One message of the sync protocol (see docs/protocol.md).
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    /// "I do not know the chain you named by hash: send it whole."
    NeedCredentials,
    Heads(Heads),
    Batch(Batch),
    /// The batch was applied durably; `rejected` of its changes were refused.
    Ack {
        seq: u64,
        rejected: u64,
    },
    /// The sender of a direction has nothing more: `batches` were sent.
    End {
        batches: u64,
    },
    /// The initiator found both digests equal: nothing to do.
    Done,
    Abort {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    pub session: [u8; 16],
    pub credentials: Credentials,
    pub filter: Filter,
    /// The initiator wants the responder's changes.
    pub pull: bool,
    /// The initiator offers its changes.
    pub push: bool,
    /// The initiator's type rules: they narrow both directions.
    pub types: TypeRules,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Welcome {
    pub credentials: Credentials,
    /// The responder's digest of what may flow responder → initiator.
    pub digest_pull: [u8; 32],
    /// The responder's digest of what may flow initiator → responder.
    pub digest_push: [u8; 32],
}

/// A certificate chain, by hash when the peer has it cached.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Hash([u8; 32]),
    Full(Vec<u8>),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Hash(h) => write!(f, "Hash({})", &partitions::hex::encode(h)[..8]),
            Credentials::Full(b) => write!(f, "Full({} bytes)", b.len()),
        }
    }
}

/// What the sender of this message holds in the region the other side may
/// send it: (partition, type, instance) → highest counter held. `pull` and
/// `push` say which directions will run (the initiator drops a direction
/// whose digests matched).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heads {
    pub pull: bool,
    pub push: bool,
    pub entries: Vec<HeadEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeadEntry {
    pub partition: Partition,
    pub record_type: RecordType,
    pub instance: InstanceId,
    pub counter: u64,
}

/// What the sender is about to send, for progress with totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub seq: u64,
    /// What the whole transfer will carry (the same in every batch).
    pub plan: Plan,
    pub groups: Vec<Group>,
    /// Certificate chains of authors in this batch the receiver may lack.
    pub chains: Vec<Vec<u8>>,
    /// The runs the batch's run-sealed changes belong to, each once.
    pub runs: Vec<RunProof>,
}

/// A run some of whose changes a batch carries: its signature and the
/// hashes that, with those changes, rebuild the root it signs (`seal.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunProof {
    pub author: InstanceId,
    pub author_key: AuthorKey,
    pub first: Counter,
    pub count: u32,
    pub signature: [u8; 64],
    pub proof: Vec<[u8; 32]>,
}

impl RunProof {
    /// The proof of a batch holding the changes with counters `counters`
    /// of the run `known` from `first` by `author`; `None` when a counter
    /// is outside the run or a span it needs is not known.
    pub fn of(known: &RunKnown, author: InstanceId, first: Counter, counters: &[Counter]) -> Option<RunProof> {
        let mut leaves: Vec<u32> =
            counters.iter().map(|c| seal::leaf_index(*c, first, known.count).ok()).collect::<Option<_>>()?;
        leaves.sort_unstable();
        leaves.dedup();
        Some(RunProof {
            author,
            author_key: known.author_key,
            first,
            count: known.count,
            signature: known.signature,
            proof: known.proof(&leaves)?,
        })
    }
}

/// A run of changes by one author to one type in one partition: every change
/// the sender retains of them with a counter above `after`, up to the last
/// one listed. The first group of a triple in a session starts after the
/// receiver's frontier entry; later ones after the previous group's last.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub partition: Partition,
    pub record_type: RecordType,
    pub author: InstanceId,
    pub author_key: AuthorKey,
    pub after: u64,
    pub changes: Vec<GroupChange>,
}

/// A change inside a group (the group carries its partition, type and
/// author).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupChange {
    pub id: RecordId,
    pub counter: u64,
    pub hlc: Hlc,
    pub authority: Option<String>,
    pub seen: VersionVector,
    pub op: Op,
    pub bases: Bases,
    pub seal: Seal,
}

impl Group {
    /// The full change `c` of this group, moving what it holds.
    pub fn into_change(&self, c: GroupChange) -> Change {
        Change {
            record: RecordKey { partition: self.partition.clone(), record_type: self.record_type.clone(), id: c.id },
            author: self.author,
            author_key: self.author_key,
            counter: c.counter,
            hlc: c.hlc,
            authority: c.authority,
            seen: c.seen,
            op: c.op,
            bases: c.bases,
            seal: c.seal,
        }
    }

    /// The full change at `index`.
    pub fn change(&self, c: &GroupChange) -> Change {
        Change {
            record: RecordKey {
                partition: self.partition.clone(),
                record_type: self.record_type.clone(),
                id: c.id.clone(),
            },
            author: self.author,
            author_key: self.author_key,
            counter: c.counter,
            hlc: c.hlc,
            authority: c.authority.clone(),
            seen: c.seen.clone(),
            op: c.op.clone(),
            bases: c.bases.clone(),
            seal: c.seal,
        }
    }
}

impl GroupChange {
    pub fn from_change(c: &Change) -> GroupChange {
        GroupChange {
            id: c.record.id.clone(),
            counter: c.counter,
            hlc: c.hlc,
            authority: c.authority.clone(),
            seen: c.seen.clone(),
            op: c.op.clone(),
            bases: c.bases.clone(),
            seal: c.seal,
        }
    }
}

// Wire forms: what serde sees. Kept apart from the public types so the
// public API never mentions serde_cbor or byte wrappers.

#[derive(Serialize, Deserialize)]
enum MessageWire {
    Hello {
        session: Bytes16,
        credentials: CredentialsWire,
        filter: Filter,
        pull: bool,
        push: bool,
        // Absent when the session syncs every type: a plain Hello is the
        // same bytes as before type rules existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        types: Option<Vec<RecordType>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skip_types: Vec<RecordType>,
    },
    Welcome {
        credentials: CredentialsWire,
        digest_pull: Bytes32,
        digest_push: Bytes32,
    },
    NeedCredentials,
    Heads(Compressed),
    Batch {
        seq: u64,
        plan_changes: u64,
        plan_bytes: u64,
        body: Compressed,
    },
    Ack {
        seq: u64,
        rejected: u64,
    },
    End {
        batches: u64,
    },
    Done,
    Abort {
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
enum CredentialsWire {
    Hash(Bytes32),
    Full(ByteBuf),
}

#[derive(Serialize, Deserialize)]
struct Compressed {
    raw_len: u64,
    checksum: Bytes32,
    data: ByteBuf,
}

#[derive(Serialize, Deserialize)]
struct HeadsBody {
    pull: bool,
    push: bool,
    entries: Vec<(Partition, RecordType, Bytes16, u64)>,
}

#[derive(Serialize, Deserialize)]
struct BatchBody {
    groups: Vec<GroupWire>,
    chains: Vec<ByteBuf>,
    runs: Vec<RunWire>,
}

#[derive(Serialize, Deserialize)]
struct RunWire {
    author: Bytes16,
    author_key: Bytes32,
    first: u64,
    count: u32,
    signature: Bytes64,
    proof: Vec<Bytes32>,
}

#[derive(Serialize, Deserialize)]
struct GroupWire {
    partition: Partition,
    record_type: RecordType,
    author: Bytes16,
    author_key: Bytes32,
    after: u64,
    changes: Vec<GroupChangeWire>,
}

#[derive(Serialize)]
struct BatchBodySer<'a> {
    groups: Vec<GroupWireSer<'a>>,
    chains: Vec<ByteBufRef<'a>>,
    runs: Vec<RunWire>,
}

#[derive(Serialize)]
struct GroupWireSer<'a> {
    partition: &'a Partition,
    record_type: &'a RecordType,
    author: Bytes16,
    author_key: Bytes32,
    after: u64,
    changes: Vec<GroupChangeSer<'a>>,
}

#[derive(Serialize)]
struct GroupChangeSer<'a> {
    id: &'a RecordId,
    counter: u64,
    hlc: u64,
    authority: &'a Option<String>,
    seen: &'a VersionVector,
    op: OpSer<'a>,
    seal: SealField,
    #[serde(skip_serializing_if = "no_bases")]
    bases: BasesSer<'a>,
}

#[derive(Serialize, Deserialize)]
struct GroupChangeWire {
    id: RecordId,
    counter: u64,
    hlc: u64,
    authority: Option<String>,
    seen: VersionVector,
    op: OpWire,
    seal: SealField,
    #[serde(default)]
    bases: BasesWire,
}

/// Encodes a message as one frame.
pub fn encode_message(message: &Message) -> Vec<u8> {
    let wire = match message {
        Message::Hello(h) => MessageWire::Hello {
            session: Bytes16(h.session),
            credentials: CredentialsWire::from(&h.credentials),
            filter: h.filter.clone(),
            pull: h.pull,
            push: h.push,
            types: h.types.only.as_ref().map(|t| t.iter().cloned().collect()),
            skip_types: h.types.skip.iter().cloned().collect(),
        },
        Message::Welcome(w) => MessageWire::Welcome {
            credentials: CredentialsWire::from(&w.credentials),
            digest_pull: Bytes32(w.digest_pull),
            digest_push: Bytes32(w.digest_push),
        },
        Message::NeedCredentials => MessageWire::NeedCredentials,
        Message::Heads(h) => MessageWire::Heads(compress(&HeadsBody {
            pull: h.pull,
            push: h.push,
            entries: h
                .entries
                .iter()
                .map(|e| (e.partition.clone(), e.record_type.clone(), Bytes16(e.instance.0), e.counter))
                .collect(),
        })),
        Message::Batch(b) => MessageWire::Batch {
            seq: b.seq,
            plan_changes: b.plan.changes,
            plan_bytes: b.plan.bytes,
            body: compress(&batch_body(b)),
        },
        Message::Ack { seq, rejected } => MessageWire::Ack { seq: *seq, rejected: *rejected },
        Message::End { batches } => MessageWire::End { batches: *batches },
        Message::Done => MessageWire::Done,
        Message::Abort { reason } => {
            let mut reason = reason.clone();
            truncate_utf8(&mut reason, REASON_BYTES_MAX);
            MessageWire::Abort { reason }
        }
    };
    let body = serde_cbor::ser::to_vec_packed(&wire).expect("writing CBOR to a Vec cannot fail");
    let mut frame = Vec::with_capacity(body.len() + 1);
    frame.push(PROTOCOL_VERSION);
    frame.extend_from_slice(&body);
    frame
}

/// Builds a Batch frame around arbitrary compressed bytes with a correct
/// checksum, claiming `raw_len` uncompressed bytes. For tests and fuzz
/// targets that need to reach the decompression and body decoding paths.
pub fn batch_frame_from_parts(seq: u64, raw_len: u64, data: &[u8]) -> Vec<u8> {
    let wire = MessageWire::Batch {
        seq,
        plan_changes: 0,
        plan_bytes: 0,
        body: Compressed { raw_len, checksum: Bytes32(*blake3::hash(data).as_bytes()), data: ByteBuf(data.to_vec()) },
    };
    let mut frame = vec![PROTOCOL_VERSION];
    frame.extend_from_slice(&serde_cbor::ser::to_vec_packed(&wire).expect("writing CBOR to a Vec cannot fail"));
    frame
}

/// Builds a Batch frame whose body is `body` (any bytes, meant to be CBOR),
/// compressed properly. For fuzz targets of the batch body decoder.
pub fn batch_frame_from_body(seq: u64, body: &[u8]) -> Vec<u8> {
    let data = zstd::bulk::compress(body, ZSTD_LEVEL).expect("zstd compresses any input");
    batch_frame_from_parts(seq, body.len() as u64, &data)
}

/// The uncompressed CBOR body of a batch: seeds for the fuzz targets of the
/// body decoder and of decompression.
pub fn encode_batch_body(b: &Batch) -> Vec<u8> {
    serde_cbor::ser::to_vec_packed(&batch_body(b)).expect("writing CBOR to a Vec cannot fail")
}

fn batch_body(b: &Batch) -> BatchBodySer<'_> {
    // A run-sealed change names its run by its place in `runs`; one the
    // batch lacks gets a place past the end, which the receiver refuses.
    let places: BTreeMap<(InstanceId, Counter), u64> =
        b.runs.iter().enumerate().map(|(i, r)| ((r.author, r.first), i as u64)).collect();
    BatchBodySer {
        groups: b
            .groups
            .iter()
            .map(|g| GroupWireSer {
                partition: &g.partition,
                record_type: &g.record_type,
                author: Bytes16(g.author.0),
                author_key: Bytes32(g.author_key.0),
                after: g.after,
                changes: g
                    .changes
                    .iter()
                    .map(|c| GroupChangeSer {
                        id: &c.id,
                        counter: c.counter,
                        hlc: c.hlc.0,
                        authority: &c.authority,
                        seen: &c.seen,
                        op: OpSer(&c.op),
                        seal: match c.seal {
                            Seal::Single(signature) => SealField::Single(signature),
                            Seal::Run { first } => {
                                SealField::Run(places.get(&(g.author, first)).copied().unwrap_or(b.runs.len() as u64))
                            }
                        },
                        bases: BasesSer(&c.bases),
                    })
                    .collect(),
            })
            .collect(),
        chains: b.chains.iter().map(|c| ByteBufRef(c)).collect(),
        runs: b
            .runs
            .iter()
            .map(|r| RunWire {
                author: Bytes16(r.author.0),
                author_key: Bytes32(r.author_key.0),
                first: r.first,
                count: r.count,
                signature: Bytes64(r.signature),
                proof: r.proof.iter().map(|h| Bytes32(*h)).collect(),
            })
            .collect(),
    }
}

/// Decodes one frame, checking every limit before allocating for it.
pub fn decode_message(frame: &[u8]) -> Result<Message, DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::Empty);
    }
    if frame.len() > MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLarge { len: frame.len(), max: MESSAGE_BYTES_MAX });
    }
    if frame[0] != PROTOCOL_VERSION {
        return Err(DecodeError::Version { found: frame[0], supported: PROTOCOL_VERSION });
    }
    let wire: MessageWire = cbor_decode(&frame[1..])?;
    Ok(match wire {
        MessageWire::Hello { session, credentials, filter, pull, push, types, skip_types } => {
            let listed = types.as_ref().map_or(0, Vec::len) + skip_types.len();
            if listed > TYPE_RULES_MAX {
                return Err(DecodeError::TooManyTypes { count: listed, max: TYPE_RULES_MAX });
            }
            let types =
                TypeRules { only: types.map(|t| t.into_iter().collect()), skip: skip_types.into_iter().collect() };
            Message::Hello(Hello {
                session: session.0,
                credentials: credentials.try_into()?,
                filter,
                pull,
                push,
                types,
            })
        }
        MessageWire::Welcome { credentials, digest_pull, digest_push } => Message::Welcome(Welcome {
            credentials: credentials.try_into()?,
            digest_pull: digest_pull.0,
            digest_push: digest_push.0,
        }),
        MessageWire::NeedCredentials => Message::NeedCredentials,
        MessageWire::Heads(body) => {
            let body: HeadsBody = decompress(&body)?;
            if body.entries.len() > HEADS_ENTRIES_MAX {
                return Err(DecodeError::TooManyHeads { count: body.entries.len(), max: HEADS_ENTRIES_MAX });
            }
            Message::Heads(Heads {
                pull: body.pull,
                push: body.push,
                entries: body
                    .entries
                    .into_iter()
                    .map(|(partition, record_type, instance, counter)| HeadEntry {
                        partition,
                        record_type,
                        instance: InstanceId(instance.0),
                        counter,
                    })
                    .collect(),
            })
        }
        MessageWire::Batch { seq, plan_changes, plan_bytes, body } => {
            Message::Batch(decode_batch_body(seq, Plan { changes: plan_changes, bytes: plan_bytes }, &body)?)
        }
        MessageWire::Ack { seq, rejected } => Message::Ack { seq, rejected },
        MessageWire::End { batches } => Message::End { batches },
        MessageWire::Done => Message::Done,
        MessageWire::Abort { reason } => {
            if reason.len() > REASON_BYTES_MAX {
                return Err(DecodeError::ReasonTooLong { len: reason.len(), max: REASON_BYTES_MAX });
            }
            Message::Abort { reason }
        }
    })
}

fn decode_batch_body(seq: u64, plan: Plan, body: &Compressed) -> Result<Batch, DecodeError> {
    let body: BatchBody = decompress(body)?;
    let count: usize = body.groups.iter().map(|g| g.changes.len()).sum();
    if count > BATCH_CHANGES_MAX {
        return Err(DecodeError::TooManyChanges { count, max: BATCH_CHANGES_MAX });
    }
    if body.chains.len() > BATCH_CHAINS_MAX {
        return Err(DecodeError::TooManyChains { count: body.chains.len(), max: BATCH_CHAINS_MAX });
    }
    if let Some(chain) = body.chains.iter().find(|c| c.0.len() > CREDENTIALS_BYTES_MAX) {
        return Err(DecodeError::ChainTooLarge { len: chain.0.len(), max: CREDENTIALS_BYTES_MAX });
    }
    if body.runs.len() > BATCH_RUNS_MAX {
        return Err(DecodeError::TooManyRuns { count: body.runs.len(), max: BATCH_RUNS_MAX });
    }
    let mut named = BTreeSet::new();
    for r in &body.runs {
        if r.count == 0 || r.count as usize > RUN_LEAVES_MAX || r.proof.len() > r.count as usize {
            return Err(DecodeError::RunShape { count: r.count, proof: r.proof.len(), max: RUN_LEAVES_MAX });
        }
        if !named.insert((r.author.0, r.first)) {
            return Err(DecodeError::RunTwice { first: r.first });
        }
    }
    let runs: Vec<RunProof> = body
        .runs
        .into_iter()
        .map(|r| RunProof {
            author: InstanceId(r.author.0),
            author_key: AuthorKey(r.author_key.0),
            first: r.first,
            count: r.count,
            signature: r.signature.0,
            proof: r.proof.into_iter().map(|h| h.0).collect(),
        })
        .collect();
    let seal = |field: SealField| match field {
        SealField::Single(signature) => Ok(Seal::Single(signature)),
        SealField::Run(place) => match runs.get(place as usize) {
            Some(run) => Ok(Seal::Run { first: run.first }),
            None => Err(DecodeError::RunIndex { place, runs: runs.len() }),
        },
    };
    let mut groups = Vec::with_capacity(body.groups.len());
    for g in body.groups {
        let mut changes = Vec::with_capacity(g.changes.len());
        for c in g.changes {
            changes.push(GroupChange {
                id: c.id,
                counter: c.counter,
                hlc: Hlc(c.hlc),
                authority: c.authority,
                seen: c.seen,
                op: c.op.into_op(),
                seal: seal(c.seal)?,
                bases: bases_from_wire(c.bases),
            });
        }
        groups.push(Group {
            partition: g.partition,
            record_type: g.record_type,
            author: InstanceId(g.author.0),
            author_key: AuthorKey(g.author_key.0),
            after: g.after,
            changes,
        });
    }
    Ok(Batch { seq, plan, groups, chains: body.chains.into_iter().map(|c| c.0).collect(), runs })
}

impl From<&Credentials> for CredentialsWire {
    fn from(c: &Credentials) -> CredentialsWire {
        match c {
            Credentials::Hash(h) => CredentialsWire::Hash(Bytes32(*h)),
            Credentials::Full(b) => CredentialsWire::Full(ByteBuf(b.clone())),
        }
    }
}

impl TryFrom<CredentialsWire> for Credentials {
    type Error = DecodeError;
    fn try_from(c: CredentialsWire) -> Result<Credentials, DecodeError> {
        match c {
            CredentialsWire::Hash(h) => Ok(Credentials::Hash(h.0)),
            CredentialsWire::Full(b) if b.0.len() > CREDENTIALS_BYTES_MAX => {
                Err(DecodeError::ChainTooLarge { len: b.0.len(), max: CREDENTIALS_BYTES_MAX })
            }
            CredentialsWire::Full(b) => Ok(Credentials::Full(b.0)),
        }
    }
}

fn compress<T: Serialize>(body: &T) -> Compressed {
    let raw = serde_cbor::ser::to_vec_packed(body).expect("writing CBOR to a Vec cannot fail");
    let data = zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compresses any input");
    Compressed { raw_len: raw.len() as u64, checksum: Bytes32(*blake3::hash(&data).as_bytes()), data: ByteBuf(data) }
}

fn decompress<T: for<'de> Deserialize<'de>>(c: &Compressed) -> Result<T, DecodeError> {
    if c.raw_len > DECOMPRESSED_BYTES_MAX as u64 {
        return Err(DecodeError::DecompressedTooLarge { len: c.raw_len, max: DECOMPRESSED_BYTES_MAX });
    }
    if blake3::hash(&c.data.0).as_bytes() != &c.checksum.0 {
        return Err(DecodeError::Checksum);
    }
    match zstd::zstd_safe::get_frame_content_size(&c.data.0) {
        Ok(Some(declared)) if declared != c.raw_len => {
            return Err(DecodeError::LengthMismatch { expected: c.raw_len, found: declared });
        }
        Ok(_) => {}
        Err(_) => return Err(DecodeError::Decompress("not a zstd frame".to_owned())),
    }
    // `raw_len` is bounded above, so this allocation is too.
    let raw =
        zstd::bulk::decompress(&c.data.0, c.raw_len as usize).map_err(|e| DecodeError::Decompress(e.to_string()))?;
    if raw.len() as u64 != c.raw_len {
        return Err(DecodeError::LengthMismatch { expected: c.raw_len, found: raw.len() as u64 });
    }
    cbor_decode(&raw)
}
