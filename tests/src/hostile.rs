//! A peer that speaks ferry's sync protocol over real libp2p and misbehaves
//! on purpose: it sends whatever frames (or raw bytes) a test gives it and
//! reports what the other side answered. Used by `tests/hostile.rs` against
//! a real `ferry serve`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use engine::blob::message::{self as blob_message, BlobMessage};
use engine::wire::{
    self, Batch, Credentials, Group, GroupChange, HeadEntry, Heads, Hello, Message, Plan, RunProof, Welcome,
};
use engine::{AuthorKey, Change, Hlc, InstanceId, Op, RecordId, RecordKey, Value};
use futures::{AsyncReadExt, AsyncWriteExt};
use node::identity::Identity;
use node::net::{Net, SYNC_PROTOCOL};
use partitions::{Filter, OrgId, Partition, RecordType};

/// How long a hostile peer waits for an answer before calling it silence.
pub const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// A libp2p node with a key of the test's choosing.
pub struct Hostile {
    rt: tokio::runtime::Runtime,
    net: Net,
    pub key: SigningKey,
    opened: Opened,
}

/// How many sync streams a hostile peer has opened, for a thread that waits
/// until it has opened one more (something to do while a hostile session is
/// under way).
#[derive(Clone, Default)]
pub struct Opened {
    count: Arc<(Mutex<u64>, Condvar)>,
}

impl Opened {
    pub fn count(&self) -> u64 {
        *self.count.0.lock().expect("never poisoned")
    }

    /// Waits until more than `seen` streams are open, at most `within`;
    /// returns whether they are.
    pub fn wait_beyond(&self, seen: u64, within: Duration) -> bool {
        let (count, opened) = &*self.count;
        let guard = count.lock().expect("never poisoned");
        let (guard, _) = opened.wait_timeout_while(guard, within, |n| *n <= seen).expect("never poisoned");
        *guard > seen
    }

    fn add_one(&self) {
        *self.count.0.lock().expect("never poisoned") += 1;
        self.count.1.notify_all();
    }
}

impl Hostile {
    pub fn new(key: SigningKey) -> Hostile {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
        let identity = Identity { key: key.clone() };
        let net = rt.block_on(Net::start(&identity, &[], false, None)).expect("start libp2p");
        Hostile { rt, net, key, opened: Opened::default() }
    }

    pub fn peer_id(&self) -> String {
        self.net.peer_id.to_string()
    }

    /// The count of sync streams this peer opened, shared with other threads.
    pub fn opened(&self) -> Opened {
        self.opened.clone()
    }

    pub fn author_key(&self) -> AuthorKey {
        AuthorKey(self.key.verifying_key().to_bytes())
    }

    /// Opens a sync stream to `address`.
    pub fn open(&self, address: &str) -> Conn<'_> {
        let stream = self.rt.block_on(async {
            let peer = self.net.connect(address).await.expect("connect");
            self.net.open(peer, SYNC_PROTOCOL).await.expect("open a sync stream")
        });
        self.opened.add_one();
        Conn { rt: &self.rt, stream }
    }
}

impl Hostile {
    /// Registers at the relay `address` with `chain` (which admits this
    /// peer, when the chain is of an org the relay serves).
    pub fn register(&self, address: &str, chain: &[u8]) -> Result<(), String> {
        let relay = address.parse().map_err(|e| format!("{e}"))?;
        self.rt.block_on(node::meet::register_chain(&self.net, &relay, chain, vec![])).map_err(|e| format!("{e:#}"))
    }

    /// Asks the relay `address` for one more slot.
    pub fn reserve(&self, address: &str) -> Result<(), String> {
        let relay = address.parse().map_err(|e| format!("{e}"))?;
        self.rt.block_on(self.net.reserve_once(relay)).map_err(|e| format!("{e:#}"))
    }
}

impl Hostile {
    /// Opens a blob stream (`/ferry/blob/1`) to `address`.
    pub fn open_blobs(&self, address: &str) -> BlobConn<'_> {
        let stream = self.rt.block_on(async {
            let peer = self.net.connect(address).await.expect("connect");
            self.net.open(peer, node::net::BLOB_PROTOCOL).await.expect("open a blob stream")
        });
        BlobConn { rt: &self.rt, stream }
    }
}

/// One blob stream, written by hand.
pub struct BlobConn<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: node::net::Stream,
}

impl BlobConn<'_> {
    pub fn send(&mut self, message: &BlobMessage) {
        let _ = self.rt.block_on(node::net::write_frame(&mut self.stream, &blob_message::encode(message)));
    }

    /// The next message, or `None` when the stream ends or stays silent
    /// for `ANSWER_WAIT`.
    pub fn recv(&mut self) -> Option<BlobMessage> {
        let read = node::net::read_frame(&mut self.stream, engine::limits::BLOB_MESSAGE_BYTES_MAX);
        match self.rt.block_on(async { tokio::time::timeout(ANSWER_WAIT, read).await }) {
            Ok(Ok(Some(frame))) => Some(blob_message::decode(&frame).expect("ferry sends valid blob frames")),
            _ => None,
        }
    }

    /// Hello with `chain`; panics unless the answer is Ready.
    pub fn hello(&mut self, chain: &[u8]) {
        self.send(&BlobMessage::Hello { credentials: chain.to_vec() });
        match self.recv() {
            Some(BlobMessage::Ready) => {}
            other => panic!("expected Ready, got {other:?}"),
        }
    }
}

/// What the other side did next.
#[derive(Debug)]
pub enum Received {
    Message(Message),
    /// The stream ended (cleanly or not).
    Closed,
    TimedOut,
}

/// One sync stream.
pub struct Conn<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: node::net::Stream,
}

impl Conn<'_> {
    pub fn send(&mut self, message: &Message) {
        self.send_frame(&wire::encode_message(message));
    }

    /// Sends one frame (length prefix added). Errors are ignored: the other
    /// side may already have hung up, which `recv` shows.
    pub fn send_frame(&mut self, frame: &[u8]) {
        let _ = self.rt.block_on(node::net::write_frame(&mut self.stream, frame));
    }

    /// Sends bytes as they are, with no framing.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.rt.block_on(async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        });
    }

    pub fn recv(&mut self, within: Duration) -> Received {
        let read = node::net::read_frame(&mut self.stream, engine::limits::MESSAGE_BYTES_MAX);
        match self.rt.block_on(async { tokio::time::timeout(within, read).await }) {
            Ok(Ok(Some(frame))) => Received::Message(wire::decode_message(&frame).expect("ferry sends valid frames")),
            Ok(Ok(None) | Err(_)) => Received::Closed,
            Err(_) => Received::TimedOut,
        }
    }

    /// One frame as it came off the stream (inside the transport's
    /// encryption, before any decoding): `None` once the stream ends or
    /// nothing comes within `within`.
    pub fn recv_frame(&mut self, within: Duration) -> Option<Vec<u8>> {
        let read = node::net::read_frame(&mut self.stream, engine::limits::MESSAGE_BYTES_MAX);
        match self.rt.block_on(async { tokio::time::timeout(within, read).await }) {
            Ok(Ok(frame)) => frame,
            _ => None,
        }
    }

    pub fn expect_message(&mut self) -> Message {
        match self.recv(ANSWER_WAIT) {
            Received::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Reads until the other side aborts; returns its reason.
    pub fn expect_abort(&mut self) -> String {
        loop {
            match self.recv(ANSWER_WAIT) {
                Received::Message(Message::Abort { reason }) => return reason,
                Received::Message(_) => continue,
                other => panic!("expected an Abort, got {other:?}"),
            }
        }
    }

    /// Reads until the stream ends; returns the messages seen on the way.
    pub fn drain(&mut self, within: Duration) -> Vec<Message> {
        let mut seen = Vec::new();
        loop {
            match self.recv(within) {
                Received::Message(m) => seen.push(m),
                Received::Closed => return seen,
                Received::TimedOut => panic!("the stream stayed open after {seen:?}"),
            }
        }
    }

    /// Whether the stream ends (with nothing more than the messages seen).
    pub fn closes_within(&mut self, within: Duration) -> Vec<Message> {
        self.drain(within)
    }

    /// Hello, Welcome, Heads and (when pushing) the responder's Heads: the
    /// handshake of an initiator, done correctly. Returns the responder's
    /// frontier (empty when only pulling).
    pub fn handshake(&mut self, chain: &[u8], filter: &Filter, pull: bool, push: bool) -> Vec<HeadEntry> {
        self.send(&Message::Hello(Hello {
            session: rand::random(),
            credentials: Credentials::Full(chain.to_vec()),
            filter: filter.clone(),
            pull,
            push,
            types: Default::default(),
        }));
        match self.expect_message() {
            Message::Welcome(Welcome { .. }) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
        self.send(&Message::Heads(Heads { pull, push, entries: Vec::new() }));
        if push {
            match self.expect_message() {
                Message::Heads(heads) => heads.entries,
                other => panic!("expected the responder's Heads, got {other:?}"),
            }
        } else {
            Vec::new()
        }
    }

    /// Reads raw bytes without framing, for tests that stop reading.
    pub fn read_some(&mut self, within: Duration) -> usize {
        let mut buffer = vec![0u8; 64 * 1024];
        match self.rt.block_on(async { tokio::time::timeout(within, self.stream.read(&mut buffer)).await }) {
            Ok(Ok(n)) => n,
            _ => 0,
        }
    }
}

/// A change signed by `key`, as instance `instance` with `counter`.
pub fn change(
    key: &SigningKey,
    instance: InstanceId,
    counter: u64,
    org: OrgId,
    partition: &str,
    id: &str,
    score: i64,
) -> Change {
    let mut change = Change {
        record: RecordKey {
            partition: Partition::resolve(org, partition).expect("partition"),
            record_type: RecordType::parse("result").expect("type"),
            id: RecordId::parse(id).expect("id"),
        },
        author: instance,
        author_key: AuthorKey(key.verifying_key().to_bytes()),
        counter,
        hlc: Hlc::from_parts(node::node::now_ms(), 0),
        authority: None,
        seen: Default::default(),
        op: Op::Put { replace: true, fields: [("score".to_owned(), Some(Value::Int(score)))].into() },
        bases: Default::default(),
        seal: engine::Seal::Single([0; 64]),
    };
    change.sign(key);
    change
}

/// The changes as one group starting after `after` (all must share
/// partition, type and instance).
pub fn group(changes: &[Change], after: u64) -> Group {
    let first = &changes[0];
    Group {
        partition: first.record.partition.clone(),
        record_type: first.record.record_type.clone(),
        author: first.author,
        author_key: first.author_key,
        after,
        changes: changes.iter().map(GroupChange::from_change).collect(),
    }
}

pub fn batch(seq: u64, groups: Vec<Group>, chains: Vec<Vec<u8>>) -> Message {
    batch_with_runs(seq, groups, chains, Vec::new())
}

pub fn batch_with_runs(seq: u64, groups: Vec<Group>, chains: Vec<Vec<u8>>, runs: Vec<RunProof>) -> Message {
    Message::Batch(Batch { seq, plan: Plan::default(), groups, chains, runs })
}

/// Seals `changes` (consecutive counters of one instance) as one run, the
/// way a local write does; returns what is known of the run, to build
/// proofs from (`RunProof::of`).
pub fn seal_run(key: &SigningKey, changes: &mut [Change]) -> engine::seal::RunKnown {
    let leaves: Vec<[u8; 32]> = changes.iter().map(|c| c.leaf().1).collect();
    let author = changes[0].author;
    engine::store::seal_run(key, &author, changes, &leaves)
}

/// The offset and nesting depth of every data item in one CBOR item, in
/// order: where to corrupt it "at every nesting level". Only the forms
/// ferry's encoder writes (definite lengths) are walked.
pub fn cbor_items(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    walk(bytes, &mut at, 0, &mut out);
    out
}

fn walk(bytes: &[u8], at: &mut usize, depth: usize, out: &mut Vec<(usize, usize)>) {
    let Some(&head) = bytes.get(*at) else { return };
    out.push((*at, depth));
    *at += 1;
    let (major, info) = (head >> 5, head & 0x1f);
    let arg = match info {
        0..=23 => u64::from(info),
        24..=27 => {
            let n = 1usize << (info - 24);
            let Some(raw) = bytes.get(*at..*at + n) else { return };
            *at += n;
            raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }
        _ => return,
    };
    match major {
        2 | 3 => *at += arg as usize,
        4 => (0..arg).for_each(|_| walk(bytes, at, depth + 1, out)),
        5 => (0..arg * 2).for_each(|_| walk(bytes, at, depth + 1, out)),
        6 => walk(bytes, at, depth + 1, out),
        _ => {}
    }
}

/// For each nesting depth, `bytes` with the first item at that depth made
/// invalid (its head byte replaced by a reserved one).
pub fn corrupt_each_level(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (offset, depth) in cbor_items(bytes) {
        if seen.insert(depth) {
            let mut bad = bytes.to_vec();
            bad[offset] = 0x1c;
            out.push((depth, bad));
        }
    }
    out
}
