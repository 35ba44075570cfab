//! Two stores syncing through the session state machine, in memory.

mod common;

use common::*;
use engine::backend::BackendKind;
use engine::{StaticAuthorizer, Value};

#[test]
fn pull_brings_every_record_and_a_second_sync_is_a_no_op() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let auth = StaticAuthorizer::new();
        let central = Node::new(kind, 1, scope("", "", ""), &auth);
        let device = Node::new(kind, 2, scope("", "", ""), &auth);
        // Full scopes for both.
        auth.grant(author_key(1), engine_full(), None);
        auth.grant(author_key(2), engine_full(), None);
        let central = Node {
            scope: engine_full(),
            ..central
        };
        let device = Node {
            scope: engine_full(),
            ..device
        };
        for i in 0..50 {
            central.put(
                &auth,
                &record("results", "result", &format!("r{i}")),
                &[("score", Value::Int(i))],
                T0 + i as u64,
            );
        }
        let (a, b) = sync(
            &device,
            &central,
            &auth,
            device.config(&central, 1),
            T0 + 1000,
        );
        assert_eq!(a.received, 50, "{kind:?}");
        assert_eq!(a.updated, 50);
        assert_eq!(b.sent, 50);
        assert_eq!(device.snapshot(), central.snapshot());
        let (a, b) = sync(
            &device,
            &central,
            &auth,
            device.config(&central, 2),
            T0 + 2000,
        );
        assert!(a.noop && b.noop, "{kind:?}: {a:?}");
        assert!(
            a.bytes_sent + a.bytes_received < 1024,
            "no-op costs {} bytes",
            a.bytes_sent + a.bytes_received
        );
    }
}

fn engine_full() -> partitions::Scope {
    partitions::Scope::full(org())
}
