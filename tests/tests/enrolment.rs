//! Enrolment against a real serving issuer: tokens handed out while others
//! are redeemed, clocks that disagree, and what a scope may name.

use tests::cli::Home;

fn org(central: &Home) -> String {
    central.json(&["org", "create", "Riverside"])["org_id"].as_str().expect("org id").to_owned()
}

fn token(central: &Home, args: &[&str]) -> String {
    let mut all = vec!["enroll", "token"];
    all.extend_from_slice(args);
    central.json(&all)["token"].as_str().expect("token").to_owned()
}

/// Token creation (`Op::EnrollToken`) once rewrote tokens.json without the
/// enrolment lock a redemption holds, and both used one fixed temporary
/// file: a use spent meanwhile came back, a token created meanwhile was
/// lost, or a write failed on the other's rename. Here devices redeem
/// one-use tokens while more tokens are created, all at once; afterwards
/// every spent token is refused and every created one still enrols.
#[test]
fn tokens_created_while_others_are_redeemed_are_neither_lost_nor_spent_twice() {
    const DEVICES: usize = 8;
    const CREATORS: usize = 3;
    const CREATED_EACH: usize = 8;
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve();
    let devices: Vec<Home> = (0..DEVICES).map(|n| Home::init(root.path(), &format!("device-{n}"))).collect();
    let spent: Vec<String> =
        (0..DEVICES).map(|_| token(&central, &["--read", "results", "--write", "results"])).collect();
    let created: Vec<String> = std::thread::scope(|scope| {
        let creators: Vec<_> = (0..CREATORS)
            .map(|_| {
                scope.spawn(|| {
                    (0..CREATED_EACH)
                        .map(|_| token(&central, &["--read", "results", "--write", "results"]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let enrolments: Vec<_> = devices
            .iter()
            .zip(&spent)
            .map(|(device, token)| scope.spawn(move || device.run(&["--json", "enroll", token])))
            .collect();
        for (n, enrolment) in enrolments.into_iter().enumerate() {
            let out = enrolment.join().expect("enrol thread");
            assert!(out.status.success(), "device {n}: {}", String::from_utf8_lossy(&out.stderr));
        }
        creators.into_iter().flat_map(|c| c.join().expect("creator thread")).collect()
    });
    assert_eq!(created.len(), CREATORS * CREATED_EACH);
    let thief = Home::init(root.path(), "thief");
    for (n, token) in spent.iter().enumerate() {
        let refused = thief.fails(&["enroll", token]);
        assert!(
            refused.contains("used up") || refused.contains("unknown"),
            "spent token {n} redeemed again: {refused}"
        );
    }
    let late = Home::init(root.path(), "late");
    for (n, token) in created.iter().enumerate() {
        let out = late.run(&["--json", "enroll", token]);
        assert!(out.status.success(), "created token {n} was lost: {}", String::from_utf8_lossy(&out.stderr));
    }
    server.stop();
}

/// `--read ""` once issued a certificate that grants nothing, while
/// docs/certificates.md said `""` is the whole org. Now an empty scope is
/// refused with a message naming the word for the whole org, `*`, which
/// works the same in `cert issue` and `enroll token`; `--days 0` is refused
/// by both.
#[test]
fn an_empty_scope_is_refused_and_star_names_the_whole_org_in_both_commands() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    let org_id = org(&central);
    let server = central.serve();
    let device = Home::init(root.path(), "device");
    let subject = device.peer_id();
    let pem = root.path().join("device.pem");
    let pem = pem.to_str().expect("utf-8 path");
    let issue = ["cert", "issue", "--subject", &subject, "--out", pem];
    for command in [&issue[..], &["enroll", "token"]] {
        let run = |args: &[&str]| central.fails(&[command, args].concat());
        for empty in [&["--read", ""][..], &["--read", "", "--write", "results"], &["--write", " , "]] {
            let refused = run(empty);
            assert!(refused.contains("names no partition") && refused.contains("'*'"), "{empty:?}: {refused}");
        }
        let refused = run(&[]);
        assert!(refused.contains("the scope is empty") && refused.contains("`*`"), "{refused}");
        let refused = run(&["--read", "results", "--days", "0"]);
        assert!(refused.contains("--days 0"), "{refused}");
    }
    let whole = serde_json::json!([org_id]);
    let issued = central.json(&[&issue[..], &["--read", "*", "--write", "*"]].concat());
    assert_eq!((&issued["read"], &issued["write"]), (&whole, &whole), "{issued}");
    let token = token(&central, &["--read", "*", "--write", "results,*"]);
    device.json(&["enroll", &token]);
    let held = device.json(&["cert", "list"]);
    let held = &held.as_array().expect("list")[0];
    assert_eq!((&held["read"], &held["write"]), (&whole, &whole), "{held}");
    server.stop();
}

/// An issuer whose clock was ahead issued a certificate starting in the
/// device's future: the device refused it, and the token was spent. Now the
/// device says its clock, the certificate starts early enough for it, and a
/// device whose clock is too far off is refused before anything is spent.
#[test]
fn an_issuer_ahead_of_the_device_enrols_it_and_a_refused_enrolment_spends_nothing() {
    let root = tempfile::tempdir().expect("dir");
    let central = Home::init(root.path(), "central");
    org(&central);
    let server = central.serve_with(&[], &[("FERRY_CLOCK_OFFSET_S", "3600")]);
    let device = Home::init(root.path(), "device");
    device.json(&["enroll", &token(&central, &["--read", "results", "--write", "results"])]);
    device.ok(&["put", "result", "r1", "--partition", "results", "--set", "score=1"]);

    let late = Home::init(root.path(), "late");
    let one_use = token(&central, &["--read", "results", "--write", "results", "--uses", "1"]);
    let behind = late.command(&["enroll", &one_use]).env("FERRY_CLOCK_OFFSET_S", "-172800").output().expect("run");
    assert!(!behind.status.success());
    let refused = String::from_utf8_lossy(&behind.stderr);
    assert!(refused.contains("this device's clock reads") && refused.contains("check the clock"), "{refused}");
    late.json(&["enroll", &one_use]);
    late.ok(&["put", "result", "r2", "--partition", "results", "--set", "score=2"]);
    server.stop();
}
