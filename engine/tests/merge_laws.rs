//! The laws of merge (docs in `engine/src/merge.rs`), checked over random
//! histories: several writers edit one record, each seeing a random part of
//! the others' changes, with field overlaps, deletes and re-creations. Every
//! order of delivery, with duplicates, must give the same record, and no
//! written value may vanish unless a change that saw it wrote its field.

use std::collections::BTreeMap;

use engine::change::{Change, Op, RecordKey};
use engine::policy::{DeletePolicy, FieldPolicy, TypePolicy};
use engine::{AuthorKey, Hlc, InstanceId, RecordId, RecordState, Value};
use partitions::{OrgId, Partition, RecordType};
use proptest::prelude::*;

fn key() -> RecordKey {
    let org = OrgId::from_public_key(&[1; 32]);
    RecordKey {
        partition: Partition::resolve(org, "results").expect("p"),
        record_type: RecordType::parse("result").expect("t"),
        id: RecordId::parse("r1").expect("id"),
    }
}

/// One step of a writer: write some fields, delete, or learn others' changes.
#[derive(Clone, Debug)]
enum Step {
    Put { writer: usize, fields: Vec<(usize, Option<i64>)>, replace: bool },
    Delete { writer: usize },
    Learn { writer: usize, picks: Vec<usize> },
}

const FIELDS: [&str; 3] = ["a", "b", "c"];

fn step(writers: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..writers, prop::collection::vec((0..FIELDS.len(), prop::option::weighted(0.8, 0i64..5)), 1..3), prop::bool::weighted(0.2))
            .prop_map(|(writer, fields, replace)| Step::Put { writer, fields, replace }),
        1 => (0..writers).prop_map(|writer| Step::Delete { writer }),
        3 => (0..writers, prop::collection::vec(0usize..1000, 0..6)).prop_map(|(writer, picks)| Step::Learn { writer, picks }),
    ]
}

/// Runs the steps; returns every change made, in creation order. A writer
/// learns any change alone, whatever it had seen: delivery in no order.
fn history(steps: &[Step], writers: usize) -> Vec<Change> {
    history_with(steps, writers, false)
}

/// With `causal`, a writer that learns a change learns everything that
/// change had seen first, as syncs deliver: a node holds an author's
/// change of a record only with the earlier ones it did not supersede.
fn history_with(steps: &[Step], writers: usize, causal: bool) -> Vec<Change> {
    let mut replicas: Vec<RecordState> = vec![RecordState::default(); writers];
    let mut counters = vec![0u64; writers];
    let mut all: Vec<Change> = Vec::new();
    let mut clock = 0u64;
    for step in steps {
        clock += 1;
        let (writer, op) = match step {
            Step::Learn { writer, picks } => {
                for &p in picks {
                    if !all.is_empty() {
                        let c = all[p % all.len()].clone();
                        if causal {
                            for past in all.iter().filter(|d| c.seen.covers(d.dot())) {
                                replicas[*writer].apply(past.clone()).expect("honest histories never equivocate");
                            }
                        }
                        replicas[*writer].apply(c).expect("honest histories never equivocate");
                    }
                }
                continue;
            }
            Step::Delete { writer } => (*writer, Op::Delete),
            Step::Put { writer, fields, replace } => (
                *writer,
                Op::Put {
                    replace: *replace,
                    fields: fields.iter().map(|(f, v)| (FIELDS[*f].to_owned(), v.map(Value::Int))).collect(),
                },
            ),
        };
        counters[writer] += 1;
        // Every change carries the bases a `skip` type's write would: they
        // change no other policy's view.
        let bases = replicas[writer].bases_for(&op);
        let change = Change {
            record: key(),
            author: InstanceId([writer as u8 + 1; 16]),
            author_key: AuthorKey([writer as u8 + 1; 32]),
            counter: counters[writer],
            // Clocks collide across writers on purpose: ties fall to the instance.
            hlc: Hlc::from_parts(clock / 2, 0),
            authority: (writer == 0).then(|| "central".to_owned()),
            seen: replicas[writer].vv.clone(),
            op,
            bases,
            seal: engine::Seal::Single([0; 64]),
        };
        replicas[writer].apply(change.clone()).expect("own change merges");
        all.push(change);
    }
    all
}

fn apply_all(changes: &[Change]) -> RecordState {
    let mut state = RecordState::default();
    for c in changes {
        state.apply(c.clone()).expect("no equivocation");
    }
    state
}

fn shuffled(changes: &[Change], seed: u64, duplicates: bool) -> Vec<Change> {
    let mut out = changes.to_vec();
    if duplicates {
        out.extend(changes.iter().step_by(2).cloned());
    }
    let mut state = seed | 1;
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.swap(i, (state % (i as u64 + 1)) as usize);
    }
    out
}

fn policies() -> Vec<TypePolicy> {
    vec![
        TypePolicy::default(),
        TypePolicy {
            fields: FieldPolicy::Authority("central".into()),
            delete: DeletePolicy::UpdateWins,
            ..TypePolicy::default()
        },
        TypePolicy { fields: FieldPolicy::Skip, ..TypePolicy::default() },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        steps in prop::collection::vec(step(3), 1..40),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let changes = history(&steps, 3);
        let reference = apply_all(&changes);
        for (i, seed) in seeds.iter().enumerate() {
            let other = apply_all(&shuffled(&changes, *seed, i % 2 == 0));
            prop_assert_eq!(&other, &reference);
            for policy in policies() {
                prop_assert_eq!(other.view(&policy), reference.view(&policy));
            }
        }
        // Grouping: a state built from a prefix, then the rest, equals the whole.
        let split = changes.len() / 2;
        let mut grouped = apply_all(&shuffled(&changes[..split], seeds[0], false));
        for c in shuffled(&changes[split..], seeds[1], true) {
            grouped.apply(c).expect("no equivocation");
        }
        prop_assert_eq!(&grouped, &reference);
    }

    #[test]
    fn no_written_value_disappears_without_a_later_change(steps in prop::collection::vec(step(3), 1..40)) {
        let changes = history(&steps, 3);
        let state = apply_all(&changes);
        for policy in policies() {
        let view = state.view(&policy);
        for c in &changes {
            let Op::Put { fields, .. } = &c.op else { continue };
            for (name, value) in fields {
                let superseded = changes.iter().any(|d| d.writes_field(name) && d.seen.covers(c.dot()));
                if superseded {
                    continue;
                }
                let shown = view.fields.get(name) == value.as_ref()
                    || view.conflicts.iter().any(|k| k.field.as_deref() == Some(name.as_str()) && k.dot == c.dot());
                let retained = state.changes.iter().any(|r| r.dot() == c.dot());
                prop_assert!(retained, "change {:?} writing {} was dropped", c.dot(), name);
                // A deleted record hides its fields, but the change stays.
                prop_assert!(shown || !view.exists, "value of {} by {:?} is neither shown nor a conflict", name, c.dot());
            }
        }
        }
    }

    /// Under `skip`, a field whose current values differ shows the newest
    /// value, in the whole history, that every current writer had seen (or
    /// none), and lists every other current value as a conflict. Histories
    /// stay within `SKIP_BASES_MAX` writes of a field, so no base falls off.
    #[test]
    fn skip_shows_the_value_every_concurrent_writer_had_seen_last(steps in prop::collection::vec(step(3), 1..30)) {
        let changes = history_with(&steps, 3, true);
        let state = apply_all(&changes);
        let view = state.view(&TypePolicy { fields: FieldPolicy::Skip, ..TypePolicy::default() });
        if !view.exists {
            return Ok(());
        }
        for name in FIELDS {
            let writes: Vec<&Change> = changes.iter().filter(|c| c.writes_field(name)).collect();
            if writes.len() > engine::limits::SKIP_BASES_MAX {
                continue;
            }
            let current: Vec<&Change> =
                writes.iter().copied().filter(|c| !writes.iter().any(|d| d.seen.covers(c.dot()))).collect();
            let values: Vec<Option<&Value>> = current.iter().map(|c| c.field(name).flatten()).collect();
            if values.windows(2).all(|w| w[0] == w[1]) {
                prop_assert_eq!(view.fields.get(name), values.first().copied().flatten(), "{} agrees", name);
                continue;
            }
            let base = writes
                .iter()
                .filter(|x| current.iter().all(|w| w.seen.covers(x.dot())))
                .max_by_key(|x| (x.hlc, x.dot()))
                .and_then(|x| x.field(name).flatten());
            prop_assert_eq!(view.fields.get(name), base, "{} in conflict shows its base", name);
            for (c, value) in current.iter().zip(&values) {
                let listed = view.conflicts.iter().any(|k| k.field.as_deref() == Some(name) && k.dot == c.dot());
                prop_assert!(listed || *value == base, "{}: the value by {:?} is not a conflict", name, c.dot());
            }
        }
    }
}

/// SENAITE's example: the master lab and a collaborator both change a
/// shared client's phone between two syncs. Under `skip` neither wins: the
/// phone keeps the number both had, and both new numbers wait as
/// conflicts, the same on both labs, whichever saw which first.
#[test]
fn skip_keeps_what_both_labs_had_and_both_edits_as_conflicts() {
    let policy = TypePolicy { fields: FieldPolicy::Skip, ..TypePolicy::default() };
    let text = |s: &str| Some(Value::Text(s.into()));
    let write = |state: &RecordState, author: u8, counter: u64, hlc: u64, phone: &str| {
        let op = Op::Put { replace: false, fields: BTreeMap::from([("phone".to_owned(), text(phone))]) };
        Change {
            record: key(),
            author: InstanceId([author; 16]),
            author_key: AuthorKey([author; 32]),
            counter,
            hlc: Hlc::from_parts(hlc, 0),
            authority: None,
            seen: state.vv.clone(),
            bases: state.bases_for(&op),
            op,
            seal: engine::Seal::Single([0; 64]),
        }
    };
    let mut master = RecordState::default();
    let first = write(&master, 1, 1, 10, "111");
    master.apply(first.clone()).expect("merges");
    let mut lab = RecordState::default();
    lab.apply(first).expect("merges");
    // The lab edits twice, the master once, with no sync between.
    let lab_1 = write(&lab, 2, 1, 20, "222");
    lab.apply(lab_1.clone()).expect("merges");
    let lab_2 = write(&lab, 2, 2, 30, "333");
    lab.apply(lab_2.clone()).expect("merges");
    let master_1 = write(&master, 1, 2, 25, "444");
    master.apply(master_1.clone()).expect("merges");
    master.apply(lab_1).expect("merges");
    master.apply(lab_2.clone()).expect("merges");
    lab.apply(master_1).expect("merges");
    for state in [&master, &lab] {
        let view = state.view(&policy);
        assert_eq!(view.fields.get("phone"), text("111").as_ref(), "the number both had seen");
        let mut conflicts: Vec<_> = view.conflicts.iter().map(|c| c.value.clone()).collect();
        conflicts.sort_by_key(|v| format!("{v:?}"));
        assert_eq!(conflicts, [text("333"), text("444")], "both new numbers wait");
    }
    assert_eq!(master.view(&policy), lab.view(&policy));
    assert_eq!(
        master.view(&TypePolicy::default()).fields.get("phone"),
        text("333").as_ref(),
        "newest would have taken the lab's"
    );
    // A write that saw both settles it.
    let settle = write(&lab, 2, 3, 40, "444");
    lab.apply(settle).expect("merges");
    let view = lab.view(&policy);
    assert_eq!(view.fields.get("phone"), text("444").as_ref());
    assert!(view.conflicts.is_empty());
}

#[test]
fn concurrent_edits_of_different_fields_both_survive() {
    // Kolibri lost a coach's edit to a tablet's `last_login` write; here both stay.
    let base = Change {
        record: key(),
        author: InstanceId([1; 16]),
        author_key: AuthorKey([1; 32]),
        counter: 1,
        hlc: Hlc::from_parts(10, 0),
        authority: None,
        seen: Default::default(),
        op: Op::Put {
            replace: true,
            fields: BTreeMap::from([
                ("name".to_owned(), Some(Value::from("Ada"))),
                ("last_login".to_owned(), Some(Value::Int(1))),
            ]),
        },
        bases: Default::default(),
        seal: engine::Seal::Single([0; 64]),
    };
    let mut seen = engine::VersionVector::new();
    seen.add(base.dot());
    let coach = Change {
        author: InstanceId([2; 16]),
        counter: 1,
        hlc: Hlc::from_parts(20, 0),
        seen: seen.clone(),
        op: Op::Put { replace: false, fields: BTreeMap::from([("name".to_owned(), Some(Value::from("Ada L.")))]) },
        ..base.clone()
    };
    let tablet = Change {
        author: InstanceId([3; 16]),
        counter: 1,
        hlc: Hlc::from_parts(30, 0),
        seen,
        op: Op::Put { replace: false, fields: BTreeMap::from([("last_login".to_owned(), Some(Value::Int(2)))]) },
        ..base.clone()
    };
    for order in [[&base, &coach, &tablet], [&tablet, &coach, &base], [&coach, &base, &tablet]] {
        let state = apply_all(&order.map(|c| c.clone()));
        let view = state.view(&TypePolicy::default());
        assert_eq!(view.fields["name"], Value::from("Ada L."));
        assert_eq!(view.fields["last_login"], Value::Int(2));
        assert!(view.conflicts.is_empty());
    }
}

#[test]
fn same_field_conflict_keeps_the_loser_and_authority_wins() {
    let mk = |author: u8, hlc: u64, value: &str, authority: Option<&str>| Change {
        record: key(),
        author: InstanceId([author; 16]),
        author_key: AuthorKey([author; 32]),
        counter: 1,
        hlc: Hlc::from_parts(hlc, 0),
        authority: authority.map(str::to_owned),
        seen: Default::default(),
        op: Op::Put { replace: false, fields: BTreeMap::from([("score".to_owned(), Some(Value::from(value)))]) },
        bases: Default::default(),
        seal: engine::Seal::Single([0; 64]),
    };
    let central = mk(1, 10, "from central", Some("central"));
    let device = mk(2, 20, "from device", None);
    let state = apply_all(&[central.clone(), device.clone()]);
    let newest = state.view(&TypePolicy::default());
    assert_eq!(newest.fields["score"], Value::from("from device"));
    assert_eq!(newest.conflicts.len(), 1);
    assert_eq!(newest.conflicts[0].value, Some(Value::from("from central")));
    let authority = state.view(&TypePolicy {
        fields: FieldPolicy::Authority("central".into()),
        delete: DeletePolicy::DeleteWins,
        ..TypePolicy::default()
    });
    assert_eq!(authority.fields["score"], Value::from("from central"));
    assert_eq!(authority.conflicts[0].value, Some(Value::from("from device")));
}

#[test]
fn delete_beats_a_concurrent_update_unless_the_type_says_otherwise() {
    let create = Change {
        record: key(),
        author: InstanceId([1; 16]),
        author_key: AuthorKey([1; 32]),
        counter: 1,
        hlc: Hlc::from_parts(10, 0),
        authority: None,
        seen: Default::default(),
        op: Op::Put { replace: true, fields: BTreeMap::from([("a".to_owned(), Some(Value::Int(1)))]) },
        bases: Default::default(),
        seal: engine::Seal::Single([0; 64]),
    };
    let mut seen = engine::VersionVector::new();
    seen.add(create.dot());
    let delete = Change {
        author: InstanceId([2; 16]),
        counter: 1,
        hlc: Hlc::from_parts(20, 0),
        seen: seen.clone(),
        op: Op::Delete,
        ..create.clone()
    };
    let update = Change {
        author: InstanceId([3; 16]),
        counter: 1,
        hlc: Hlc::from_parts(30, 0),
        seen,
        op: Op::Put { replace: false, fields: BTreeMap::from([("b".to_owned(), Some(Value::Int(2)))]) },
        ..create.clone()
    };
    let state = apply_all(&[create.clone(), update.clone(), delete.clone()]);
    let default = state.view(&TypePolicy::default());
    assert!(!default.exists);
    assert_eq!(default.conflicts.len(), 1, "the losing update is kept");
    let update_wins = state.view(&TypePolicy {
        fields: FieldPolicy::Newest,
        delete: DeletePolicy::UpdateWins,
        ..TypePolicy::default()
    });
    assert!(update_wins.exists);
    assert_eq!(update_wins.fields.len(), 2, "the whole record comes back: {:?}", update_wins.fields);
    // A later write that saw the delete resurrects the record.
    let mut seen_all = state.vv.clone();
    seen_all.add(delete.dot());
    let recreate = Change {
        author: InstanceId([2; 16]),
        counter: 2,
        hlc: Hlc::from_parts(40, 0),
        seen: seen_all,
        op: Op::Put { replace: true, fields: BTreeMap::from([("c".to_owned(), Some(Value::Int(3)))]) },
        ..create
    };
    let mut state = state;
    state.apply(recreate).expect("merges");
    let view = state.view(&TypePolicy::default());
    assert!(view.exists);
    assert_eq!(view.fields.keys().collect::<Vec<_>>(), ["c"]);
}
