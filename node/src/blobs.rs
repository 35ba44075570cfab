//! The home's blob store (docs/storage.md, "Blobs"): one file per BLAKE3
//! hash, however many records reference it.
//!
//! - `blobs/<2 hex>/<64 hex>`: a complete blob, named by its hash. It only
//!   gets that name by a rename after every byte was verified and synced,
//!   so a partial file never passes for a complete one.
//! - `blobs/<2 hex>/<64 hex>.outline`: its block hashes (`engine::blob`),
//!   kept so serving it does not hash it again; checked against the hash
//!   when read, rebuilt from the blob when missing or wrong.
//! - `blobs/partial/<64 hex>`: a blob being received. Its blocks are
//!   written only once verified; after a kill -9 `receive` checks them again
//!   against the outline and keeps the verified prefix.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use engine::blob::{self, BlobError, BlobHash, BlobRef, Outline, OutlineBuilder};
use engine::limits::{BLOB_BLOCK_BYTES, BLOB_BYTES_MAX};

/// Free space kept on the disk beyond what a fetch needs, so a blob never
/// fills the disk the store writes to.
pub const FREE_MARGIN_BYTES: u64 = 64 * 1024 * 1024;

/// What the home holds of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    Complete {
        size: u64,
    },
    /// Bytes of it received so far (verified up to the last whole block).
    Partial {
        bytes: u64,
    },
    Missing,
}

impl BlobState {
    pub fn name(&self) -> &'static str {
        match self {
            BlobState::Complete { .. } => "complete",
            BlobState::Partial { .. } => "partial",
            BlobState::Missing => "missing",
        }
    }
}

pub struct Blobs {
    dir: PathBuf,
    /// Blobs this process is receiving: a second transfer of the same blob
    /// waits for a later sync instead of writing the same partial file.
    receiving: Arc<Mutex<BTreeSet<BlobHash>>>,
}

impl Blobs {
    pub fn new(dir: PathBuf) -> Blobs {
        Blobs { dir, receiving: Arc::default() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    fn outline_path(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(format!("{hex}.outline"))
    }

    fn partial_dir(&self) -> PathBuf {
        self.dir.join("partial")
    }

    fn partial_path(&self, hash: &BlobHash) -> PathBuf {
        self.partial_dir().join(hash.to_hex())
    }

    pub fn has(&self, hash: &BlobHash) -> bool {
        self.path(hash).is_file()
    }

    pub fn state(&self, hash: &BlobHash) -> BlobState {
        if let Ok(meta) = std::fs::metadata(self.path(hash)) {
            return BlobState::Complete { size: meta.len() };
        }
        match std::fs::metadata(self.partial_path(hash)) {
            Ok(meta) => BlobState::Partial { bytes: meta.len() },
            Err(_) => BlobState::Missing,
        }
    }

    /// Whether this process is receiving the blob now.
    pub fn is_receiving(&self, hash: &BlobHash) -> bool {
        self.receiving.lock().expect("receiving lock").contains(hash)
    }

    /// How long since the blob (complete or partial) was last written.
    pub fn age(&self, hash: &BlobHash) -> Option<std::time::Duration> {
        let meta = std::fs::metadata(self.path(hash)).or_else(|_| std::fs::metadata(self.partial_path(hash))).ok()?;
        meta.modified().ok()?.elapsed().ok()
    }

    /// Every blob held, complete or partial.
    pub fn held(&self) -> anyhow::Result<Vec<(BlobHash, BlobState)>> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Ok(out) };
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", self.dir.display()))?;
            let Ok(files) = std::fs::read_dir(entry.path()) else { continue };
            for file in files.flatten() {
                let name = file.file_name();
                if let Some(hash) = name.to_str().and_then(BlobHash::parse) {
                    out.push((hash, self.state(&hash)));
                }
            }
        }
        out.sort_by_key(|(h, _)| *h);
        out.dedup_by_key(|(h, _)| *h);
        Ok(out)
    }

    /// Stores the file at `source`, returning its reference. `progress`
    /// hears the bytes read so far. An identical blob already held is kept.
    pub fn add_file(&self, source: &Path, progress: &mut dyn FnMut(u64, u64)) -> anyhow::Result<BlobRef> {
        let mut input = File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
        let total = input.metadata().map(|m| m.len()).unwrap_or(0);
        if total > BLOB_BYTES_MAX {
            bail!("{} is {total} bytes, more than the {BLOB_BYTES_MAX} a blob may hold", source.display());
        }
        self.check_space(total)?;
        let partial = self.partial_dir();
        std::fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        let mut copy = tempfile::Builder::new()
            .prefix(".add.")
            .tempfile_in(&partial)
            .with_context(|| format!("cannot write in {}", partial.display()))?;
        let mut builder = OutlineBuilder::new();
        let mut buffer = vec![0u8; BLOB_BLOCK_BYTES as usize];
        let mut done = 0u64;
        loop {
            let n = input.read(&mut buffer).with_context(|| format!("cannot read {}", source.display()))?;
            if n == 0 {
                break;
            }
            builder.update(&buffer[..n]);
            copy.write_all(&buffer[..n]).map_err(|e| disk_error(e, &partial))?;
            done += n as u64;
            progress(done, total);
            if done > BLOB_BYTES_MAX {
                bail!("{} grew beyond the {BLOB_BYTES_MAX} bytes a blob may hold", source.display());
            }
        }
        let (hash, outline) = builder.finish();
        let reference = BlobRef { hash, size: outline.size };
        if self.has(&hash) {
            return Ok(reference);
        }
        copy.as_file().sync_all().map_err(|e| disk_error(e, &partial))?;
        self.install(&hash, &outline, copy.into_temp_path().keep().context("cannot keep a copied blob")?.as_path())?;
        Ok(reference)
    }

    /// Gives a verified, synced file its final name, with its outline.
    fn install(&self, hash: &BlobHash, outline: &Outline, from: &Path) -> anyhow::Result<()> {
        let path = self.path(hash);
        let dir = path.parent().expect("blob paths have a directory");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if !outline.cvs.is_empty() {
            crate::home::write_atomic(&self.outline_path(hash), &encode_outline(outline))?;
        }
        std::fs::rename(from, &path).with_context(|| format!("cannot store blob {hash}"))?;
        File::open(dir).and_then(|d| d.sync_all()).ok();
        Ok(())
    }

    /// The outline of a complete blob, rebuilt (and kept) when its file is
    /// missing or does not make the hash.
    pub fn outline(&self, hash: &BlobHash) -> anyhow::Result<Outline> {
        let size = std::fs::metadata(self.path(hash)).with_context(|| format!("blob {hash} is not held"))?.len();
        if size <= BLOB_BLOCK_BYTES {
            return Ok(Outline { size, cvs: Vec::new() });
        }
        if let Ok(bytes) = std::fs::read(self.outline_path(hash))
            && let Some(outline) = decode_outline(&bytes, size)
            && outline.check(hash, size).is_ok()
        {
            return Ok(outline);
        }
        let mut file = self.open(hash)?;
        let mut builder = OutlineBuilder::new();
        let mut buffer = vec![0u8; BLOB_BLOCK_BYTES as usize];
        loop {
            let n = file.read(&mut buffer).with_context(|| format!("cannot read blob {hash}"))?;
            if n == 0 {
                break;
            }
            builder.update(&buffer[..n]);
        }
        let (found, outline) = builder.finish();
        if found != *hash {
            self.quarantine(hash);
            bail!("blob {hash} is damaged on disk: removed, the next sync fetches it again");
        }
        crate::home::write_atomic(&self.outline_path(hash), &encode_outline(&outline))?;
        Ok(outline)
    }

    /// A damaged blob is removed: a peer holds it whole.
    pub fn quarantine(&self, hash: &BlobHash) {
        let _ = std::fs::remove_file(self.path(hash));
        let _ = std::fs::remove_file(self.outline_path(hash));
    }

    pub fn open(&self, hash: &BlobHash) -> anyhow::Result<File> {
        File::open(self.path(hash)).with_context(|| format!("blob {hash} is not held"))
    }

    /// Reads block `index` of a complete blob of `size` bytes.
    pub fn read_block(file: &mut File, size: u64, index: u64) -> std::io::Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        let len = blob::block_len(size, index) as usize;
        let mut block = vec![0u8; len];
        file.seek(SeekFrom::Start(index * BLOB_BLOCK_BYTES))?;
        file.read_exact(&mut block)?;
        Ok(block)
    }

    /// Copies a complete blob to `out`, checking it against its hash on the
    /// way: a blob damaged on disk is removed (a sync fetches it again) and
    /// `out` is not left behind.
    pub fn export(&self, hash: &BlobHash, out: &Path) -> anyhow::Result<u64> {
        let state = self.state(hash);
        match state {
            BlobState::Complete { .. } => {}
            BlobState::Partial { bytes } => bail!(
                "blob {hash} is incomplete ({bytes} bytes so far): sync with a peer that holds it, then try again"
            ),
            BlobState::Missing => bail!("no blob {hash} in this home"),
        }
        let mut input = self.open(hash)?;
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut copy = tempfile::Builder::new()
            .prefix(".ferry-blob.")
            .tempfile_in(dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; BLOB_BLOCK_BYTES as usize];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buffer).with_context(|| format!("cannot read blob {hash}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            copy.write_all(&buffer[..n]).map_err(|e| disk_error(e, dir))?;
            size += n as u64;
        }
        if BlobHash(*hasher.finalize().as_bytes()) != *hash {
            self.quarantine(hash);
            bail!("blob {hash} is damaged on disk: removed, the next sync fetches it again from a peer");
        }
        copy.as_file().sync_all().map_err(|e| disk_error(e, dir))?;
        copy.persist(out).map_err(|e| e.error).with_context(|| format!("cannot write {}", out.display()))?;
        Ok(size)
    }

    /// Removes a blob, complete or partial.
    pub fn remove(&self, hash: &BlobHash) -> anyhow::Result<()> {
        for path in [self.path(hash), self.outline_path(hash), self.partial_path(hash)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Bytes free for this home's blobs (what an unprivileged writer may use).
    pub fn free_bytes(&self) -> anyhow::Result<u64> {
        let mut at = self.dir.as_path();
        while !at.exists() {
            at = at.parent().unwrap_or(Path::new("/"));
        }
        let stat =
            rustix::fs::statvfs(at).with_context(|| format!("cannot read the free space of {}", at.display()))?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Refuses a write of `bytes` that would leave less than
    /// `FREE_MARGIN_BYTES` free.
    pub fn check_space(&self, bytes: u64) -> anyhow::Result<()> {
        let free = self.free_bytes()?;
        if free < bytes.saturating_add(FREE_MARGIN_BYTES) {
            bail!(
                "not enough free disk for a blob of {} MiB: {} MiB free at {}, and ferry keeps {} MiB spare; free some space, then try again",
                bytes.div_ceil(1 << 20),
                free >> 20,
                self.dir.display(),
                FREE_MARGIN_BYTES >> 20
            );
        }
        Ok(())
    }

    /// Starts (or resumes) receiving a blob whose outline was checked
    /// against its hash. The blocks already in its partial file are checked
    /// again and the verified prefix kept. `None`: this process is already
    /// receiving it.
    pub fn receive(&self, hash: &BlobHash, outline: &Outline) -> anyhow::Result<Option<Receiving>> {
        if !self.receiving.lock().expect("receiving lock").insert(*hash) {
            return Ok(None);
        }
        let guard = Claim { set: self.receiving.clone(), hash: *hash };
        let dir = self.partial_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = self.partial_path(hash);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let held = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut verified = 0u64;
        let mut buffer = vec![0u8; BLOB_BLOCK_BYTES as usize];
        while verified < outline.blocks() {
            let len = blob::block_len(outline.size, verified);
            if verified * BLOB_BLOCK_BYTES + len > held {
                break;
            }
            let block = &mut buffer[..len as usize];
            if file.read_exact(block).is_err() || outline.verify_block(hash, verified, block).is_err() {
                break;
            }
            verified += 1;
        }
        let needed = outline.size.saturating_sub(verified * BLOB_BLOCK_BYTES);
        if let Err(e) = self.check_space(needed) {
            if verified == 0 {
                drop(file);
                let _ = std::fs::remove_file(&path);
            }
            return Err(e);
        }
        file.set_len((verified * BLOB_BLOCK_BYTES).min(outline.size)).map_err(|e| disk_error(e, &dir))?;
        Ok(Some(Receiving { hash: *hash, outline: outline.clone(), file, path, next: verified, _claim: guard }))
    }

    /// Finishes a receipt: syncs it and gives it its name.
    pub fn complete(&self, receiving: Receiving) -> anyhow::Result<()> {
        if receiving.next != receiving.outline.blocks() {
            bail!("blob {} is incomplete", receiving.hash);
        }
        receiving.file.sync_all().map_err(|e| disk_error(e, &self.dir))?;
        self.install(&receiving.hash, &receiving.outline, &receiving.path)
    }
}

/// Releases a blob being received when its receipt ends, however it ends.
struct Claim {
    set: Arc<Mutex<BTreeSet<BlobHash>>>,
    hash: BlobHash,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.hash);
        }
    }
}

/// A blob being received: its blocks arrive in order and are each checked
/// before they are written.
pub struct Receiving {
    pub hash: BlobHash,
    pub outline: Outline,
    file: File,
    path: PathBuf,
    next: u64,
    _claim: Claim,
}

impl Receiving {
    /// The first block not yet held.
    pub fn next_block(&self) -> u64 {
        self.next
    }

    /// Bytes held (verified) so far.
    pub fn held_bytes(&self) -> u64 {
        (self.next * BLOB_BLOCK_BYTES).min(self.outline.size)
    }

    pub fn is_done(&self) -> bool {
        self.next == self.outline.blocks()
    }

    /// Checks the next block and writes it; a block that fails is refused
    /// with nothing of it written.
    pub fn accept(&mut self, data: &[u8]) -> Result<(), AcceptError> {
        self.outline.verify_block(&self.hash, self.next, data).map_err(AcceptError::Refused)?;
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.next * BLOB_BLOCK_BYTES)).map_err(AcceptError::Disk)?;
        self.file.write_all(data).map_err(AcceptError::Disk)?;
        self.next += 1;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("{0}")]
    Refused(BlobError),
    #[error("cannot write a received blob: {0}")]
    Disk(std::io::Error),
}

fn disk_error(e: std::io::Error, at: &Path) -> anyhow::Error {
    if e.raw_os_error() == Some(28) {
        anyhow::anyhow!("the disk holding {} is full: free some space, then try again", at.display())
    } else {
        anyhow::Error::new(e).context(format!("cannot write in {}", at.display()))
    }
}

fn encode_outline(outline: &Outline) -> Vec<u8> {
    outline.cvs.iter().flatten().copied().collect()
}

fn decode_outline(bytes: &[u8], size: u64) -> Option<Outline> {
    if bytes.len() as u64 != blob::blocks(size) * 32 {
        return None;
    }
    let cvs = bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
    Some(Outline { size, cvs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3)).collect()
    }

    #[test]
    fn a_blob_added_is_held_once_and_exports_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = Blobs::new(dir.path().join("blobs"));
        let bytes = data(3 * BLOB_BLOCK_BYTES as usize + 11, 7);
        let source = dir.path().join("package.zip");
        std::fs::write(&source, &bytes).expect("write");
        let first = blobs.add_file(&source, &mut |_, _| {}).expect("add");
        let second = blobs.add_file(&source, &mut |_, _| {}).expect("add again");
        assert_eq!(first, second);
        assert_eq!(first.hash, BlobHash::of(&bytes));
        assert_eq!(blobs.held().expect("list"), [(first.hash, BlobState::Complete { size: bytes.len() as u64 })]);
        let out = dir.path().join("out.zip");
        blobs.export(&first.hash, &out).expect("export");
        assert_eq!(std::fs::read(&out).expect("read"), bytes);
        assert_eq!(blobs.outline(&first.hash).expect("outline").blocks(), 4);
    }

    #[test]
    fn a_receipt_cut_short_resumes_after_its_verified_blocks() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = Blobs::new(dir.path().join("blobs"));
        let bytes = data(5 * BLOB_BLOCK_BYTES as usize + 3, 13);
        let mut builder = OutlineBuilder::new();
        builder.update(&bytes);
        let (hash, outline) = builder.finish();
        let blocks: Vec<&[u8]> = bytes.chunks(BLOB_BLOCK_BYTES as usize).collect();
        let mut receiving = blobs.receive(&hash, &outline).expect("receive").expect("not yet receiving");
        assert!(blobs.receive(&hash, &outline).expect("receive").is_none(), "one receipt of a blob at a time");
        receiving.accept(blocks[0]).expect("block 0");
        receiving.accept(blocks[1]).expect("block 1");
        let mut bad = blocks[2].to_vec();
        bad[5] ^= 0x40;
        assert!(matches!(receiving.accept(&bad), Err(AcceptError::Refused(BlobError::Block { index: 2, .. }))));
        drop(receiving);
        // Half a block more on disk, as a kill -9 mid-write leaves it.
        let partial = blobs.partial_path(&hash);
        let mut file = std::fs::OpenOptions::new().append(true).open(&partial).expect("open");
        file.write_all(&blocks[2][..1000]).expect("append");
        assert_eq!(blobs.state(&hash), BlobState::Partial { bytes: 2 * BLOB_BLOCK_BYTES + 1000 });
        let mut resumed = blobs.receive(&hash, &outline).expect("receive").expect("released");
        assert_eq!(resumed.next_block(), 2, "the two verified blocks are kept, the torn one is not");
        for block in &blocks[2..] {
            resumed.accept(block).expect("the rest");
        }
        blobs.complete(resumed).expect("complete");
        let out = dir.path().join("out");
        blobs.export(&hash, &out).expect("export");
        assert_eq!(std::fs::read(&out).expect("read"), bytes);
    }

    #[test]
    fn a_blob_damaged_on_disk_is_not_exported_and_is_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = Blobs::new(dir.path().join("blobs"));
        let source = dir.path().join("report.pdf");
        std::fs::write(&source, b"a report").expect("write");
        let r = blobs.add_file(&source, &mut |_, _| {}).expect("add");
        let path = blobs.path(&r.hash);
        std::fs::write(&path, b"a rep0rt").expect("damage");
        let error = blobs.export(&r.hash, &dir.path().join("out")).expect_err("damaged");
        assert!(error.to_string().contains("damaged on disk"), "{error}");
        assert_eq!(blobs.state(&r.hash), BlobState::Missing);
        assert!(!dir.path().join("out").exists());
    }
}
