//! The command line at its edges, with real `ferry` processes on 127.0.0.1:
//! a serve that fails to start, the local API under many clients and a
//! stopped node, and the text output people read.

use tests::cli::Home;

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
