//! Every bound on what the engine accepts from peers, files and applications,
//! in one place, each with the reason for its number. Decoders check these
//! before allocating; relations between them are asserted at compile time.

/// Bytes of a record id. Morango ids are 32 hex digits; natural keys such as
/// `learner-0042/exercise-17` fit easily.
pub const RECORD_ID_BYTES_MAX: usize = 256;

/// Bytes of a field name.
pub const FIELD_NAME_BYTES_MAX: usize = 128;

/// Fields one change may set or unset. Kolibri's widest models have a few
/// dozen columns.
pub const FIELDS_MAX: usize = 256;

/// Nesting depth of a field value (arrays and maps inside arrays and maps).
pub const VALUE_DEPTH_MAX: usize = 32;

/// Encoded bytes of one change's fields. Records are rows, not files: a
/// megabyte is far above any Morango model and keeps a batch of them bounded.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// Instances in one version vector. Every device that ever wrote a record
/// appears once; a thousand writers of one record is already pathological.
pub const VECTOR_ENTRIES_MAX: usize = 1024;

/// Bases one change carries for one field under policy `skip`
/// (`change::Base`): the values it overwrote and what those had
/// overwritten. Sixteen covers a lab that edits a shared record a dozen
/// times between two syncs and still finds the value both sides had seen.
pub const SKIP_BASES_MAX: usize = 16;

/// Entries the change feed keeps (`store/feed.rs`): about 100 bytes each,
/// so at most about 100 MiB, and enough that an app can fall a whole
/// initial sync of a large central behind and still read on.
pub const FEED_ENTRIES_MAX: usize = 1_000_000;

/// Bytes of an authority tag (same bound as in certificates).
pub const AUTHORITY_BYTES_MAX: usize = 64;

/// Changes in one batch. Large enough that per-batch costs (a round trip, an
/// fsync, a zstd frame) vanish; small enough that a lost batch is cheap to
/// resend.
pub const BATCH_CHANGES_MAX: usize = 4096;

/// Changes one run signature covers (`seal.rs`); a local write of more
/// seals several runs.
pub const RUN_LEAVES_MAX: usize = 4096;

/// Runs one batch may carry proofs for.
pub const BATCH_RUNS_MAX: usize = BATCH_CHANGES_MAX;

/// Uncompressed bytes of one batch body, and the most a batch may
/// decompress to (the zip-bomb bound).
pub const DECOMPRESSED_BYTES_MAX: usize = 24 * 1024 * 1024;

/// Bytes of one wire message (a frame). A batch's compressed body plus its
/// envelope; zstd never expands input by more than a few hundred bytes per
/// 128 KiB block.
pub const MESSAGE_BYTES_MAX: usize = DECOMPRESSED_BYTES_MAX + DECOMPRESSED_BYTES_MAX / 64 + 4096;

/// Record types a session's type rules may name (`--types` plus
/// `--skip-types`).
pub const TYPE_RULES_MAX: usize = 256;

/// Frontier entries (partition, record type, instance) in one heads
/// message. Per-learner partitions with a few writers each reach tens of
/// thousands; a million entries is about 60 MiB before compression, so the
/// decompression bound is the effective limit.
pub const HEADS_ENTRIES_MAX: usize = 1_000_000;

/// Bytes of one certificate chain the engine stores or forwards (opaque to
/// it). Matches `certs::limits::CHAIN_BYTES_MAX` with room to spare.
pub const CREDENTIALS_BYTES_MAX: usize = 1024 * 1024;

/// Certificate chains carried in one batch (one per author, usually one).
pub const BATCH_CHAINS_MAX: usize = 64;

/// Text of a session abort reason or a rejection reason.
pub const REASON_BYTES_MAX: usize = 512;

/// Rejection reasons kept in one session summary (the count is exact).
pub const SUMMARY_REJECTIONS_MAX: usize = 32;

/// Milliseconds without progress before a session resends its last message.
pub const RETRANSMIT_MS: u64 = 2_000;

/// Milliseconds without any message from the peer before a session fails.
pub const SESSION_IDLE_TIMEOUT_MS: u64 = 30_000;

/// Default changes per batch when the caller does not choose: the most a
/// batch may hold. With runs a batch of Morango-shaped records is about
/// 260 KB on the wire, what an interrupted transfer resends at most; 2048
/// was 10% slower on the 100k initial sync (docs/performance.md).
pub const BATCH_CHANGES_DEFAULT: usize = 4096;

/// Default uncompressed bytes per batch.
pub const BATCH_BYTES_DEFAULT: usize = 4 * 1024 * 1024;

/// Batches a sender keeps unacknowledged at once (`SessionConfig::window`)
/// by default, and at most. With one, an interrupted transfer resends at most
/// one batch; with two, the receiver applies one batch while the next is on
/// the wire (one round trip saved per batch on a slow link), and up to two
/// are resent. A receiver tolerates a batch at most `WINDOW_MAX - 1` ahead.
pub const WINDOW_DEFAULT: usize = 1;
pub const WINDOW_MAX: usize = 2;

const _: () = assert!(BATCH_CHANGES_DEFAULT <= BATCH_CHANGES_MAX);
const _: () = assert!(WINDOW_DEFAULT >= 1 && WINDOW_DEFAULT <= WINDOW_MAX);
const _: () = assert!(BATCH_BYTES_DEFAULT <= DECOMPRESSED_BYTES_MAX);
const _: () = assert!(RECORD_BYTES_MAX * 8 <= DECOMPRESSED_BYTES_MAX);
const _: () = assert!(CREDENTIALS_BYTES_MAX * 4 <= DECOMPRESSED_BYTES_MAX);
const _: () = assert!(RETRANSMIT_MS < SESSION_IDLE_TIMEOUT_MS);

/// Records one ledger entry names (sent and received together, each once);
/// beyond it the entry counts the changes it carried. TAO's sync history
/// shows which results moved; a full initial sync of a million records is
/// counted, not listed. At about 100 bytes a name, a full ledger
/// (`LEDGER_ENTRIES_MAX` entries) holds at most about 125 MiB of names.
pub const LEDGER_RECORDS_MAX: usize = 128;

/// Ledger entries a store keeps; older ones are dropped.
pub const LEDGER_ENTRIES_MAX: usize = 10_000;

/// Bytes of one blob. TAO delivery packages are tens of megabytes, Kolibri
/// content videos a few gigabytes; a blob's outline is then at most
/// 512 KiB, which one message carries.
pub const BLOB_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// Bytes of one verified block of a blob: 256 BLAKE3 chunks, so a block at
/// a multiple of its size is a subtree of BLAKE3's tree (`blob.rs`). An
/// interrupted transfer resends at most one block; a receiver holds one.
pub const BLOB_BLOCK_BYTES: u64 = 256 * 1024;

/// Blob hashes in one message of the blob protocol (`Lacks`, `Wants`).
pub const BLOB_HASHES_MAX: usize = 4096;

/// Bytes of one message of the blob protocol: the largest outline
/// (32 bytes per block of the largest blob) with room for its envelope.
pub const BLOB_MESSAGE_BYTES_MAX: usize = (BLOB_BYTES_MAX / BLOB_BLOCK_BYTES) as usize * 34 + 4096;

const _: () = assert!(BLOB_BLOCK_BYTES as usize + 4096 <= BLOB_MESSAGE_BYTES_MAX);
const _: () = assert!(BLOB_HASHES_MAX * 34 + 4096 <= BLOB_MESSAGE_BYTES_MAX);
const _: () = assert!(BLOB_BLOCK_BYTES.is_power_of_two() && BLOB_BLOCK_BYTES >= 1024);
