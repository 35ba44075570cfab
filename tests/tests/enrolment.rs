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
    let spent: Vec<String> = (0..DEVICES).map(|_| token(&central, &["--read", "results", "--write", "results"])).collect();
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
        assert!(refused.contains("used up") || refused.contains("unknown"), "spent token {n} redeemed again: {refused}");
    }
    let late = Home::init(root.path(), "late");
    for (n, token) in created.iter().enumerate() {
        let out = late.run(&["--json", "enroll", token]);
        assert!(out.status.success(), "created token {n} was lost: {}", String::from_utf8_lossy(&out.stderr));
    }
    server.stop();
}
