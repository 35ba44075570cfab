//! The web console in a real headless Chromium (SPEC §6.3; issue 15 item
//! 7): a device serving HTTP, with a central and another device as peers.
//! The browser logs in with the URL `ferry console` prints, sees both
//! peers, presses Sync now and watches the progress reach done, finds the
//! new records, resolves a conflict, and sees a failed sync with its
//! reason. A screenshot of each page goes to `target/console/`, or to
//! `docs/console/` (the README's and the guide's) with
//! `FERRY_SCREENSHOTS=docs`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tests::browser::Browser;
use tests::cli::Home;

const WAIT: Duration = Duration::from_secs(60);

fn screenshots() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    match std::env::var("FERRY_SCREENSHOTS").as_deref() {
        Ok("docs") => root.join("docs").join("console"),
        _ => root.join("target").join("console"),
    }
}

#[test]
fn an_it_person_syncs_with_one_button_resolves_a_conflict_and_sees_a_failure_with_its_reason() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    central.json(&["org", "create", "Riverside District", "--authority", "central"]);
    let central_server = central.serve();
    let enrol = |name: &str| {
        let home = Home::init(root.path(), name);
        let token = central.json(&["enroll", "token", "--read", "results", "--write", "results"]);
        home.json(&["enroll", token["token"].as_str().expect("token"), "--name", name]);
        home
    };
    let office = enrol("office");
    let tablet = enrol("tablet");
    let tablet_server = tablet.serve();
    let office_server = office.serve_with(&["--http", "127.0.0.1:0"], &[]);
    office_server.wait_for("http");
    // The office knows both peers from a sync with each.
    central.ok(&["put", "result", "shared", "--partition", "results", "--set", "score=1"]);
    office.json(&["sync", &central_server.address]);
    office.json(&["sync", &tablet_server.address]);
    // Then the central gets new results, and a concurrent edit.
    let lines: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"type\":\"result\",\"id\":\"r{i:04}\",\"partition\":\"results\",\"fields\":{{\"score\":{i}}}}}\n"
            )
        })
        .collect();
    let file = root.path().join("results.ndjson");
    std::fs::write(&file, lines).expect("write");
    central.json(&["import", file.to_str().expect("path")]);
    central.ok(&["put", "result", "shared", "--partition", "results", "--set", "score=2"]);
    office.ok(&["put", "result", "shared", "--partition", "results", "--set", "score=3"]);

    let login = office.ok(&["console"]).lines().next().expect("the login URL").to_owned();
    let browser = Browser::start(1280, 900);
    browser.open(&login);
    assert!(browser.url().ends_with("/console"), "the login lands on the console: {}", browser.url());
    browser.wait_until("both peers listed", "document.querySelectorAll('tr[data-peer]').length === 2", WAIT);
    browser.wait_until("the node idle", "document.querySelector('[data-state=idle]')", WAIT);
    let central_id = central.peer_id();
    let row = format!("tr[data-peer='{central_id}']");
    let shots = screenshots();
    browser.screenshot(&shots.join("peers.png"));

    // Every progress bar the page shows is noted, so the test sees the
    // progress the person sees, however fast the sync.
    browser.script(
        "window.seen = []; new MutationObserver(() => { \
           for (const bar of document.querySelectorAll('[data-role=progress]')) \
             window.seen.push(bar.nextElementSibling ? bar.nextElementSibling.textContent : ''); \
         }).observe(document.body, { childList: true, subtree: true });",
        json!([]),
    );
    browser.click(&format!("{row} button[data-role=sync]"));
    browser.wait_until(
        "the sync running",
        &format!("document.querySelector(\"{row} button[data-role=sync]\").disabled || window.seen.length > 0"),
        WAIT,
    );
    browser.wait_until(
        "the sync done",
        &format!(
            "!document.querySelector(\"{row} button[data-role=sync]\").disabled && document.querySelector('[data-state=idle]')"
        ),
        WAIT,
    );
    let seen = browser.script("return window.seen;", json!([]));
    let seen: Vec<String> =
        seen.as_array().expect("notes").iter().map(|v| v.as_str().unwrap_or("").to_owned()).collect();
    let received: Vec<(u64, u64)> = seen
        .iter()
        .filter_map(|t| t.strip_prefix("received "))
        .filter_map(|t| t.split_once(" / "))
        .map(|(d, t)| (d.trim().parse().expect("done"), t.trim().parse().expect("total")))
        .collect();
    assert!(!received.is_empty(), "the progress bar showed the records arriving: {seen:?}");
    assert!(received.windows(2).all(|w| w[0].0 <= w[1].0), "progress only grows: {received:?}");
    let (done, total) = *received.last().expect("progress");
    assert!(done == total && total >= 3001, "the progress reached its total: {received:?}");
    let finished = browser.text(&format!("{row} [data-role=progress-text]"));
    assert!(finished.starts_with("done:") && finished.contains("3001 received"), "the bar says done: {finished}");
    let last_sync = browser.text(&format!("{row} [data-role=last-sync]"));
    assert!(last_sync.contains("synced") && last_sync.contains("just now"), "{last_sync}");

    // The new records, in the browser.
    browser.click("nav button[data-tab=records]");
    browser.type_into("#filter-type", "result");
    browser.click("#filter-go");
    browser.wait_until("the new records shown", "document.querySelector('tr[data-record=\"result/r0000\"]')", WAIT);
    assert!(browser.text("#records-note").contains("3001"), "{}", browser.text("#records-note"));
    browser.screenshot(&shots.join("records.png"));

    // The conflict the sync kept, resolved by taking the central's value.
    browser.click("nav button[data-tab=conflicts]");
    browser.wait_until("the conflict shown", "document.querySelector('[data-record=\"result/shared\"]')", WAIT);
    assert!(browser.text("nav button[data-tab=conflicts]").contains("(1)"));
    browser.screenshot(&shots.join("conflicts.png"));
    let other = browser.text("[data-record=\"result/shared\"] [data-role=candidate] .mono");
    browser.click("[data-record=\"result/shared\"] button[data-role=take]");
    browser.wait_until("no conflict left", "document.querySelector('[data-role=no-conflicts]')", WAIT);
    let record = office.json(&["get", "result", "shared"]);
    assert_eq!(record["conflicts"], json!([]), "{record}");
    assert_eq!(record["fields"]["score"].to_string(), other, "the value taken in the browser is the record's");
    assert!(!browser.text("nav button[data-tab=conflicts]").contains("(1)"));

    // The tablet goes away: Sync now fails, and says why.
    tablet_server.stop();
    browser.click("nav button[data-tab=peers]");
    let tablet_row = format!("tr[data-peer='{}']", tablet.peer_id());
    assert!(browser.text(&tablet_row).contains("tablet"), "a peer shows by its certificate's name");
    browser.click(&format!("{tablet_row} button[data-role=sync]"));
    browser.wait_until("the failure shown", "document.querySelector('[data-state=failed]')", WAIT);
    let reason = browser.text(&format!("{tablet_row} [data-role=reason]"));
    assert!(!reason.trim().is_empty(), "the failed sync says why");
    browser.screenshot(&shots.join("failed.png"));

    browser.click("nav button[data-tab=history]");
    browser.wait_until("the history shown", "document.querySelectorAll('#history tr').length >= 3", WAIT);
    browser.screenshot(&shots.join("history.png"));
    browser.click("nav button[data-tab=node]");
    browser.wait_until("the certificate shown", "document.querySelector('#certificates tr')", WAIT);
    assert!(browser.text("#certificates").contains("in "), "the expiry in days: {}", browser.text("#certificates"));
    browser.screenshot(&shots.join("node.png"));

    // A phone's width: the same page, still readable.
    drop(browser);
    let narrow = Browser::start(390, 844);
    narrow.open(office.ok(&["console"]).lines().next().expect("URL"));
    narrow.wait_until("the peers on a phone", "document.querySelectorAll('tr[data-peer]').length === 2", WAIT);
    narrow.screenshot(&shots.join("phone.png"));
    office_server.stop();
    central_server.stop();
}
