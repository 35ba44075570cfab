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
        ("GET", "/v1/changes?feed=sometimes", "", "normal or longpoll"),
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
    // A cursor from nowhere is told to read again.
    let ahead = request(&url, "GET", "/v1/changes?since=999999", Some(&token), None);
    assert_eq!(ahead.status, 410, "{ahead:?}");
    assert!(ahead.json()["error"].as_str().expect("reason").contains("read the records again"));
    server.stop();
}
