//! Blobs with real `ferry` processes on 127.0.0.1 (SPEC §6.1): a TAO-sized
//! delivery package reaching two devices, sent once for a hundred records;
//! transfers cut by kill -9 of either side resuming after their verified
//! blocks; a device outside a record's read scope and a peer sending
//! corrupt or forged bytes; the gc.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use engine::blob::message::BlobMessage;
use engine::blob::{BlobHash, Outline, OutlineBuilder};
use engine::limits::BLOB_BLOCK_BYTES;
use sha2::Digest;
use tests::cli::Home;
use tests::hostile::Hostile;

const MIB: usize = 1024 * 1024;

/// `len` bytes no compressor shrinks, different for each `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write a file");
    path
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn org(central: &Home) {
    central.json(&["org", "create", "District 7", "--authority", "central"]);
}

fn enrol(central: &Home, device: &Home, read: &str, write: &str) {
    let mut args = vec!["enroll", "token", "--read", read];
    if !write.is_empty() {
        args.extend(["--write", write]);
    }
    let token = central.json(&args)["token"].as_str().expect("token").to_owned();
    device.json(&["enroll", &token]);
}

/// Attaches `file` as `field` of a new record and returns the blob's hash.
fn attach_as(home: &Home, record_type: &str, id: &str, partition: &str, field: &str, file: &Path) -> String {
    let attach = format!("{field}={}", file.display());
    let put = home.json(&["put", record_type, id, "--partition", partition, "--attach", &attach]);
    put["fields"][field]["$blob"]["hash"].as_str().expect("a blob reference").to_owned()
}

/// Attaches `file` to a new delivery and returns the blob's hash.
fn attach(home: &Home, id: &str, partition: &str, file: &Path) -> String {
    attach_as(home, "delivery", id, partition, "package", file)
}

fn blob_state(home: &Home, hash: &str) -> (String, u64) {
    let list = home.json(&["blob", "list"]);
    let entry = list.as_array().expect("list").iter().find(|b| b["hash"] == hash).cloned();
    match entry {
        Some(b) => (b["state"].as_str().expect("state").to_owned(), b["held"].as_u64().expect("held")),
        None => ("absent".to_owned(), 0),
    }
}

fn partial_file(home: &Home, hash: &str) -> PathBuf {
    home.dir.join("blobs").join("partial").join(hash)
}

/// Waits until the partial file of `hash` holds at least `bytes`, at most
/// 60 s; panics if the blob completes first.
fn wait_for_partial(home: &Home, hash: &str, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let complete = home.dir.join("blobs").join(&hash[..2]).join(hash);
    loop {
        let held = std::fs::metadata(partial_file(home, hash)).map(|m| m.len()).unwrap_or(0);
        if held >= bytes {
            return;
        }
        assert!(!complete.exists(), "the blob completed before the test could cut it");
        assert!(Instant::now() < deadline, "the transfer of {hash} never reached {bytes} bytes");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_delivery_package_reaches_two_devices_whole_and_moves_once_for_a_hundred_records() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let [a, b] = ["centre-a", "centre-b"].map(|n| Home::init(root.path(), n));
    for device in [&a, &b] {
        enrol(&central, device, "tests", "results");
    }
    let package = write_file(root.path(), "delivery.zip", &noise(50 * MIB, 1));
    let hash = attach(&central, "math-2026", "tests", &package);
    // A hundred more records name the same blob by its reference.
    let reference = central.json(&["get", "delivery", "math-2026"])["fields"]["package"].clone();
    let lines: String = (0..100)
        .map(|n| {
            let line = serde_json::json!({"type": "booklet", "id": format!("b{n}"), "partition": "tests", "fields": {"package": reference}});
            format!("{line}\n")
        })
        .collect();
    let import = write_file(root.path(), "booklets.jsonl", lines.as_bytes());
    let imported = central.json(&["import", import.to_str().expect("path")]);
    assert_eq!(imported["written"], 100, "{imported}");
    for device in [&a, &b] {
        let synced = device.json(&["sync", &server.address]);
        assert_eq!(synced["received"], 101, "{synced}");
        assert_eq!(
            (synced["blobs_received"].as_u64(), synced["blob_bytes_received"].as_u64()),
            (Some(1), Some(50 * MIB as u64)),
            "one copy for 101 records: {synced}"
        );
        let out = root.path().join(format!("{}.zip", device.dir.file_name().expect("name").to_string_lossy()));
        device.json(&["blob", "get", &hash, "--out", out.to_str().expect("path")]);
        assert_eq!(sha256(&out), sha256(&package), "the copy on the device is the package");
        assert_eq!(blob_state(device, &hash), ("complete".to_owned(), 50 * MIB as u64));
        let listed = device.json(&["blob", "list"]);
        assert_eq!(listed[0]["referenced_by"], 101, "{listed}");
        // The sync history says what moved, on both sides.
        let entry = device.json(&["history"]).as_array().expect("ledger").last().cloned().expect("an entry");
        assert_eq!(
            (entry["blobs_received"].as_u64(), entry["blob_bytes_received"].as_u64()),
            (Some(1), Some(50 * MIB as u64)),
            "{entry}"
        );
        let peer = device.peer_id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let history = central.json(&["history"]);
            let sent = history.as_array().expect("ledger").iter().rev().find(|e| e["peer"] == peer.as_str()).cloned();
            if sent.as_ref().is_some_and(|e| e["blob_bytes_sent"] == 50 * MIB as u64) {
                break;
            }
            assert!(Instant::now() < deadline, "the central's ledger never showed the blob sent: {sent:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let event = server.wait_until("a blobs event", |e| e["event"] == "blobs" && e["peer"] == peer.as_str());
        assert_eq!(
            (event["blobs_sent"].as_u64(), event["blob_bytes_sent"].as_u64()),
            (Some(1), Some(50 * MIB as u64)),
            "{event}"
        );
        let again = device.json(&["sync", &server.address]);
        assert_eq!(
            (again["blobs_received"].as_u64(), again["blob_bytes_received"].as_u64()),
            (Some(0), Some(0)),
            "a blob held is never sent again: {again}"
        );
    }
    // Device to device, the central stopped: a third centre gets it from A.
    let c = Home::init(root.path(), "centre-c");
    enrol(&central, &c, "tests", "");
    server.stop();
    let a_server = a.serve();
    let direct = c.json(&["sync", &a_server.address]);
    assert_eq!(direct["blob_bytes_received"], 50 * MIB as u64, "{direct}");
    a_server.stop();
}

#[test]
fn a_transfer_cut_by_kill_9_of_either_side_resumes_after_its_verified_blocks() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "centre");
    enrol(&central, &device, "tests", "");
    let size = 96 * MIB as u64;
    let first = write_file(root.path(), "first.zip", &noise(size as usize, 2));
    let hash = attach(&central, "first", "tests", &first);

    // The receiver, a serving device, killed mid-transfer.
    let device_server = device.serve();
    let mut sync = device.command(&["--json", "sync", &server.address]);
    let mut client = sync.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn ferry sync");
    wait_for_partial(&device, &hash, 8 * MIB as u64);
    device_server.kill();
    let _ = client.wait();
    let held = std::fs::metadata(partial_file(&device, &hash)).expect("a partial blob is left").len();
    assert!(held < size, "killed midway: {held} of {size}");
    let verified = held / BLOB_BLOCK_BYTES * BLOB_BLOCK_BYTES;
    let device_server = device.serve();
    let resumed = device.json(&["sync", &server.address]);
    assert_eq!(
        resumed["blob_bytes_received"].as_u64(),
        Some(size - verified),
        "only what was not verified moves: {resumed}"
    );
    let out = root.path().join("first.out");
    device.json(&["blob", "get", &hash, "--out", out.to_str().expect("path")]);
    assert_eq!(sha256(&out), sha256(&first));
    device_server.stop();

    // The sender, the central, killed mid-transfer to a device syncing
    // without a daemon.
    let second = write_file(root.path(), "second.zip", &noise(size as usize, 3));
    let hash = attach(&central, "second", "tests", &second);
    let mut sync = device.command(&["--json", "sync", &server.address]);
    let client = sync.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn ferry sync");
    wait_for_partial(&device, &hash, 8 * MIB as u64);
    server.kill();
    let cut = client.wait_with_output().expect("ferry sync ends");
    let summary: serde_json::Value = serde_json::from_slice(&cut.stdout).expect("the sync still reports its records");
    assert_eq!(summary["received"], 1, "{summary}");
    assert!(!summary["blob_errors"].as_array().expect("errors").is_empty(), "the cut is reported: {summary}");
    let (state, held) = blob_state(&device, &hash);
    assert_eq!(state, "partial");
    let server = central.serve();
    let resumed = device.json(&["sync", &server.address]);
    let moved = resumed["blob_bytes_received"].as_u64().expect("bytes");
    assert_eq!(moved, size - held / BLOB_BLOCK_BYTES * BLOB_BLOCK_BYTES, "{resumed}");
    assert!(moved < size, "{resumed}");
    let out = root.path().join("second.out");
    device.json(&["blob", "get", &hash, "--out", out.to_str().expect("path")]);
    assert_eq!(sha256(&out), sha256(&second));
    server.stop();
}

/// A device with its key and chain, for a hostile peer to speak as.
fn credentials(home: &Home) -> (SigningKey, Vec<u8>) {
    let secret: [u8; 32] = std::fs::read(home.dir.join("node.key")).expect("key").try_into().expect("32 bytes");
    let pem = std::fs::read_dir(home.dir.join("certs")).expect("certs").next().expect("a chain").expect("entry");
    let chain = certs::pem::decode_chain(&std::fs::read_to_string(pem.path()).expect("pem")).expect("chain");
    (SigningKey::from_bytes(&secret), chain)
}

fn outline_of(bytes: &[u8]) -> (BlobHash, Outline) {
    let mut builder = OutlineBuilder::new();
    builder.update(bytes);
    builder.finish()
}

#[test]
fn a_blob_is_served_only_within_read_scope_and_corrupt_or_forged_bytes_are_refused_at_their_block() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "centre");
    enrol(&central, &device, "results:tc-1,tests", "results:tc-1");
    // Two reports the device attaches; the central gets their records but
    // not their bytes (the device's copies are removed before it syncs).
    let report = noise(3 * BLOB_BLOCK_BYTES as usize + 100, 4);
    let small = noise(1000, 5);
    let report_file = write_file(root.path(), "report.pdf", &report);
    let small_file = write_file(root.path(), "small.pdf", &small);
    let put = |id: &str, file: &Path| attach_as(&device, "result", id, "results:tc-1", "report", file);
    let report_hash = put("r1", &report_file);
    let small_hash = put("r2", &small_file);
    let blobs_dir = device.dir.join("blobs");
    std::fs::remove_dir_all(&blobs_dir).expect("remove the device's blobs");
    let pushed = device.json(&["sync", &server.address]);
    assert_eq!(pushed["sent"], 2, "{pushed}");
    // A package in `tests` and a secret in `results:tc-2`, outside the
    // device's scope.
    let package = write_file(root.path(), "package.zip", &noise(2 * BLOB_BLOCK_BYTES as usize, 6));
    let secret = write_file(root.path(), "secret.pdf", &noise(5000, 7));
    let package_hash = attach(&central, "p1", "tests", &package);
    let secret_hash = attach_as(&central, "result", "x", "results:tc-2", "report", &secret);

    // A second secret whose bytes the central has lost: a peer outside its
    // record's scope must learn nothing of it either.
    let lost = noise(7000, 12);
    let lost_file = write_file(root.path(), "lost.pdf", &lost);
    let lost_hash = attach_as(&central, "result", "y", "results:tc-2", "report", &lost_file);
    std::fs::remove_file(central.dir.join("blobs").join(&lost_hash[..2]).join(&lost_hash)).expect("lose it");

    let (key, chain) = credentials(&device);
    let peer = Hostile::new(key);
    let mut conn = peer.open_blobs(&server.address);
    conn.hello(&chain);
    // Out of scope: the same answer as a hash nobody has.
    let parse = |h: &str| BlobHash::parse(h).expect("hash");
    conn.send(&BlobMessage::Get { hash: parse(&secret_hash), size: 5000 });
    assert_eq!(conn.recv(), Some(BlobMessage::Missing), "a blob outside the read scope is not served");
    conn.send(&BlobMessage::Get { hash: BlobHash([9; 32]), size: 5000 });
    assert_eq!(conn.recv(), Some(BlobMessage::Missing));
    conn.send(&BlobMessage::Get { hash: parse(&package_hash), size: 2 * BLOB_BLOCK_BYTES });
    match conn.recv() {
        Some(BlobMessage::Have(outline)) => assert_eq!(outline.blocks(), 2),
        other => panic!("the package is served within scope, got {other:?}"),
    }
    conn.send(&BlobMessage::From { block: 1 });
    match conn.recv() {
        Some(BlobMessage::Data(block)) => assert_eq!(block.len() as u64, BLOB_BLOCK_BYTES, "from the block asked"),
        other => panic!("expected block 1, got {other:?}"),
    }

    // Push: the central lacks both reports.
    conn.send(&BlobMessage::Lacks {
        hashes: vec![parse(&report_hash), parse(&small_hash), BlobHash([8; 32]), parse(&lost_hash)],
    });
    assert_eq!(
        conn.recv(),
        Some(BlobMessage::Wants { hashes: vec![parse(&report_hash), parse(&small_hash)] }),
        "a blob of a record outside the peer's read scope is not wanted from it, as a hash no record names"
    );
    let (lost_h, lost_outline) = outline_of(&lost);
    conn.send(&BlobMessage::Offer { hash: lost_h, outline: lost_outline });
    assert_eq!(conn.recv(), Some(BlobMessage::Declined), "nor taken from it");
    // A corrupted byte in block 1: blocks 0 is kept, block 1 refused.
    let (hash, outline) = outline_of(&report);
    conn.send(&BlobMessage::Offer { hash, outline: outline.clone() });
    assert_eq!(conn.recv(), Some(BlobMessage::From { block: 0 }));
    let block = BLOB_BLOCK_BYTES as usize;
    conn.send(&BlobMessage::Data(report[..block].to_vec()));
    let mut bad = report[block..2 * block].to_vec();
    bad[1234] ^= 0x10;
    conn.send(&BlobMessage::Data(bad));
    match conn.recv() {
        Some(BlobMessage::Refused { reason }) => assert!(reason.contains("block 1"), "{reason}"),
        other => panic!("a corrupt block is refused, got {other:?}"),
    }
    let event = server.wait_until("the refused block's event", |e| e["event"] == "blobs" && e.get("failure").is_some());
    assert!(event["failure"].as_str().expect("failure").contains("block 1"), "the daemon says so: {event}");
    assert_eq!(
        blob_state(&central, &report_hash),
        ("partial".to_owned(), BLOB_BLOCK_BYTES),
        "only the verified block is kept"
    );

    // Forged: an outline of other bytes for this hash, and a small blob's
    // bytes that are not the hash.
    let mut conn = peer.open_blobs(&server.address);
    conn.hello(&chain);
    let (_, other) = outline_of(&noise(report.len(), 99));
    conn.send(&BlobMessage::Offer { hash, outline: other });
    assert_eq!(conn.recv(), Some(BlobMessage::Declined), "an outline that does not make the hash");
    conn.send(&BlobMessage::Offer { hash: parse(&small_hash), outline: Outline { size: 1000, cvs: Vec::new() } });
    assert_eq!(conn.recv(), Some(BlobMessage::From { block: 0 }));
    conn.send(&BlobMessage::Data(noise(1000, 100)));
    match conn.recv() {
        Some(BlobMessage::Refused { reason }) => assert!(reason.contains("block 0"), "{reason}"),
        other => panic!("bytes of another blob are refused, got {other:?}"),
    }
    assert_eq!(blob_state(&central, &small_hash), ("partial".to_owned(), 0), "nothing of it stored");
    // The daemon is fine, and the honest bytes still go in: resumed after
    // the block it kept.
    std::fs::create_dir_all(&blobs_dir).expect("dir");
    let reattached = device.json(&[
        "put",
        "result",
        "r3",
        "--partition",
        "results:tc-1",
        "--attach",
        &format!("report={}", report_file.display()),
        "--set",
        "copy=1",
    ]);
    assert_eq!(reattached["fields"]["report"]["$blob"]["hash"], report_hash.as_str());
    device.json(&[
        "put",
        "result",
        "r4",
        "--partition",
        "results:tc-1",
        "--attach",
        &format!("report={}", small_file.display()),
    ]);
    let honest = device.json(&["sync", &server.address]);
    assert_eq!(honest["blobs_sent"], 2, "{honest}");
    assert_eq!(honest["blob_bytes_sent"].as_u64(), Some(report.len() as u64 - BLOB_BLOCK_BYTES + 1000), "{honest}");
    assert_eq!(blob_state(&central, &report_hash), ("complete".to_owned(), report.len() as u64));
    assert_eq!(blob_state(&central, &small_hash), ("complete".to_owned(), 1000));
    server.stop();
}

#[test]
fn gc_removes_unreferenced_blobs_and_keeps_referenced_ones() {
    let root = tempfile::tempdir().expect("dir");
    let home = Home::init(root.path(), "central");
    org(&home);
    let kept = write_file(root.path(), "kept.pdf", &noise(10_000, 8));
    let dropped = write_file(root.path(), "dropped.pdf", &noise(600_000, 9));
    let kept_hash = attach(&home, "k", "tests", &kept);
    let dropped_hash = attach(&home, "d", "tests", &dropped);
    // The same file attached to another record is stored once.
    assert_eq!(attach(&home, "d2", "tests", &dropped), dropped_hash);
    assert_eq!(
        std::fs::read_dir(home.dir.join("blobs").join(&dropped_hash[..2])).expect("dir").count(),
        2,
        "one copy and its outline"
    );
    home.json(&["delete", "delivery", "d"]);
    let gc = home.json(&["blob", "gc"]);
    assert_eq!((gc["removed"].as_u64(), gc["kept"].as_u64()), (Some(0), Some(2)), "d2 still references it: {gc}");
    home.json(&["delete", "delivery", "d2"]);
    let gc = home.json(&["blob", "gc"]);
    assert_eq!((gc["removed"].as_u64(), gc["bytes_freed"].as_u64()), (Some(1), Some(600_000)), "{gc}");
    assert_eq!(blob_state(&home, &dropped_hash).0, "absent");
    assert_eq!(blob_state(&home, &kept_hash).0, "complete");
    let said = home.fails(&["blob", "get", &dropped_hash, "--out", root.path().join("x").to_str().expect("path")]);
    assert!(said.contains("no blob"), "{said}");
    // A reference to a blob not held is refused with what to do.
    let said = home.fails(&[
        "put",
        "delivery",
        "z",
        "--partition",
        "tests",
        "--set",
        &format!("package={{\"$blob\":{{\"hash\":\"{dropped_hash}\",\"size\":600000}}}}"),
    ]);
    assert!(said.contains("--attach package=PATH"), "{said}");
    let said =
        home.fails(&["put", "delivery", "z", "--partition", "tests", "--set", "package={\"$blob\":{\"hash\":\"12\"}}"]);
    assert!(said.contains("a blob reference is"), "{said}");
}

#[test]
fn a_bundle_carries_its_records_blobs_checked_block_by_block() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let [a, b] = ["centre-a", "centre-b"].map(|n| Home::init(root.path(), n));
    for device in [&a, &b] {
        enrol(&central, device, "tests", "");
    }
    server.stop();
    let bytes = noise(3 * MIB + 17, 10);
    let package = write_file(root.path(), "package.zip", &bytes);
    let hash = attach(&central, "p1", "tests", &package);
    let bundle = root.path().join("to-centres.bundle");
    let written = central.json(&["bundle", "export", "--out", bundle.to_str().expect("path")]);
    assert_eq!(written["blobs"], 1, "{written}");
    assert!(written["bytes"].as_u64().expect("bytes") > bytes.len() as u64, "{written}");
    let imported = a.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!((imported["received"].as_u64(), imported["blobs_received"].as_u64()), (Some(1), Some(1)), "{imported}");
    let entry = a.json(&["history"]).as_array().expect("ledger").last().cloned().expect("an entry");
    assert_eq!((entry["via"].as_str(), entry["blobs_received"].as_u64()), (Some("bundle"), Some(1)), "{entry}");
    let out = root.path().join("a.zip");
    a.json(&["blob", "get", &hash, "--out", out.to_str().expect("path")]);
    assert_eq!(sha256(&out), sha256(&package));
    // Importing it again stores nothing twice.
    let again = a.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!(again["blob_bytes_received"], 0, "{again}");
    // A byte flipped in the blob's last whole block (block 11; block 12
    // holds the last 17 bytes), on the way to B: the record is imported,
    // the blob refused at that block, and only the blocks before it kept.
    let mut damaged = std::fs::read(&bundle).expect("read");
    let at = damaged.len() - 100;
    damaged[at] ^= 1;
    let damaged_path = write_file(root.path(), "damaged.bundle", &damaged);
    let said = b.fails(&["bundle", "import", damaged_path.to_str().expect("path")]);
    assert!(said.contains("block 11 ") && said.contains("records were imported"), "{said}");
    assert_eq!(b.json(&["get", "delivery", "p1"])["fields"]["package"]["$blob"]["hash"], hash.as_str());
    assert_eq!(blob_state(&b, &hash), ("partial".to_owned(), 11 * BLOB_BLOCK_BYTES));
    // The good bundle then finishes it from there.
    let healed = b.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!(healed["blob_bytes_received"], bytes.len() as u64 - 11 * BLOB_BLOCK_BYTES, "{healed}");
    assert_eq!(blob_state(&b, &hash), ("complete".to_owned(), bytes.len() as u64));
}

/// Eight devices fetching one blob at once all get it whole: the central
/// answers blob streams one new stream at a time, and a stream it dropped
/// unanswered under that load once failed a device's fetch ("connection is
/// closed"); the device now opens another.
#[test]
fn eight_devices_fetching_one_blob_at_once_all_get_it() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let devices: Vec<Home> = (0..8).map(|n| Home::init(root.path(), &format!("centre-{n}"))).collect();
    for device in &devices {
        enrol(&central, device, "tests", "");
    }
    let package = write_file(root.path(), "package.zip", &noise(8 * MIB, 11));
    attach(&central, "p1", "tests", &package);
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let running: Vec<_> = devices.iter().map(|d| s.spawn(|| d.json(&["sync", &server.address]))).collect();
        running.into_iter().map(|t| t.join().expect("a sync")).collect()
    });
    for result in results {
        assert_eq!(result["blob_bytes_received"], 8 * MIB as u64, "{result}");
    }
    server.stop();
}
