//! Filters: normalised sets of partition prefixes.
//!
//! Invariant: the prefixes are sorted and no prefix contains another, so every
//! set of partitions has exactly one filter and equal filters compare equal.
//! Operations never fail on size; decoders check `FILTER_PREFIXES_MAX` before
//! building a filter from outside input.

use std::fmt;

use crate::limits::FILTER_PREFIXES_MAX;
use crate::org::OrgId;
use crate::partition::{Partition, PartitionError};

/// A set of partition prefixes; contains every partition under any of them.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Filter {
    prefixes: Vec<Partition>,
}

/// Why a list of partitions is not a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter has {count} prefixes, more than the {max} allowed")]
    TooManyPrefixes { count: usize, max: usize },
    #[error("filter prefix {index}: {error}")]
    Partition { index: usize, error: PartitionError },
}

impl Filter {
    /// The empty filter: contains nothing.
    pub fn empty() -> Filter {
        Filter::default()
    }

    /// Everything of one org.
    pub fn org(org: OrgId) -> Filter {
        Filter { prefixes: vec![Partition::root(org)] }
    }

    /// The filter of exactly these prefixes, normalised.
    pub fn new(prefixes: impl IntoIterator<Item = Partition>) -> Filter {
        let mut prefixes: Vec<Partition> = prefixes.into_iter().collect();
        // Partitions sort segment by segment, which puts a prefix right before
        // everything it contains: one pass keeps the outermost of each run.
        prefixes.sort();
        prefixes.dedup();
        let mut kept: Vec<Partition> = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            if kept.last().is_some_and(|last| last.contains(&p)) {
                continue;
            }
            kept.push(p);
        }
        Filter { prefixes: kept }
    }

    /// Builds a filter from outside input, checking the prefix count first.
    pub fn try_new(prefixes: Vec<Partition>) -> Result<Filter, FilterError> {
        if prefixes.len() > FILTER_PREFIXES_MAX {
            return Err(FilterError::TooManyPrefixes { count: prefixes.len(), max: FILTER_PREFIXES_MAX });
        }
        Ok(Filter::new(prefixes))
    }

    /// Parses comma-separated partitions, each absolute or relative to `org`.
    pub fn parse(org: OrgId, text: &str) -> Result<Filter, FilterError> {
        let items: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if items.len() > FILTER_PREFIXES_MAX {
            return Err(FilterError::TooManyPrefixes { count: items.len(), max: FILTER_PREFIXES_MAX });
        }
        let prefixes = items
            .iter()
            .enumerate()
            .map(|(index, item)| Partition::resolve(org, item).map_err(|error| FilterError::Partition { index, error }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter::new(prefixes))
    }

    pub fn prefixes(&self) -> &[Partition] {
        &self.prefixes
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether `partition` lies under one of the prefixes.
    pub fn contains(&self, partition: &Partition) -> bool {
        // Filters hold at most a few dozen prefixes: a scan is clearer than a
        // search and as fast at that size.
        self.prefixes.iter().any(|p| p.contains(partition))
    }

    /// Whether some partition inside `partition` is in this filter, that is,
    /// whether the two overlap at all.
    pub fn overlaps(&self, partition: &Partition) -> bool {
        self.prefixes.iter().any(|p| p.contains(partition) || partition.contains(p))
    }

    /// Everything in either filter.
    pub fn union(&self, other: &Filter) -> Filter {
        Filter::new(self.prefixes.iter().chain(&other.prefixes).cloned())
    }

    /// Everything in both filters.
    pub fn intersection(&self, other: &Filter) -> Filter {
        let mut out = Vec::new();
        for a in &self.prefixes {
            for b in &other.prefixes {
                if a.contains(b) {
                    out.push(b.clone());
                } else if b.contains(a) {
                    out.push(a.clone());
                }
            }
        }
        Filter::new(out)
    }

    /// Whether everything in this filter is also in `other`.
    pub fn is_subset(&self, other: &Filter) -> bool {
        self.prefixes.iter().all(|p| other.contains(p))
    }

    /// The first prefix of this filter that `other` does not contain, if any:
    /// the witness that this filter is not a subset of `other`.
    pub fn first_outside(&self, other: &Filter) -> Option<&Partition> {
        self.prefixes.iter().find(|p| !other.contains(p))
    }

    /// Whether every prefix belongs to `org`.
    pub fn is_within_org(&self, org: OrgId) -> bool {
        self.prefixes.iter().all(|p| p.org() == org)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.prefixes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filter[{self}]")
    }
}

impl serde::Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.prefixes.len()))?;
        for p in &self.prefixes {
            seq.serialize_element(p)?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Filter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {FILTER_PREFIXES_MAX} partitions")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Filter, A::Error> {
                let mut prefixes = Vec::new();
                while let Some(p) = seq.next_element::<Partition>()? {
                    if prefixes.len() == FILTER_PREFIXES_MAX {
                        return Err(serde::de::Error::custom(FilterError::TooManyPrefixes {
                            count: FILTER_PREFIXES_MAX + 1,
                            max: FILTER_PREFIXES_MAX,
                        }));
                    }
                    prefixes.push(p);
                }
                Ok(Filter::new(prefixes))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> OrgId {
        OrgId::from_public_key(&[1u8; 32])
    }
    fn f(text: &str) -> Filter {
        Filter::parse(org(), text).unwrap()
    }
    fn p(text: &str) -> Partition {
        Partition::resolve(org(), text).unwrap()
    }

    #[test]
    fn filter_normal_form_drops_contained_prefixes() {
        assert_eq!(f("results:tc-1,results,tests"), f("tests,results"));
        assert_eq!(f("results,results").len(), 1);
        assert_eq!(f("results:tc-4,results:tc-42").len(), 2);
    }

    #[test]
    fn filter_intersection_keeps_the_narrower_prefix() {
        let a = f("results,tests:t1");
        let b = f("results:tc-1,tests");
        assert_eq!(a.intersection(&b), f("results:tc-1,tests:t1"));
        assert!(f("results").intersection(&f("tests")).is_empty());
    }

    #[test]
    fn filter_subset_and_containment() {
        assert!(f("results:tc-1").is_subset(&f("results")));
        assert!(!f("results").is_subset(&f("results:tc-1")));
        assert_eq!(f("results,tests").first_outside(&f("results")), Some(&p("tests")));
        assert!(f("results").contains(&p("results:tc-9:s")));
        assert!(!f("results:tc-4").contains(&p("results:tc-42")));
        assert!(f("results:tc-4").overlaps(&p("results")));
    }

    #[test]
    fn filter_parse_checks_the_prefix_count() {
        let many = (0..=FILTER_PREFIXES_MAX).map(|i| format!("p{i}")).collect::<Vec<_>>().join(",");
        assert_eq!(Filter::parse(org(), &many), Err(FilterError::TooManyPrefixes { count: 65, max: 64 }));
    }
}
