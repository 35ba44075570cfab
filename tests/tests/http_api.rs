//! The HTTP API and its change feed (SPEC §6.3) with real `ferry serve
//! --http` processes on 127.0.0.1, read by a client made of the standard
//! library alone (`tests::http`), as an app in any language would.

use tests::cli::{Home, Server};
use tests::http::request;

fn serving(root: &std::path::Path, name: &str) -> (Home, Server, String, String) {
    let home = Home::init(root, name);
    home.json(&["org", "create", "District", "--authority", "central"]);
    let server = home.serve_with(&["--http", "127.0.0.1:0"], &[]);
    let url = server.wait_for("http")["url"].as_str().expect("url").to_owned();
    let token = std::fs::read_to_string(home.dir.join("api-token")).expect("api-token").trim().to_owned();
    (home, server, url, token)
}

#[test]
fn every_route_needs_the_token_and_answers_json_with_status_codes() {
    let root = tempfile::tempdir().expect("dir");
    let (home, server, url, token) = serving(root.path(), "central");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.dir.join("api-token")).expect("token file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the node's user reads the token");
    let put = r#"{"set":{"score":0.5,"learner":"l-7"}}"#;
    // No token, or another one: 401, and nothing written or read.
    for given in [None, Some("0123")] {
        let answer = request(&url, "PUT", "/v1/records/result/r1?partition=results", given, Some(put));
        assert_eq!(answer.status, 401, "{answer:?}");
        assert!(answer.json()["error"].as_str().expect("reason").contains("api-token"), "{answer:?}");
        assert_eq!(request(&url, "GET", "/v1/changes", given, None).status, 401);
    }
    let missing = request(&url, "GET", "/v1/records/result/r1?partition=results", Some(&token), None);
    assert_eq!(missing.status, 404, "the refused PUT wrote nothing: {missing:?}");
    // Write, read, list, delete.
    let written = request(&url, "PUT", "/v1/records/result/r1?partition=results", Some(&token), Some(put));
    assert_eq!(written.status, 200, "{written:?}");
    assert_eq!(written.json()["fields"]["score"], 0.5);
    let got = request(&url, "GET", "/v1/records/result/r1?partition=results", Some(&token), None);
    assert_eq!((got.status, &got.json()["fields"]["learner"]), (200, &"l-7".into()));
    assert_eq!(home.json(&["get", "result", "r1"])["fields"]["learner"], "l-7", "the CLI sees what HTTP wrote");
    let listed = request(&url, "GET", "/v1/records?type=result", Some(&token), None);
    assert_eq!(listed.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(listed.lines().iter().map(|r| r["id"].clone()).collect::<Vec<_>>(), ["r1"]);
    let deleted = request(&url, "DELETE", "/v1/records/result/r1?partition=results", Some(&token), None);
    assert_eq!((deleted.status, &deleted.json()["deleted"]), (200, &true.into()), "{deleted:?}");
    // Bad input gets a reason and changes nothing.
    for (method, path, body, reason) in [
        ("PUT", "/v1/records/result/r2?partition=results", "{\"set\":", "the body must be"),
        ("PUT", "/v1/records/result/r2?partition=results", "{\"sett\":{}}", "unknown field"),
        ("PUT", "/v1/records/result/r2", "{\"set\":{\"a\":1}}", "needs ?partition"),
        ("PUT", "/v1/records/result/r2?partition=results", "{\"set\":{\"a\":123456789012345678901234}}", "64"),
        ("GET", "/v1/changes?since=x", "", "whole number"),
        ("GET", "/v1/changes?feed=sometimes", "", "longpoll or sse"),
        ("GET", "/v1/records?colour=red", "", "unknown parameter"),
        ("GET", "/v1/nothing-here", "", "no such route"),
    ] {
        let answer = request(&url, method, path, Some(&token), (!body.is_empty()).then_some(body));
        assert!(answer.status == 400 || answer.status == 404, "{path}: {answer:?}");
        let text = answer.json()["error"].as_str().expect("reason").to_owned();
        assert!(text.contains(reason), "{path}: {text}");
    }
    let big = format!("{{\"set\":{{\"a\":\"{}\"}}}}", "x".repeat(5 * 1024 * 1024));
    let refused = request(&url, "PUT", "/v1/records/result/r3?partition=results", Some(&token), Some(&big));
    assert_eq!(refused.status, 413, "a body over the limit");
    assert_eq!(request(&url, "GET", "/v1/records/result/r2?partition=results", Some(&token), None).status, 404);
    let status = request(&url, "GET", "/v1/status", Some(&token), None);
    assert_eq!(status.json()["peer_id"], home.peer_id(), "{status:?}");
    server.stop();
}

/// Reads the feed after `since` page by page (`limit` entries a page),
/// as an app that stores its cursor does; returns (cursor, id, origin).
fn follow(url: &str, token: &str, since: &mut u64, limit: usize) -> Vec<(u64, String, String)> {
    let mut seen = Vec::new();
    loop {
        let page = request(url, "GET", &format!("/v1/changes?since={since}&limit={limit}"), Some(token), None);
        assert_eq!(page.status, 200, "{page:?}");
        let page = page.json();
        let entries = page["entries"].as_array().expect("entries").clone();
        for e in &entries {
            seen.push((
                e["cursor"].as_u64().expect("cursor"),
                e["id"].as_str().expect("id").to_owned(),
                e["origin"].as_str().expect("origin").to_owned(),
            ));
        }
        *since = page["last_cursor"].as_u64().expect("last cursor");
        if entries.is_empty() {
            return seen;
        }
    }
}

#[test]
fn an_app_that_keeps_its_cursor_gets_every_change_once_in_order_across_a_kill_9() {
    let root = tempfile::tempdir().expect("dir");
    let (central, server, url, token) = serving(root.path(), "central");
    let device = Home::init(root.path(), "device");
    let enrol = central.json(&["enroll", "token", "--read", "results", "--write", "results"]);
    device.json(&["enroll", enrol["token"].as_str().expect("token")]);
    for i in 0..5 {
        central.ok(&["put", "result", &format!("c{i}"), "--partition", "results", "--set", "score=1"]);
    }
    // The app reads part of the feed, stores its cursor…
    let mut cursor = 0;
    let before = follow(&url, &token, &mut cursor, 2);
    let again = follow(&url, &token, &mut 0, 2);
    assert_eq!(before, again, "reading again from the same cursor gives the same entries");
    // …a device's results arrive by a sync, and the node is killed.
    for i in 0..3 {
        device.ok(&["put", "result", &format!("d{i}"), "--partition", "results", "--set", "score=2"]);
    }
    let synced = device.json(&["sync", &server.address]);
    assert_eq!(synced["sent"], 3, "{synced}");
    server.kill();
    let server = central.serve_with(&["--http", "127.0.0.1:0"], &[]);
    let url = server.wait_for("http")["url"].as_str().expect("url").to_owned();
    central.ok(&["put", "result", "c0", "--partition", "results", "--set", "score=3"]);
    let after = follow(&url, &token, &mut cursor, 2);
    let all: Vec<_> = before.iter().chain(&after).cloned().collect();
    let cursors: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(cursors, (1..=all.len() as u64).collect::<Vec<_>>(), "every cursor once, in order: {all:?}");
    let ids: Vec<&str> = all.iter().map(|e| e.1.as_str()).filter(|id| !id.starts_with("profile")).collect();
    let changes: Vec<&str> = ids.iter().copied().filter(|id| id.starts_with('c') || id.starts_with('d')).collect();
    assert_eq!(changes, ["c0", "c1", "c2", "c3", "c4", "d0", "d1", "d2", "c0"], "{all:?}");
    let device_id = device.peer_id();
    for (_, id, origin) in &all {
        let expected = if id.starts_with('d') { device_id.as_str() } else { "local" };
        if id.starts_with('c') || id.starts_with('d') {
            assert_eq!(origin, expected, "{id}");
        }
    }
    // A long poll at the end of the feed answers when the next commit lands.
    let (poll_url, poll_token, at) = (url.clone(), token.clone(), cursor);
    let poll = std::thread::spawn(move || {
        let path = format!("/v1/changes?since={at}&feed=longpoll&timeout_ms=60000");
        request(&poll_url, "GET", &path, Some(&poll_token), None).json()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    device.ok(&["put", "result", "d3", "--partition", "results", "--set", "score=4"]);
    device.json(&["sync", &server.address]);
    let woke = poll.join().expect("long poll");
    let entry = &woke["entries"][0];
    assert_eq!((&entry["id"], &entry["origin"]), (&"d3".into(), &device_id.clone().into()), "{woke}");
    assert_eq!(entry["record"]["fields"]["score"], 4);
    // The figures of what moved since the restart.
    let metrics = request(&url, "GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let text = metrics.body;
    assert!(text.contains("ferry_sessions_total{role=\"responder\",outcome=\"completed\"} 1"), "{text}");
    assert!(text.contains("ferry_changes_total{direction=\"received\"} 1"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ferry_store_bytes ") && !l.ends_with(" 0")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ferry_feed_cursor ") && !l.ends_with(" 0")), "{text}");
    // A cursor from nowhere is told to read again.
    let ahead = request(&url, "GET", "/v1/changes?since=999999", Some(&token), None);
    assert_eq!(ahead.status, 410, "{ahead:?}");
    assert!(ahead.json()["error"].as_str().expect("reason").contains("read the records again"));
    server.stop();
}

/// The Python program of docs/api.md ("An app in Python"), taken from the
/// document itself so the two cannot drift apart.
fn python_app(dir: &std::path::Path) -> std::path::PathBuf {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).expect("docs/api.md");
    let section = doc.split("## An app in Python").nth(1).expect("the Python section of docs/api.md");
    let code = section.split("```python\n").nth(1).and_then(|c| c.split("\n```").next()).expect("its code block");
    let path = dir.join("mirror.py");
    std::fs::write(&path, code).expect("write mirror.py");
    path
}

fn python() -> std::process::Command {
    let found = std::process::Command::new("python3").arg("--version").output();
    assert!(found.is_ok_and(|o| o.status.success()), "this test runs the API example: install python3");
    std::process::Command::new("python3")
}

/// The app's table: (id, fields) ordered by id.
fn mirrored(db: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let dump = "import json,sqlite3,sys; d=sqlite3.connect(sys.argv[1]); print(json.dumps(d.execute('SELECT id, fields FROM records ORDER BY id').fetchall()))";
    let out = python().args(["-c", dump]).arg(db).output().expect("read the app's table");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<(String, String)> = serde_json::from_slice(&out.stdout).expect("rows");
    rows.into_iter().map(|(id, fields)| (id, serde_json::from_str(&fields).expect("fields"))).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

#[test]
fn the_python_app_of_the_api_doc_mirrors_results_and_survives_restarts_of_itself_and_the_node() {
    let root = tempfile::tempdir().expect("dir");
    let app = python_app(root.path());
    let db = root.path().join("app.db");
    let central = Home::init(root.path(), "central");
    central.json(&["org", "create", "District", "--authority", "central"]);
    let http = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{http}");
    let token = central.dir.join("api-token");
    let server = central.serve_with(&["--http", &http], &[]);
    server.wait_for("http");
    let device = Home::init(root.path(), "device");
    let enrol = central.json(&["enroll", "token", "--read", "results", "--write", "results"]);
    device.json(&["enroll", enrol["token"].as_str().expect("token")]);
    device.ok(&["put", "result", "d1", "--partition", "results", "--set", "score=1"]);
    device.ok(&["put", "result", "d2", "--partition", "results", "--set", "score=2"]);
    device.json(&["sync", &server.address]);
    central.ok(&["put", "result", "c1", "--partition", "results", "--set", "score=3"]);
    central.ok(&["put", "test", "t1", "--partition", "results", "--set", "title=x"]);
    let once = |extra: &[&str]| {
        let mut command = python();
        command.arg(&app).arg(&url).arg(&token).arg(&db).arg("result").args(extra);
        tests::cli::within(command, std::time::Duration::from_secs(60))
    };
    let run = once(&["follow", "--once"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let ids = |rows: Vec<(String, serde_json::Value)>| rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(ids(mirrored(&db)), ["c1", "d1", "d2"], "results only, each once");
    // The node dies; the app says so when asked to catch up now…
    server.kill();
    let down = once(&["follow", "--once"]);
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("not answering"), "{down:?}");
    // …and a following app waits it out.
    let mut follower = python()
        .arg(&app)
        .arg(&url)
        .arg(&token)
        .arg(&db)
        .args(["result", "follow"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the app");
    let server = central.serve_with(&["--http", &http], &[]);
    server.wait_for("http");
    device.ok(&["put", "result", "d1", "--partition", "results", "--set", "score=10"]);
    device.ok(&["put", "result", "d3", "--partition", "results", "--set", "score=4"]);
    device.json(&["sync", &server.address]);
    let mut caught_up = false;
    for _ in 0..600 {
        let rows = mirrored(&db);
        if rows.iter().any(|(id, _)| id == "d3") && rows.iter().any(|(id, f)| id == "d1" && f["score"] == 10) {
            caught_up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(caught_up, "the following app mirrors what a sync brought: {:?}", mirrored(&db));
    // The app restarts; it writes back, and its write comes back once.
    let _ = follower.kill();
    let _ = follower.wait();
    let set = once(&["set", "c1", "results", "reviewed", "true"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert_eq!(central.json(&["get", "result", "c1"])["fields"]["reviewed"], true);
    central.ok(&["delete", "result", "d2"]);
    assert!(once(&["follow", "--once"]).status.success());
    let rows = mirrored(&db);
    assert_eq!(ids(rows.clone()), ["c1", "d1", "d3"], "d2's deletion reached the table");
    assert_eq!(rows[0].1, serde_json::json!({"score": 3, "reviewed": true}));
    // Fallen further behind than the feed keeps: the app reads everything again.
    server.stop();
    central.configure("feed_entries = 2\n");
    let server = central.serve_with(&["--http", &http], &[]);
    server.wait_for("http");
    for id in ["c2", "c3", "c4"] {
        central.ok(&["put", "result", id, "--partition", "results", "--set", "score=5"]);
    }
    let behind = once(&["follow", "--once"]);
    assert!(behind.status.success(), "{}", String::from_utf8_lossy(&behind.stderr));
    assert_eq!(ids(mirrored(&db)), ["c1", "c2", "c3", "c4", "d1", "d3"]);
    server.stop();
}

/// Reads `watch` lines from the local API until `wanted` accepts an event.
fn watch_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for line in lines.by_ref() {
        let line = line.unwrap_or_else(|e| panic!("no {what} event: {e}"));
        let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        let event = value["line"].clone();
        if wanted(&event) {
            return event;
        }
    }
    panic!("the watch ended before a {what} event");
}

#[test]
fn watchers_hear_each_changed_record_and_the_syncs_this_node_starts_through_its_api() {
    use std::io::{BufRead, Write};
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    central.json(&["org", "create", "District", "--authority", "central"]);
    let hub = central.serve();
    let device = Home::init(root.path(), "device");
    let token = central.json(&["enroll", "token", "--read", "results", "--write", "results"]);
    device.json(&["enroll", token["token"].as_str().expect("token")]);
    let server = device.serve();
    let mut socket = std::os::unix::net::UnixStream::connect(device.dir.join("control.sock")).expect("socket");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(60))).expect("timeout");
    socket.write_all(b"{\"op\":\"watch\"}\n").expect("watch");
    let mut lines = std::io::BufReader::new(socket.try_clone().expect("clone")).lines();
    watch_until(&mut lines, "watching", |e| e["event"] == "watching");
    device.ok(&["put", "result", "r1", "--partition", "results", "--set", "score=1"]);
    let changed = watch_until(&mut lines, "changed", |e| e["event"] == "changed");
    assert_eq!(
        (&changed["id"], &changed["type"], &changed["origin"]),
        (&"r1".into(), &"result".into(), &"local".into())
    );
    assert!(changed["partition"].as_str().expect("partition").ends_with(":results"), "{changed}");
    // A sync started through the device's API: its records, then its summary.
    central.ok(&["put", "result", "c1", "--partition", "results", "--set", "score=2"]);
    device.json(&["sync", &hub.address]);
    // The two come from different tasks: in either order.
    let (mut from_hub, mut synced) = (None, None);
    while from_hub.is_none() || synced.is_none() {
        let event = watch_until(&mut lines, "changed c1 and synced", |e| {
            (e["event"] == "changed" && e["id"] == "c1") || e["event"] == "synced"
        });
        if event["event"] == "synced" { synced = Some(event) } else { from_hub = Some(event) }
    }
    let (from_hub, synced) = (from_hub.expect("changed"), synced.expect("synced"));
    assert_eq!(from_hub["origin"], central.peer_id());
    assert_eq!((&synced["started_by"], &synced["received"], &synced["sent"]), (&"api".into(), &1.into(), &1.into()));
    server.stop();
    hub.stop();
}

/// A central serving the network only, and a device serving HTTP.
fn central_and_device(root: &std::path::Path) -> (Home, Server, Home, Server, String, String) {
    let central = Home::init(root, "central");
    central.json(&["org", "create", "District", "--authority", "central"]);
    let central_server = central.serve();
    let device = Home::init(root, "device");
    let enrol = central.json(&["enroll", "token", "--read", "results", "--write", "results"]);
    device.json(&["enroll", enrol["token"].as_str().expect("token")]);
    let device_server = device.serve_with(&["--http", "127.0.0.1:0"], &[]);
    let url = device_server.wait_for("http")["url"].as_str().expect("url").to_owned();
    let token = std::fs::read_to_string(device.dir.join("api-token")).expect("api-token").trim().to_owned();
    (central, central_server, device, device_server, url, token)
}

#[test]
fn a_sync_posted_over_http_streams_its_progress_then_its_summary_and_resolve_settles_a_conflict() {
    let root = tempfile::tempdir().expect("dir");
    let (central, central_server, device, device_server, url, token) = central_and_device(root.path());
    let lines: String = (0..3000)
        .map(|i| {
            format!("{{\"type\":\"result\",\"id\":\"c{i}\",\"partition\":\"results\",\"fields\":{{\"n\":{i}}}}}\n")
        })
        .collect();
    let file = root.path().join("results.ndjson");
    std::fs::write(&file, lines).expect("write");
    central.json(&["import", file.to_str().expect("path")]);
    central.ok(&["put", "result", "shared", "--partition", "results", "--set", "score=1"]);

    // The sync, as the console starts it: events as it goes, then the summary.
    let body = serde_json::json!({ "peer": central_server.address }).to_string();
    let mut seen = Vec::new();
    let (status, headers) = tests::http::events(&url, "POST", "/v1/sync", Some(&token), Some(&body), &mut |e| {
        seen.push(e.clone());
        true
    });
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")), "{headers:?}");
    let progress: Vec<serde_json::Value> = seen.iter().filter(|e| e.name == "progress").map(|e| e.json()).collect();
    assert!(!progress.is_empty(), "progress comes before the end: {seen:?}");
    let received: Vec<u64> =
        progress.iter().filter(|p| p["what"] == "received").map(|p| p["done"].as_u64().expect("done")).collect();
    assert!(received.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {received:?}");
    let last = seen.last().expect("events");
    assert_eq!(last.name, "done", "the stream ends with the summary: {seen:?}");
    assert_eq!(last.json()["received"], 3001, "{}", last.data);
    assert_eq!(device.json(&["get", "result", "c2999"])["fields"]["n"], 2999);

    // A conflict: both sides change the same field, then a sync.
    central.ok(&["put", "result", "shared", "--partition", "results", "--set", "score=2"]);
    let written = request(
        &url,
        "PUT",
        "/v1/records/result/shared?partition=results",
        Some(&token),
        Some(r#"{"set":{"score":3}}"#),
    );
    assert_eq!(written.status, 200, "{written:?}");
    // With Accept: application/json, only the summary, once the sync ends.
    let summary = tests::http::request_with(
        &url,
        "POST",
        "/v1/sync",
        Some(&token),
        &[("Accept", "application/json")],
        Some(&body),
    );
    assert_eq!(summary.status, 200, "{summary:?}");
    assert_eq!(summary.json()["conflicts"], 1, "{}", summary.body);
    let conflicts = request(&url, "GET", "/v1/conflicts", Some(&token), None).lines();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let shown = conflicts[0]["fields"]["score"].clone();
    let other = conflicts[0]["conflicts"][0]["value"].clone();
    assert_ne!(shown, other);
    let resolved = request(
        &url,
        "POST",
        "/v1/resolve",
        Some(&token),
        Some(r#"{"type":"result","id":"shared","partition":"results","take":1}"#),
    );
    assert_eq!(resolved.status, 200, "{resolved:?}");
    assert_eq!(resolved.json()["fields"]["score"], other, "the taken value is the record's now");
    assert!(request(&url, "GET", "/v1/conflicts", Some(&token), None).lines().is_empty());
    let again = request(&url, "POST", "/v1/resolve", Some(&token), Some(r#"{"type":"result","id":"nope"}"#));
    assert_eq!(again.status, 404, "{again:?}");

    // The status: orgs, certificates with their expiry, the peer's lag.
    let status = request(&url, "GET", "/v1/status", Some(&token), None).json();
    assert_eq!(status["orgs"].as_array().map(Vec::len), Some(1), "{status}");
    assert!(status["certificates"][0]["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{status}");
    let peer = &status["peers"][central.peer_id().as_str()];
    assert!(peer["last_sync"]["outcome"] == "completed", "{status}");
    assert_eq!(peer["lag"]["changes"], 1, "the resolve is not sent yet: {status}");
    assert!(peer["addresses"].as_array().is_some_and(|a| !a.is_empty()), "the address dialed: {status}");

    // A sync that cannot happen ends with a reason; a bad body is a 400.
    let nowhere = serde_json::json!({ "peer": "/ip4/127.0.0.1/tcp/9" }).to_string();
    let failed = tests::http::request_with(&url, "POST", "/v1/sync", Some(&token), &[], Some(&nowhere)).events();
    assert_eq!(failed.last().map(|e| e.name.as_str()), Some("failed"), "{failed:?}");
    assert!(failed.last().expect("event").json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    for bad in [r#"{"peer":1}"#, r#"{"peer":"x","pull":false,"push":false}"#, r#"{"peer":"x","colour":1}"#] {
        assert_eq!(request(&url, "POST", "/v1/sync", Some(&token), Some(bad)).status, 400, "{bad}");
    }
    device_server.stop();
    central_server.stop();
}

#[test]
fn the_sse_feed_sends_each_change_as_it_commits_and_resumes_from_last_event_id() {
    let root = tempfile::tempdir().expect("dir");
    let (home, server, url, token) = serving(root.path(), "central");
    home.ok(&["put", "result", "r0", "--partition", "results", "--set", "n=0"]);
    let start = request(&url, "GET", "/v1/status", Some(&token), None).json()["feed_cursor"].as_u64().expect("cursor");
    let (feed_url, feed_token) = (url.clone(), token.clone());
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let path = format!("/v1/changes?feed=sse&type=result&since={start}");
        tests::http::events(&feed_url, "GET", &path, Some(&feed_token), None, &mut |e| {
            got.push(e.clone());
            got.len() < 3
        });
        got
    });
    for i in 1..=3 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        home.ok(&["put", "result", &format!("r{i}"), "--partition", "results", "--set", &format!("n={i}")]);
    }
    let got = reader.join().expect("reader");
    let ids: Vec<String> = got.iter().map(|e| e.json()["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"], "{got:?}");
    assert!(got.iter().all(|e| e.name == "change"));
    // A browser that reconnects sends the last id it got, and goes on there.
    let second = got[1].id.clone().expect("an id");
    let mut resumed = Vec::new();
    let (status, _) = tests::http::events_with(
        &url,
        "GET",
        "/v1/changes?feed=sse&type=result",
        Some(&token),
        &[("Last-Event-ID", &second)],
        None,
        &mut |e| {
            resumed.push(e.clone());
            false
        },
    );
    assert_eq!(status, 200);
    assert_eq!(resumed[0].json()["id"], "r3", "{resumed:?}");
    // A cursor the feed does not hold is a 410 before any event.
    let gone = request(&url, "GET", "/v1/changes?feed=sse&since=999999", Some(&token), None);
    assert_eq!(gone.status, 410, "{gone:?}");
    server.stop();
}

#[test]
fn a_blob_is_served_whole_or_by_range_and_a_damaged_one_is_never_served() {
    let root = tempfile::tempdir().expect("dir");
    let (home, server, url, token) = serving(root.path(), "central");
    // Three blocks and a bit, so ranges cross block edges.
    let bytes: Vec<u8> =
        (0..(3 * 256 * 1024 + 1000)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let file = root.path().join("package.bin");
    std::fs::write(&file, &bytes).expect("write");
    let attach = format!("package={}", file.display());
    let put = home.json(&["put", "delivery", "d1", "--partition", "results", "--attach", &attach]);
    let hash = put["fields"]["package"]["$blob"]["hash"].as_str().expect("hash").to_owned();
    let path = format!("/v1/blobs/{hash}");
    let whole = request(&url, "GET", &path, Some(&token), None);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(whole.raw == bytes, "the whole blob, byte for byte");
    let len = bytes.len();
    for (range, from, to) in [
        ("bytes=0-9", 0, 10),
        ("bytes=262140-262150", 262_140, 262_151),
        ("bytes=-100", len - 100, len),
        (&format!("bytes={}-", len - 5) as &str, len - 5, len),
    ] {
        let part = tests::http::request_with(&url, "GET", &path, Some(&token), &[("Range", range)], None);
        assert_eq!(part.status, 206, "{range}");
        assert!(part.raw == bytes[from..to], "{range}");
        assert_eq!(part.header("content-range"), Some(format!("bytes {from}-{}/{len}", to - 1).as_str()));
    }
    let past = tests::http::request_with(&url, "GET", &path, Some(&token), &[("Range", "bytes=99999999-")], None);
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some(format!("bytes */{len}").as_str()));
    assert_eq!(request(&url, "GET", &format!("/v1/blobs/{}", "0".repeat(64)), Some(&token), None).status, 404);
    assert_eq!(request(&url, "GET", "/v1/blobs/xyz", Some(&token), None).status, 400);
    assert_eq!(request(&url, "GET", &path, None, None).status, 401);
    // One byte changed on disk, in the second block: a range inside it
    // gets no byte, the whole blob ends short, and the blob is removed.
    let stored = home.dir.join("blobs").join(&hash[..2]).join(&hash);
    let mut damaged = std::fs::read(&stored).expect("stored blob");
    damaged[300_000] ^= 0xff;
    std::fs::write(&stored, damaged).expect("damage");
    let inside = tests::http::request_with(&url, "GET", &path, Some(&token), &[("Range", "bytes=300000-300010")], None);
    assert!(inside.raw.is_empty(), "no byte of a damaged block: {:?}", inside.status);
    assert!(!stored.exists(), "the damaged blob is removed; a sync fetches it again");
    assert_eq!(request(&url, "GET", &path, Some(&token), None).status, 404);
    server.stop();
}

#[test]
fn the_console_logs_in_once_by_the_url_ferry_console_prints_and_its_cookie_needs_the_write_header() {
    let root = tempfile::tempdir().expect("dir");
    let (home, server, url, _token) = serving(root.path(), "central");
    let printed = home.ok(&["console"]);
    let login = printed.lines().next().expect("a URL").to_owned();
    assert!(login.starts_with(&format!("{url}/console/login?code=")), "{printed}");
    let path = login.strip_prefix(&url).expect("same base");
    let before = request(&url, "GET", "/console", None, None);
    assert_eq!(before.status, 401);
    assert!(before.body.contains("ferry console"), "the page says how to log in: {}", before.body);
    let answer = request(&url, "GET", path, None, None);
    assert_eq!(answer.status, 303, "{answer:?}");
    let cookie = answer.header("set-cookie").expect("a session cookie").to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().expect("name=value").to_owned();
    assert_eq!(request(&url, "GET", path, None, None).status, 401, "a login URL works once");
    let with = |method: &str, route: &str, extra: &[(&str, &str)], body: Option<&str>| {
        let mut headers = vec![("Cookie", session.as_str())];
        headers.extend_from_slice(extra);
        tests::http::request_with(&url, method, route, None, &headers, body)
    };
    let page = with("GET", "/console", &[], None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sync now") || page.body.contains("syncNow"), "the console page");
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    assert_eq!(with("GET", "/v1/status", &[], None).json()["peer_id"], home.peer_id());
    let put = r#"{"set":{"n":1}}"#;
    let refused = with("PUT", "/v1/records/result/r1?partition=results", &[], Some(put));
    assert_eq!(refused.status, 403, "a cookie alone cannot write (another site could send it): {refused:?}");
    assert!(home.fails(&["get", "result", "r1"]).contains("no record"));
    let written = with("PUT", "/v1/records/result/r1?partition=results", &[("X-Ferry-Console", "1")], Some(put));
    assert_eq!(written.status, 200, "{written:?}");
    let forged = tests::http::request_with(&url, "GET", "/v1/status", None, &[("Cookie", "ferry_console=abc")], None);
    assert_eq!(forged.status, 401);
    server.stop();
    // Without HTTP, `ferry console` says how to get it.
    let quiet = home.serve();
    assert!(home.fails(&["console"]).contains("--http"));
    quiet.stop();
}
