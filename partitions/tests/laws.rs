//! Property tests for the laws the rest of ferry relies on: printing parses
//! back, containment is a partial order, filter operations obey the set laws
//! and have one normal form, and scope narrowing is transitive.

use std::collections::BTreeMap;

use partitions::{Filter, OrgId, Partition, RecordType, Scope, TypeMode};
use proptest::prelude::*;

fn orgs() -> [OrgId; 2] {
    [OrgId::from_public_key(&[1; 32]), OrgId::from_public_key(&[2; 32])]
}

/// Partitions from a small alphabet so that containment happens often.
fn partition() -> impl Strategy<Value = Partition> {
    (0usize..2, prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "a-1"]), 0..4)).prop_map(
        |(org, segments)| Partition::resolve(orgs()[org], &segments.join(":")).expect("valid by construction"),
    )
}

fn filter() -> impl Strategy<Value = Filter> {
    prop::collection::vec(partition(), 0..5).prop_map(Filter::new)
}

fn mode() -> impl Strategy<Value = TypeMode> {
    prop::sample::select(vec![
        TypeMode::None,
        TypeMode::ReadOnly,
        TypeMode::UpdateOnly,
        TypeMode::ReadWrite,
        TypeMode::WriteOnly,
    ])
}

fn scope() -> impl Strategy<Value = Scope> {
    (filter(), filter(), prop::collection::btree_map(prop::sample::select(vec!["t1", "t2", "t3"]), mode(), 0..3))
        .prop_map(|(read, write, types)| Scope {
            read,
            write,
            types: types
                .into_iter()
                .map(|(k, v)| (RecordType::parse(k).expect("valid"), v))
                .collect::<BTreeMap<_, _>>(),
        })
}

proptest! {
    #[test]
    fn partition_display_parses_back(p in partition()) {
        prop_assert_eq!(Partition::parse(&p.to_string()), Ok(p.clone()));
        prop_assert_eq!(Partition::from_key(&p.to_key()), Ok(p));
    }

    #[test]
    fn org_id_display_parses_back(bytes in any::<[u8; 16]>()) {
        let id = OrgId::from_bytes(bytes);
        prop_assert_eq!(OrgId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn containment_is_a_partial_order(a in partition(), b in partition(), c in partition()) {
        prop_assert!(a.contains(&a));
        if a.contains(&b) && b.contains(&a) {
            prop_assert_eq!(&a, &b);
        }
        if a.contains(&b) && b.contains(&c) {
            prop_assert!(a.contains(&c));
        }
        prop_assert_eq!(a.contains(&b), b.to_key().starts_with(&a.to_key()));
    }

    #[test]
    fn filter_union_and_intersection_are_set_operations(a in filter(), b in filter(), p in partition()) {
        prop_assert_eq!(a.union(&b).contains(&p), a.contains(&p) || b.contains(&p));
        prop_assert_eq!(a.intersection(&b).contains(&p), a.contains(&p) && b.contains(&p));
    }

    #[test]
    fn filter_operations_obey_the_lattice_laws(a in filter(), b in filter(), c in filter()) {
        prop_assert_eq!(a.union(&b), b.union(&a));
        prop_assert_eq!(a.intersection(&b), b.intersection(&a));
        prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
        prop_assert_eq!(a.intersection(&b).intersection(&c), a.intersection(&b.intersection(&c)));
        prop_assert_eq!(a.union(&a), a.clone());
        prop_assert_eq!(a.intersection(&a), a.clone());
        prop_assert_eq!(a.union(&a.intersection(&b)), a.clone());
        prop_assert_eq!(a.intersection(&a.union(&b)), a.clone());
        prop_assert!(a.intersection(&b).is_subset(&a));
        prop_assert!(a.is_subset(&a.union(&b)));
    }

    #[test]
    fn filter_normal_form_is_unique(prefixes in prop::collection::vec(partition(), 0..6), seed in any::<u64>()) {
        let mut shuffled = prefixes.clone();
        // A deterministic shuffle plus duplicates must not change the filter.
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed as usize).wrapping_mul(i + 7) % n;
            shuffled.swap(i, j);
        }
        shuffled.extend(prefixes.iter().take(2).cloned());
        let a = Filter::new(prefixes);
        let b = Filter::new(shuffled);
        prop_assert_eq!(&a, &b);
        for (i, x) in a.prefixes().iter().enumerate() {
            for (j, y) in a.prefixes().iter().enumerate() {
                prop_assert!(i == j || !x.contains(y));
            }
        }
    }

    #[test]
    fn filter_subset_matches_membership(a in filter(), b in filter(), p in partition()) {
        if a.is_subset(&b) && a.contains(&p) {
            prop_assert!(b.contains(&p));
        }
    }

    #[test]
    fn narrowing_is_reflexive_and_transitive(a in scope(), b in scope(), c in scope()) {
        prop_assert!(a.is_within(&a));
        if a.is_within(&b) && b.is_within(&c) {
            prop_assert!(a.is_within(&c));
        }
        let both = a.intersection(&b);
        prop_assert!(both.is_within(&a));
        prop_assert!(both.is_within(&b));
    }
}

proptest! {
    #[test]
    fn partition_order_is_key_order(a in partition(), b in partition()) {
        prop_assert_eq!(a.cmp(&b), a.to_key().cmp(&b.to_key()));
    }
}
