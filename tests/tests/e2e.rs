//! End-to-end tests with real `ferry` processes on 127.0.0.1: enrolment,
//! pull, push, device to device, a three-node chain, revocation, expiry,
//! scope enforcement, bad tokens, a receiver killed mid-sync, bundles, and
//! mDNS discovery across network namespaces.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use tests::cli::Home;

/// An org on `central`, and a token for a device of test centre `centre`.
fn org(central: &Home) -> String {
    central.json(&["org", "create", "Riverside", "--authority", "central"])["org_id"]
        .as_str()
        .expect("org id")
        .to_owned()
}

/// A token reading `read` and writing `write` (an empty text: nothing).
fn token(central: &Home, read: &str, write: &str, extra: &[&str]) -> String {
    let mut args = vec!["enroll", "token"];
    for (flag, value) in [("--read", read), ("--write", write)] {
        if !value.is_empty() {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    central.json(&args)["token"].as_str().expect("token").to_owned()
}

fn enrol(device: &Home, token: &str) -> String {
    device.json(&["enroll", token])["certificate_id"].as_str().expect("certificate id").to_owned()
}

fn sync(device: &Home, address: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["sync", address];
    args.extend_from_slice(extra);
    device.json(&args)
}

fn ids(home: &Home) -> Vec<String> {
    let list = home.json(&["list"]);
    let mut ids: Vec<String> =
        list.as_array().expect("list").iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect();
    ids.sort();
    ids
}

#[test]
fn enrol_pull_push_and_sync_device_to_device() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let a = Home::init(root.path(), "a");
    let b = Home::init(root.path(), "b");
    enrol(&a, &token(&central, "tests,results:tc-1", "results:tc-1", &["--types", "test=ro"]));
    enrol(&b, &token(&central, "tests,results:tc-1", "results:tc-1", &["--types", "test=ro"]));
    central.ok(&["put", "test", "t1", "--partition", "tests", "--set", "title=Fractions"]);
    central.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=0.5"]);
    central.ok(&["put", "result", "x", "--partition", "results:tc-2", "--set", "score=1"]);
    // Pull.
    let pulled = sync(&a, &server.address, &["--pull-only"]);
    assert_eq!(pulled["received"], 2, "{pulled}");
    assert_eq!(ids(&a), ["r1", "t1"], "tc-2's result stays on the central");
    // The history names what moved, on both sides.
    let entry = a.json(&["history"]).as_array().expect("ledger").last().cloned().expect("an entry");
    let mut moved: Vec<String> = entry["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| format!("{} {} {}", r["direction"].as_str().expect("direction"), r["type"], r["id"]))
        .collect();
    moved.sort();
    assert_eq!(moved, ["received \"result\" \"r1\"", "received \"test\" \"t1\""], "{entry}");
    let text = central.ok(&["history", "--records"]);
    assert!(text.contains("sent     result r1 in") && text.contains("sent     test t1 in"), "{text}");
    assert!(!text.contains("results:tc-2"), "{text}");
    // Push.
    a.ok(&["put", "result", "r2", "--partition", "results:tc-1", "--set", "score=0.9"]);
    let pushed = sync(&a, &server.address, &["--push-only"]);
    assert_eq!(pushed["sent"], 1, "{pushed}");
    assert_eq!(central.json(&["get", "result", "r2"])["fields"]["score"], 0.9);
    // The no-op is tiny.
    let noop = sync(&a, &server.address, &[]);
    assert!(noop["noop"].as_bool().expect("noop"), "{noop}");
    assert!(noop["bytes_sent"].as_u64().expect("n") + noop["bytes_received"].as_u64().expect("n") < 1024, "{noop}");
    // Device to device, with the central stopped.
    sync(&b, &server.address, &[]);
    server.stop();
    a.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=0.7", "--set", "note=a"]);
    b.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=0.8"]);
    let b_server = b.serve();
    let direct = sync(&a, &b_server.address, &[]);
    assert_eq!((direct["sent"].as_u64(), direct["received"].as_u64()), (Some(1), Some(1)), "{direct}");
    let ra = a.json(&["get", "result", "r1"]);
    let rb = b.json(&["get", "result", "r1"]);
    assert_eq!(ra, rb, "both devices show the same record");
    assert_eq!(ra["fields"]["note"], "a", "one-sided fields merge");
    assert_eq!(ra["conflicts"].as_array().expect("conflicts").len(), 1, "the losing score is kept: {ra}");
    b_server.stop();
}

#[test]
fn a_change_reaches_a_third_node_through_a_second_and_verifies_there() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let [a, b, c] = ["a", "b", "c"].map(|n| Home::init(root.path(), n));
    enrol(&a, &token(&central, "results:tc-1:u1", "results:tc-1:u1", &[]));
    enrol(&b, &token(&central, "results:tc-1", "results:tc-1", &[]));
    enrol(&c, &token(&central, "results:tc-1", "", &[]));
    server.stop();
    a.ok(&["put", "result", "from-a", "--partition", "results:tc-1:u1", "--set", "score=3"]);
    let b_server = b.serve();
    sync(&a, &b_server.address, &["--filter", "results:tc-1:u1"]);
    b_server.stop();
    let c_server = c.serve();
    let relayed = sync(&b, &c_server.address, &[]);
    assert_eq!(relayed["sent"], 1, "{relayed}");
    c_server.stop();
    let record = c.json(&["get", "result", "from-a"]);
    assert_eq!(record["fields"]["score"], 3);
    let history = c.json(&["history"]);
    let entry = history.as_array().expect("ledger").last().expect("an entry").clone();
    assert_eq!((entry["received"].as_u64(), entry["rejected"].as_u64()), (Some(1), Some(0)), "{entry}");
    assert_eq!(entry["peer"], b.peer_id(), "C got it from B, signed by A");
}

#[test]
fn a_revoked_device_is_refused_and_its_later_changes_are_refused_when_relayed() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let d = Home::init(root.path(), "d");
    let e = Home::init(root.path(), "e");
    let d_cert = enrol(&d, &token(&central, "results:tc-1", "results:tc-1", &[]));
    enrol(&e, &token(&central, "results:tc-1", "results:tc-1", &[]));
    d.ok(&["put", "result", "early", "--partition", "results:tc-1", "--set", "score=1"]);
    sync(&d, &server.address, &[]);
    let revoked = central.json(&["cert", "revoke", &d_cert]);
    assert_eq!(revoked["revoked"], true);
    d.ok(&["put", "result", "late", "--partition", "results:tc-1", "--set", "score=2"]);
    let refused = d.fails(&["sync", &server.address]);
    assert!(refused.contains("revoked"), "{refused}");
    // E has not heard of the revocation yet and takes D's change...
    let e_server = e.serve();
    sync(&d, &e_server.address, &[]);
    e_server.stop();
    assert!(ids(&e).contains(&"late".to_owned()));
    // ...but the central refuses it when E relays it, and keeps D's earlier one.
    let relayed = sync(&e, &server.address, &[]);
    assert_eq!(relayed["rejected_by_peer"], 1, "{relayed}");
    // The enrolments' fetches of the org's rules, and D's sync, came first.
    let synced = loop {
        let synced = server.wait_for("synced");
        if synced["peer"] == e.peer_id().as_str() && synced["noop"] != true {
            break synced;
        }
    };
    assert_eq!(synced["rejected"], 1, "{synced}");
    assert!(synced["rejections"].to_string().contains("revoked"), "{synced}");
    assert!(!ids(&central).contains(&"late".to_owned()));
    assert!(ids(&central).contains(&"early".to_owned()), "changes made before the revocation stay valid");
    server.stop();
}

#[test]
fn an_expired_certificate_is_refused() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&device, &token(&central, "results:tc-1", "results:tc-1", &["--days", "1"]));
    server.stop();
    // The central's clock two days on: the device's certificate has expired.
    let later = central.serve_with(&[], &[("FERRY_CLOCK_OFFSET_S", "172800")]);
    let refused = device.fails(&["sync", &later.address]);
    assert!(refused.contains("expired"), "{refused}");
    later.stop();
}

#[test]
fn a_write_outside_the_scope_is_refused_locally_and_by_the_receiver() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    let org_id = org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&device, &token(&central, "results:tc-1", "results:tc-1", &[]));
    server.stop();
    let refused = device.fails(&["put", "result", "x", "--partition", "results:tc-2", "--set", "score=1"]);
    assert!(refused.contains("write scope"), "{refused}");
    // Forced: a bundle signed by the device, carrying a change outside its
    // write scope. The central's import refuses that change and keeps the other.
    let bundle = root.path().join("forced.bundle");
    forge_bundle(&device, &org_id, &bundle);
    let imported = central.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!((imported["received"].as_u64(), imported["rejected"].as_u64()), (Some(2), Some(1)), "{imported}");
    assert!(imported["rejections"].to_string().contains("outside what this peer may send"), "{imported}");
    assert_eq!(ids(&central), ["inside"]);
}

/// Writes a bundle, as `ferry bundle export` would, holding two changes the
/// device signed: one inside its write scope and one outside.
fn forge_bundle(device: &Home, org_id: &str, path: &std::path::Path) {
    use engine::wire::{Batch, Group, GroupChange, Message, Plan};
    use engine::{AuthorKey, Change, Hlc, InstanceId, Op, RecordId, RecordKey, Value};
    let secret: [u8; 32] = std::fs::read(device.dir.join("node.key")).expect("key").try_into().expect("32 bytes");
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    let org = partitions::OrgId::parse(org_id).expect("org");
    let pem_path =
        std::fs::read_dir(device.dir.join("certs")).expect("certs").next().expect("a chain").expect("entry").path();
    let chain = certs::pem::decode_chain(&std::fs::read_to_string(pem_path).expect("pem")).expect("chain");
    let author = InstanceId([0x77; 16]);
    let mut groups = Vec::new();
    for (counter, (partition, id)) in [("results:tc-1", "inside"), ("results:tc-2", "outside")].into_iter().enumerate()
    {
        let mut change = Change {
            record: RecordKey {
                partition: partitions::Partition::resolve(org, partition).expect("p"),
                record_type: partitions::RecordType::parse("result").expect("t"),
                id: RecordId::parse(id).expect("id"),
            },
            author,
            author_key: AuthorKey(key.verifying_key().to_bytes()),
            counter: counter as u64 + 1,
            hlc: Hlc::from_parts(node::node::now_ms(), 0),
            authority: None,
            seen: Default::default(),
            op: Op::Put { replace: true, fields: BTreeMap::from([("score".to_owned(), Some(Value::Int(1)))]) },
            bases: Default::default(),
            seal: engine::Seal::Single([0; 64]),
        };
        change.sign(&key);
        groups.push(Group {
            partition: change.record.partition.clone(),
            record_type: change.record.record_type.clone(),
            author,
            author_key: change.author_key,
            after: 0,
            changes: vec![GroupChange::from_change(&change)],
        });
    }
    let header = serde_json::json!({
        "org": org_id,
        "exporter": partitions::hex::encode(&key.verifying_key().to_bytes()),
        "credentials": data_encoding::BASE64.encode(&chain),
        "filter": [format!("{org_id}:results")],
        "created_at_ms": node::node::now_ms(),
    });
    let mut out = b"FERRY-BUNDLE 1\n".to_vec();
    let mut frame = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    frame(&serde_json::to_vec(&header).expect("json"));
    frame(&engine::wire::encode_message(&Message::Batch(Batch {
        seq: 0,
        plan: Plan::default(),
        groups,
        chains: vec![chain.clone()],
        runs: Vec::new(),
    })));
    frame(&engine::wire::encode_message(&Message::End { batches: 1 }));
    std::fs::write(path, out).expect("write bundle");
}

#[test]
fn wrong_and_used_enrolment_tokens_are_refused() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    let good = token(&central, "results:tc-1", "results:tc-1", &[]);
    // A damaged token does not even parse.
    let damaged = format!("{}x", &good[..good.len() - 1]);
    assert!(device.fails(&["enroll", &damaged]).contains("not a valid enrolment token"));
    // A token with another secret is well-formed but refused by the issuer.
    let mut forged = certs::Token::decode(&good).expect("token");
    forged.secret[0] ^= 1;
    let refused = device.fails(&["enroll", &forged.encode()]);
    assert!(refused.contains("refused"), "{refused}");
    assert!(device.json(&["cert", "list"]).as_array().expect("list").is_empty(), "nothing was issued");
    enrol(&device, &good);
    let other = Home::init(root.path(), "other");
    let used = other.fails(&["enroll", &good]);
    assert!(used.contains("used up"), "{used}");
    server.stop();
}

#[test]
fn a_receiver_killed_mid_sync_loses_nothing_and_applies_nothing_twice() {
    const RECORDS: usize = 6000;
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    central.configure("batch_changes = 200\n");
    org(&central);
    let ndjson = root.path().join("records.ndjson");
    let mut file = std::fs::File::create(&ndjson).expect("file");
    for seq in 0..RECORDS as u64 {
        let fields = engine::workload::result_fields(9, seq, 0);
        let fields: serde_json::Map<String, serde_json::Value> =
            fields.iter().map(|(k, v)| (k.clone(), node::json::to_json(v))).collect();
        writeln!(file, "{}", serde_json::json!({ "type": "result", "id": format!("r{seq:05}"), "partition": "results", "fields": fields })).expect("write");
    }
    drop(file);
    let imported = central.json(&["import", ndjson.to_str().expect("path")]);
    assert_eq!(imported["written"], RECORDS as u64);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&device, &token(&central, "results", "results", &[]));
    // Pull, and kill the receiving process (SIGKILL) once batches have landed.
    let mut child = device
        .command(&["--progress", "sync", &server.address, "--pull-only"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut killed_at = None;
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("progress: received ")
            && let Some((done, total)) = rest.split_once('/')
        {
            let (done, total): (usize, usize) = (done.parse().expect("n"), total.parse().expect("n"));
            if done > 0 && done < total {
                child.kill().expect("SIGKILL");
                killed_at = Some(done);
                break;
            }
        }
    }
    child.wait().expect("reap");
    let killed_at = killed_at.expect("the sync was killed in the middle");
    let held = ids(&device).len();
    assert!(held >= killed_at && held < RECORDS, "held {held} after a kill at {killed_at}");
    // Restart and sync again.
    let resumed = sync(&device, &server.address, &[]);
    let received = resumed["received"].as_u64().expect("n") as usize;
    assert_eq!(held + received, RECORDS, "nothing applied twice: {held} held + {received} received");
    assert_eq!(ids(&device).len(), RECORDS, "nothing lost");
    let again = sync(&device, &server.address, &[]);
    assert!(again["noop"].as_bool().expect("noop"), "frontiers agree: {again}");
    let instances = device.json(&["id"])["instances"].as_array().expect("instances").len();
    assert_eq!(instances, 2, "the killed store continues under a fresh instance");
    server.stop();
}

#[test]
fn a_bundle_carries_changes_from_one_node_to_another() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&device, &token(&central, "results:tc-1,tests", "results:tc-1", &[]));
    sync(&device, &server.address, &[]);
    server.stop();
    central.ok(&["put", "test", "t9", "--partition", "tests", "--set", "title=New test"]);
    central.ok(&["put", "result", "secret", "--partition", "results:tc-2", "--set", "score=1"]);
    // The device writes a frontier file; the central exports what it lacks.
    let frontier = root.path().join("device.frontier");
    device.ok(&["bundle", "frontier", "--out", frontier.to_str().expect("path")]);
    let bundle = root.path().join("to-device.bundle");
    let exported = central.json(&[
        "bundle",
        "export",
        "--out",
        bundle.to_str().expect("path"),
        "--since",
        frontier.to_str().expect("path"),
    ]);
    assert_eq!(exported["changes"], 1, "only the new test, not tc-2's result: {exported}");
    let imported = device.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!((imported["received"].as_u64(), imported["rejected"].as_u64()), (Some(1), Some(0)), "{imported}");
    assert_eq!(device.json(&["get", "test", "t9"])["fields"]["title"], "New test");
    let history = device.json(&["history"]);
    assert_eq!(history.as_array().expect("ledger").last().expect("entry")["via"], "bundle");
    // Importing the same bundle again changes nothing.
    let again = device.json(&["bundle", "import", bundle.to_str().expect("path")]);
    assert_eq!(again["updated"], 0);
    // And the way back: a bundle for the central from its last sync.
    device.ok(&["put", "result", "from-device", "--partition", "results:tc-1", "--set", "score=2"]);
    let back = root.path().join("to-central.bundle");
    let exported =
        device.json(&["bundle", "export", "--out", back.to_str().expect("path"), "--for", &central.peer_id()]);
    // The device's record of the central dates from their last sync: it
    // carries the new result, and the test the central already has.
    assert_eq!(exported["changes"], 2, "{exported}");
    let imported = central.json(&["bundle", "import", back.to_str().expect("path")]);
    assert_eq!((imported["updated"].as_u64(), imported["skipped"].as_u64()), (Some(1), Some(1)), "{imported}");
    assert_eq!(central.json(&["get", "result", "from-device"])["fields"]["score"], 2);
    // A truncated bundle is refused, and the refusal is in the ledger.
    let bytes = std::fs::read(&back).expect("bundle");
    let cut = root.path().join("cut.bundle");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).expect("write");
    let refused = central.fails(&["bundle", "import", cut.to_str().expect("path")]);
    assert!(refused.contains("truncated"), "{refused}");
    let history = central.json(&["history"]);
    let last = history.as_array().expect("ledger").last().expect("entry").clone();
    assert!(last["outcome"].as_str().expect("outcome").starts_with("failed: "), "{last}");
    assert_eq!(last["via"], "bundle");
}

/// docs/guide.md section 3 with the namespace script it ships: a hub in
/// one namespace enrols a device in each, goes away, and one device finds
/// the other by mDNS and syncs with it by peer id.
#[test]
fn mdns_finds_a_peer_across_network_namespaces() {
    let Some(namespaces) = Namespaces::create() else { return };
    let root = tempfile::tempdir().expect("dir");
    let in_ns = |ns: usize, home: &Home, args: &[&str]| {
        let mut command = std::process::Command::new("ip");
        command.args(["netns", "exec", &namespaces.names[ns]]).arg(tests::cli::ferry_binary());
        command.arg("--home").arg(&home.dir).args(args).env("RUST_LOG", "warn");
        command
    };
    let hub = Home::init(root.path(), "hub");
    org(&hub);
    let listen = format!("/ip4/{}/tcp/0", namespaces.addresses[0]);
    let hub_server =
        tests::cli::Server::start(&hub, in_ns(0, &hub, &["--json", "serve", "--listen", &listen, "--no-mdns"]), &[]);
    let [a, b] = ["a", "b"].map(|n| Home::init(root.path(), n));
    for (ns, device) in [(0, &a), (1, &b)] {
        let token = token(&hub, "results:tc-1", "results:tc-1", &[]);
        let out = in_ns(ns, device, &["--json", "enroll", &token]).output().expect("enroll");
        assert!(out.status.success(), "{}: {}", device.name, String::from_utf8_lossy(&out.stderr));
    }
    hub_server.stop();
    a.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=0.8"]);
    let a_server = tests::cli::Server::start(&a, in_ns(0, &a, &["--json", "serve"]), &[]);
    let out = in_ns(1, &b, &["--json", "peers"]).output().expect("ferry peers");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let a_id = a.peer_id();
    assert!(peers.as_array().expect("list").iter().any(|p| p["peer_id"] == a_id.as_str()), "{peers}");
    let out = in_ns(1, &b, &["--json", "sync", &a_id]).output().expect("ferry sync");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.json(&["get", "result", "r1"])["fields"]["score"], 0.8);
    a_server.stop();
}

/// The two namespaces of `tests/netns/two-lans.sh`, tagged with this
/// process's id (tests may run at once), removed on drop.
struct Namespaces {
    tag: String,
    names: [String; 2],
    addresses: [&'static str; 2],
}

impl Namespaces {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("netns/two-lans.sh")
    }

    /// `None` (the test is skipped, saying why) when the test is not root:
    /// `ip netns` needs root. As root (CI) the namespaces must come up: a
    /// machine that refuses them (the script exits 77) fails the test.
    fn create() -> Option<Namespaces> {
        let uid = std::process::Command::new("id").arg("-u").output().expect("run id -u");
        let uid = String::from_utf8_lossy(&uid.stdout).trim().to_owned();
        if uid != "0" {
            println!("skipping mDNS across namespaces: `ip netns` needs root, and this test runs as uid {uid}");
            return None;
        }
        let tag = format!("e{}", std::process::id());
        let out = std::process::Command::new(Self::script()).args(["up", &tag]).output().expect("run two-lans.sh");
        assert!(
            out.status.code() != Some(77),
            "running as root, yet two-lans.sh cannot create network namespaces: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        assert!(out.status.success(), "two-lans.sh up failed: {}", String::from_utf8_lossy(&out.stderr));
        let names = [format!("ferry-a-{tag}"), format!("ferry-b-{tag}")];
        Some(Namespaces { tag, names, addresses: ["10.213.0.1", "10.213.0.2"] })
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script()).args(["down", &self.tag]).output();
    }
}

/// `ferry status` on a serving node: who it is, its certificate, and each
/// peer that synced with it with that sync's outcome and counts; no
/// session is left in flight. A node that is not serving says how to get
/// a status instead.
#[test]
fn status_shows_each_peer_with_its_last_sync() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    let org_id = org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    enrol(&device, &token(&central, "results:tc-1", "results:tc-1", &[]));
    central.ok(&["put", "result", "r1", "--partition", "results:tc-1", "--set", "score=0.5"]);
    let pulled = sync(&device, &server.address, &["--pull-only"]);
    assert_eq!(pulled["received"], 1, "{pulled}");

    let status = central.json(&["status"]);
    assert_eq!(status["peer_id"], central.peer_id(), "{status}");
    assert!(status["listening"].as_array().is_some_and(|l| l.iter().any(|a| a == &server.address)), "{status}");
    let certificates = status["certificates"].as_array().expect("certificates");
    assert!(certificates.iter().any(|c| c["org_id"] == org_id.as_str()), "{status}");
    let peer = &status["peers"][device.peer_id()];
    assert_eq!(peer["last_sync"]["outcome"], "completed", "{status}");
    assert_eq!(peer["last_sync"]["report"]["sent"], 1, "the central sent the device one record: {status}");
    assert_eq!(status["sessions"], serde_json::json!([]), "{status}");
    let text = central.ok(&["status"]);
    assert!(text.contains(&format!("peer {}", device.peer_id())) && text.contains("completed"), "{text}");

    let refused = device.fails(&["status"]);
    assert!(refused.contains("ferry serve"), "{refused}");
    server.stop();
}
