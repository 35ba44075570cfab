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

/// Runs the steps; returns every change made, in creation order.
fn history(steps: &[Step], writers: usize) -> Vec<Change> {
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
        let view = state.view(&TypePolicy::default());
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
