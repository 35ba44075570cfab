//! The command line at its edges, with real `ferry` processes on 127.0.0.1:
//! a serve that fails to start, the local API under many clients and a
//! stopped node, and the text output people read.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use tests::cli::{Home, within};

/// The instance the store continues; a store left unclean starts a fresh one.
fn instance(home: &Home) -> String {
    home.json(&["id"])["instance_id"].as_str().expect("instance id").to_owned()
}

#[test]
fn a_serve_that_cannot_start_leaves_the_store_clean() {
    let root = tempfile::tempdir().expect("dir");
    let home = Home::init(root.path(), "node");
    let before = instance(&home);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    for listen in ["/ip4/127.0.0.1/tcpp/1".to_owned(), format!("/ip4/127.0.0.1/tcp/{port}")] {
        let reason = home.fails(&["serve", "--no-mdns", "--listen", &listen]);
        assert_eq!(instance(&home), before, "after {reason}: the store was not closed cleanly");
    }
}

/// Reads one line, or fails the test after `limit`.
fn line_within(reader: &mut BufReader<UnixStream>, limit: Duration) -> String {
    reader.get_ref().set_read_timeout(Some(limit)).expect("read timeout");
    let mut line = String::new();
    reader.read_line(&mut line).unwrap_or_else(|e| panic!("no line from the node within {limit:?}: {e}"));
    line
}

/// Sends a request and returns the connection, to read what comes back.
fn ask(socket: &Path, request: &str) -> BufReader<UnixStream> {
    let mut stream = UnixStream::connect(socket).expect("connect to control.sock");
    writeln!(stream, "{request}").expect("send a request");
    BufReader::new(stream)
}

/// A watcher, once the node said it is admitted.
fn watcher(socket: &Path) -> BufReader<UnixStream> {
    let mut reader = ask(socket, r#"{"op":"watch"}"#);
    let first = line_within(&mut reader, Duration::from_secs(30));
    assert!(first.contains(r#""event":"watching""#), "a watcher is told it is admitted: {first}");
    reader
}

#[test]
fn idle_and_watching_clients_never_starve_a_command() {
    let root = tempfile::tempdir().expect("dir");
    let home = Home::init(root.path(), "node");
    home.ok(&["org", "create", "District"]);
    let server = home.serve();
    let socket = home.dir.join("control.sock");
    let mut watchers: Vec<BufReader<UnixStream>> = (0..32).map(|_| watcher(&socket)).collect();
    let idle: Vec<UnixStream> = (0..40).map(|_| UnixStream::connect(&socket).expect("connect")).collect();
    // Commands still run, and the watchers see their writes.
    let put = home.command(&["--json", "put", "result", "r1", "--partition", "results", "--set", "score=1"]);
    let out = within(put, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The write's `written` and its record's `changed` come from two
    // places in the node, in either order.
    let seen: Vec<String> = (0..2).map(|_| line_within(&mut watchers[31], Duration::from_secs(30))).collect();
    assert!(seen.iter().any(|line| line.contains(r#""event":"written""#)), "{seen:?}");
    assert!(seen.iter().any(|line| line.contains(r#""event":"changed""#) && line.contains(r#""id":"r1""#)), "{seen:?}");
    let out = within(home.command(&["--json", "list"]), Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One watcher too many is told why, at once.
    let mut extra = ask(&socket, r#"{"op":"watch"}"#);
    let refused = line_within(&mut extra, Duration::from_secs(30));
    assert!(refused.contains("32 clients are watching already"), "{refused}");
    // Clients that never send a request are let go with a reason.
    for stream in idle {
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
        let mut said = String::new();
        BufReader::new(stream).read_to_string(&mut said).expect("the node closes an idle client");
        assert!(said.contains("no request within"), "{said}");
    }
    drop(watchers);
    server.stop();
}

#[test]
fn a_watcher_that_hangs_up_frees_its_place_at_once() {
    let root = tempfile::tempdir().expect("dir");
    let home = Home::init(root.path(), "node");
    let server = home.serve();
    let socket = home.dir.join("control.sock");
    let watchers: Vec<BufReader<UnixStream>> = (0..32).map(|_| watcher(&socket)).collect();
    let mut extra = ask(&socket, r#"{"op":"watch"}"#);
    assert!(line_within(&mut extra, Duration::from_secs(30)).contains("error"), "the places are full");
    // No event happens after the hang-ups: the node notices them by itself.
    drop(watchers);
    let deadline = Instant::now() + Duration::from_secs(30);
    let admitted = loop {
        let mut reader = ask(&socket, r#"{"op":"watch"}"#);
        let first = line_within(&mut reader, Duration::from_secs(30));
        if first.contains(r#""event":"watching""#) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(admitted, "the places of watchers that hung up were never freed");
    server.stop();
}

#[test]
fn a_command_on_a_stopped_node_fails_with_a_reason_instead_of_hanging() {
    let root = tempfile::tempdir().expect("dir");
    let home = Home::init(root.path(), "node");
    let server = home.serve();
    server.signal("STOP");
    let out = within(home.command(&["list"]), Duration::from_secs(60));
    server.signal("CONT");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("said nothing for 10 s: is `ferry serve` stopped or stuck?"), "{stderr}");
    server.stop();
}

/// A central serving an org, and a device enrolled in it with type modes.
fn central_and_device(root: &Path) -> (Home, tests::cli::Server, Home) {
    let central = Home::init(root, "central");
    central.ok(&["org", "create", "District", "--authority", "central"]);
    let server = central.serve();
    let device = Home::init(root, "device");
    let token =
        central.json(&["enroll", "token", "--read", "tests,results", "--write", "results", "--types", "test=ro"]);
    device.json(&["enroll", token["token"].as_str().expect("token")]);
    (central, server, device)
}

#[test]
fn text_output_is_readable_and_agrees_with_the_json() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, device) = central_and_device(root.path());
    central.ok(&["put", "test", "t1", "--partition", "tests", "--set", "title=Fractions"]);
    device.ok(&["put", "result", "r1", "--partition", "results", "--set", "score=0.5"]);
    // `ferry id` is text, not JSON inside text.
    let id = device.ok(&["id"]);
    assert!(!id.contains('{') && !id.contains("\":"), "{id}");
    assert!(id.contains(&format!("peer id: {}", device.peer_id())), "{id}");
    // Byte counts: the summary and the ledger say the same.
    let synced = device.json(&["sync", &server.address]);
    let history = device.json(&["history"]);
    let entry = history.as_array().and_then(|h| h.last()).expect("a ledger entry");
    assert_eq!(
        (&synced["bytes_sent"], &synced["bytes_received"]),
        (&entry["bytes_sent"], &entry["bytes_received"]),
        "sync {synced}\nhistory {entry}"
    );
    // Type modes in `cert list`; revocation time in ISO 8601.
    let certs = central.ok(&["cert", "list"]);
    assert!(certs.contains("types [test=ro]"), "{certs}");
    let issued = central.json(&["cert", "list"]);
    let device_cert = issued
        .as_array()
        .and_then(|list| list.iter().find(|c| c["held"] == false))
        .and_then(|c| c["certificate_id"].as_str())
        .expect("the device's certificate")
        .to_owned();
    let revoked = central.ok(&["cert", "revoke", &device_cert]);
    let at = revoked.lines().find_map(|l| l.strip_prefix("revoked at: ")).unwrap_or_else(|| panic!("{revoked}"));
    assert!(at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "not ISO 8601: {at}");
    // The revoked device's next sync fails; the history shows the whole
    // peer id, and each failure's reason on a line of its own.
    assert!(!device.run(&["sync", &server.address]).status.success());
    let central_id = central.peer_id();
    let text = device.ok(&["history"]);
    assert!(text.lines().any(|l| l.contains(&central_id) && l.contains("completed")), "{text}");
    assert!(text.lines().any(|l| l.contains(&central_id) && l.contains("failed")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("    failed: ")), "{text}");
    for line in text.lines().filter(|l| !l.starts_with(' ')) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns.len(), 15, "a reason spilled into the columns: {line:?}");
    }
    server.stop();
}

#[test]
fn an_import_through_serve_tells_the_client_what_was_rejected() {
    let root = tempfile::tempdir().expect("dir");
    let home = Home::init(root.path(), "node");
    home.ok(&["org", "create", "District"]);
    let server = home.serve();
    let file = root.path().join("records.ndjson");
    std::fs::write(
        &file,
        "{\"type\":\"result\",\"id\":\"r1\",\"partition\":\"results\",\"fields\":{}}\n{\"type\":\"result\",\"id\":\"r2\",\"partition\":\"results\",\"fields\":{},\"colour\":\"red\"}\n",
    )
    .expect("write");
    let out = home.run(&["--json", "import", file.to_str().expect("utf-8 path")]);
    assert!(!out.status.success(), "a rejected line fails the import");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the counts, as JSON");
    assert_eq!((result["written"].as_u64(), result["rejected"].as_u64()), (Some(1), Some(1)), "{result}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"rejected: line 2: unknown key "colour""#), "{stderr}");
    server.stop();
}

/// A SIGTERM sent the moment `ferry serve` announces itself (here while it
/// is stopped, so it lands before the node gets any further) stops it
/// cleanly. Before, the handler was installed only once everything had
/// started, and such a signal killed the process with its store open.
#[test]
fn a_sigterm_right_after_the_listening_line_stops_the_node_cleanly() {
    let root = tempfile::tempdir().expect("dir");
    let home = Home::init(root.path(), "node");
    for _ in 0..5 {
        let server = home.serve_with(&["--http", "127.0.0.1:0"], &[]);
        server.signal("STOP");
        server.signal("TERM");
        server.signal("CONT");
        server.wait_stopped();
    }
}
