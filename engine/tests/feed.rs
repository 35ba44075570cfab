//! The change feed (`engine/src/store/feed.rs`): a cursor per changed
//! record in the commit that changes it, from local writes and from peers
//! alike; monotonic across reopen; bounded, with clear errors for a cursor
//! the feed no longer holds or never held.

mod common;

use common::*;
use engine::backend::BackendKind;
use engine::store::FeedError;
use engine::{InstanceId, LocalOp, LocalWrite, SerialSigner, StaticAuthorizer, Store};
use partitions::Scope;

fn entries(store: &Store, since: u64) -> Vec<(u64, String, String)> {
    let page = store.feed(since, 1000, &mut |_| true).expect("feed");
    page.entries.into_iter().map(|e| (e.cursor, e.key.id.as_str().to_owned(), e.origin)).collect()
}

#[test]
fn every_changed_record_gets_the_next_cursor_in_its_commit_whoever_wrote_it() {
    for kind in [BackendKind::Redb, BackendKind::Sled, BackendKind::Memory] {
        let auth = StaticAuthorizer::default();
        let a = Node::new(kind, 1, Scope::full(org()), &auth);
        let b = Node::new(kind, 2, Scope::full(org()), &auth);
        assert_eq!(a.store.feed_last().expect("last"), 0);
        a.put(&auth, &record("results", "result", "r1"), &[("score", text("1"))], T0);
        // One write of two records: two entries, one commit.
        let writes: Vec<LocalWrite> = ["r2", "r3"]
            .iter()
            .map(|id| LocalWrite {
                record: record("results", "result", id),
                op: LocalOp::Put { set: [("score".to_owned(), text("2"))].into(), unset: Default::default() },
            })
            .collect();
        a.store.write(&a.author(), &writes, T0, &auth, &SerialSigner).expect("write");
        a.delete(&auth, &record("results", "result", "r1"), T0);
        let local: Vec<_> = entries(&a.store, 0);
        assert_eq!(
            local,
            [
                (1, "r1".into(), "local".into()),
                (2, "r2".into(), "local".into()),
                (3, "r3".into(), "local".into()),
                (4, "r1".into(), "local".into())
            ],
            "{kind:?}"
        );
        // A write that changes nothing makes no entry.
        a.put(&auth, &record("results", "result", "r2"), &[("score", text("2"))], T0);
        assert_eq!(a.store.feed_last().expect("last"), 4);
        // What a peer sends is in the peer's feed under the origin the
        // session's store names.
        sync(&b, &a, &auth, b.config(&a, 1), T0);
        let received = entries(&b.store, 0);
        assert_eq!(received.len(), 3, "{received:?}");
        assert!(received.iter().all(|(_, _, origin)| origin == "peer"), "{received:?}");
        assert_eq!(received.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
        // Reading on from a cursor gives what follows it, and again the same.
        assert_eq!(entries(&a.store, 2), entries(&a.store, 2));
        assert_eq!(entries(&a.store, 2).iter().map(|e| e.0).collect::<Vec<_>>(), [3, 4]);
        assert!(entries(&a.store, 4).is_empty());
    }
}

#[test]
fn a_filter_skips_entries_and_the_page_says_where_to_go_on() {
    let auth = StaticAuthorizer::default();
    let a = Node::new(BackendKind::Redb, 1, Scope::full(org()), &auth);
    for i in 0..10 {
        let t = if i % 2 == 0 { "result" } else { "test" };
        a.put(&auth, &record("results", t, &format!("x{i}")), &[("n", text("1"))], T0);
    }
    let page = a.store.feed(0, 3, &mut |k| k.record_type.as_str() == "test").expect("feed");
    assert_eq!(page.entries.iter().map(|e| e.cursor).collect::<Vec<_>>(), [2, 4, 6]);
    assert_eq!((page.next, page.last), (6, 10));
    let rest = a.store.feed(page.next, 100, &mut |k| k.record_type.as_str() == "test").expect("feed");
    assert_eq!(rest.entries.iter().map(|e| e.cursor).collect::<Vec<_>>(), [8, 10]);
    assert_eq!(rest.next, 10);
}

#[test]
fn cursors_keep_rising_across_a_reopen_and_old_ones_expire_with_a_clear_error() {
    let auth = StaticAuthorizer::default();
    let dir = tempfile::tempdir().expect("dir");
    let key = author_key(1);
    auth.grant(key, Scope::full(org()), None);
    let author = engine::LocalAuthor { key: common::key(1), authority: None };
    let put = |store: &Store, id: &str| {
        let write = LocalWrite {
            record: record("results", "result", id),
            op: LocalOp::Put { set: [("n".to_owned(), text(id))].into(), unset: Default::default() },
        };
        store.write(&author, &[write], T0, &auth, &SerialSigner).expect("write");
    };
    {
        let (store, _) = Store::open(dir.path(), BackendKind::Redb, InstanceId([1; 16]), T0).expect("open");
        store.set_feed_entries_max(5);
        for i in 0..8 {
            put(&store, &format!("r{i}"));
        }
        assert_eq!(store.feed_last().expect("last"), 8);
        assert_eq!(entries(&store, 3).iter().map(|e| e.0).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
        match store.feed(2, 10, &mut |_| true) {
            Err(e @ FeedError::Expired { since: 2, oldest: 4, last: 8 }) => {
                assert!(e.to_string().contains("read the records again"), "{e}");
            }
            other => panic!("expected an expired cursor, got {other:?}"),
        }
        // Dropped without a clean close, as a kill would leave it.
        drop(store);
    }
    // The last cursor lives in the data's commits.
    let (store, _) = Store::open(dir.path(), BackendKind::Redb, InstanceId([2; 16]), T0).expect("reopen");
    assert_eq!(store.feed_last().expect("last"), 8);
    put(&store, "after");
    assert_eq!(entries(&store, 8), [(9, "after".to_owned(), "local".to_owned())]);
    match store.feed(50, 10, &mut |_| true) {
        Err(e @ FeedError::Ahead { since: 50, last: 9 }) => assert!(e.to_string().contains("another home"), "{e}"),
        other => panic!("expected a cursor ahead of the feed, got {other:?}"),
    }
}
