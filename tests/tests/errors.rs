//! Errors a user can act on, from real `ferry` processes: each is one line
//! that names the cause and the side it is on, never a library's raw,
//! repeated text, and shows times as dates.

use std::io::{BufRead, BufReader, Write};

use tests::cli::Home;

/// One row: who runs what (with which environment), and what the one-line
/// error must say.
struct Row<'a> {
    what: &'a str,
    home: &'a Home,
    args: Vec<String>,
    env: &'a [(&'a str, &'a str)],
    says: Vec<String>,
}

fn row<'a>(what: &'a str, home: &'a Home, args: &[&str], env: &'a [(&'a str, &'a str)], says: &[&str]) -> Row<'a> {
    let owned = |items: &[&str]| items.iter().map(|a| (*a).to_owned()).collect();
    Row { what, home, args: owned(args), env, says: owned(says) }
}

/// Runs the row's command; it must fail with exactly one line on stderr.
fn one_line_error(row: &Row<'_>) -> String {
    let mut command = row.home.command(&row.args.iter().map(String::as_str).collect::<Vec<_>>());
    for (k, v) in row.env {
        command.env(k, v);
    }
    let out = command.output().expect("run ferry");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{}: should have failed", row.what);
    assert_eq!(stderr.lines().count(), 1, "{}: not one line: {stderr}", row.what);
    stderr.trim_end().to_owned()
}

/// Ten digits in a row: epoch seconds where a date belongs.
fn has_epoch_seconds(text: &str) -> bool {
    text.as_bytes().windows(10).any(|w| w.iter().all(u8::is_ascii_digit))
}

#[test]
fn errors_name_the_cause_and_the_side_in_one_line() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    let org_id = central.json(&["org", "create", "Riverside"])["org_id"].as_str().expect("org").to_owned();
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    let token = central.json(&["enroll", "token", "--read", "results", "--write", "results"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    device.json(&["enroll", &token]);
    // A node of another org: it holds no certificate of the device's.
    let stranger = Home::init(root.path(), "stranger");
    let other_org = stranger.json(&["org", "create", "Elsewhere"])["org_id"].as_str().expect("org").to_owned();
    let stranger_server = stranger.serve();
    let big = root.path().join("big.pem");
    std::fs::write(&big, "x".repeat(5 * 1024 * 1024)).expect("write");
    let long_field = format!("{}=1", "f".repeat(200));
    let expected_org = format!("org {org_id}");

    let rows = [
        row(
            "nothing listens",
            &device,
            &["sync", "/ip4/127.0.0.1/tcp/1"],
            &[],
            &["ferry: cannot reach 127.0.0.1:1: connection refused"],
        ),
        row(
            "a malformed multiaddr",
            &device,
            &["sync", "/ip4/127.0.0.1/tcpx/1"],
            &[],
            &["\"/ip4/127.0.0.1/tcpx/1\" is not a multiaddr", "/ip4/192.0.2.10/tcp/4040"],
        ),
        row(
            "the answering node lacks the certificate",
            &device,
            &["sync", &stranger_server.address],
            &[],
            &["the answering node holds no certificate for", &expected_org],
        ),
        row(
            "this node lacks the certificate",
            &device,
            &["sync", &server.address, "--org", &other_org],
            &[],
            &["this node holds no certificate for org", "ferry enroll"],
        ),
        row(
            "a filter outside the read scope",
            &device,
            &["sync", &server.address, "--filter", "tests"],
            &[],
            &["--filter tests is outside this node's read scope", "results"],
        ),
        row(
            "a token from a node that is not serving",
            &device,
            &["enroll", "token", "--read", "results"],
            &[],
            &["start `ferry serve`"],
        ),
        row(
            "this node's clock is behind its certificate",
            &device,
            &["put", "result", "r1", "--partition", "results", "--set", "a=1"],
            &[("FERRY_CLOCK_OFFSET_S", "-172800")],
            &["this node's clock reads 20", "its certificate for", "starts at 20", "; check the clock"],
        ),
        row(
            "a request over the local API's limit",
            &central,
            &["cert", "import", big.to_str().expect("utf-8 path")],
            &[],
            &["more than the local API's limit of 4194304 bytes"],
        ),
        row(
            "a field name over the limit",
            &device,
            &["put", "result", "r1", "--partition", "results", "--set", &long_field],
            &[],
            &["is 200 bytes, more than the 128 allowed"],
        ),
    ];
    for row in &rows {
        let error = one_line_error(row);
        for part in &row.says {
            assert!(error.contains(part), "{}: {error:?} does not say {part:?}", row.what);
        }
        assert!(!has_epoch_seconds(&error), "{}: epoch seconds in {error:?}", row.what);
    }

    // An application writing to the local API is told the limit too.
    let mut socket = std::os::unix::net::UnixStream::connect(central.dir.join("control.sock")).expect("connect");
    let _ = socket.write_all(&vec![b'x'; 5 * 1024 * 1024]);
    let mut answer = String::new();
    BufReader::new(&socket).read_line(&mut answer).expect("an answer");
    assert!(answer.contains("more than the local API's limit of 4194304 bytes"), "{answer}");
    stranger_server.stop();
    server.stop();
}
