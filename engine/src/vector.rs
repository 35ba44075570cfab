//! Version vectors: instance → highest counter, over crdts' `VClock`.
//!
//! We wrap `VClock` for three reasons: a compact wire form (a CBOR map from
//! 16 instance bytes to the counter), a bound on entries checked while
//! decoding, and names in ferry's vocabulary (`covers`, `dominates`).
//! Invariant: no entry is zero (absent means zero), so equality is the
//! equality of the functions they stand for.

use std::fmt;

use crdts::{CmRDT, CvRDT, Dot as CrdtDot, VClock};

use crate::ids::{Counter, Dot, InstanceId};
use crate::limits::VECTOR_ENTRIES_MAX;

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(VClock<InstanceId>);

impl VersionVector {
    pub fn new() -> VersionVector {
        VersionVector(VClock::new())
    }

    pub fn get(&self, instance: &InstanceId) -> Counter {
        self.0.get(instance)
    }

    /// Whether this vector includes the change `dot`.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(&dot.instance) >= dot.counter
    }

    /// Raises the entry for `dot.instance` to at least `dot.counter`.
    pub fn add(&mut self, dot: Dot) {
        if dot.counter > 0 {
            self.0.apply(CrdtDot::new(dot.instance, dot.counter));
        }
    }

    /// The pointwise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        self.0.merge(other.0.clone());
    }

    /// Whether every entry of `other` is at most ours.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.dots.iter().all(|(instance, &counter)| self.get(instance) >= counter)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.dots.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&InstanceId, Counter)> {
        self.0.dots.iter().map(|(i, c)| (i, *c))
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<Dot> for VersionVector {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> VersionVector {
        let mut v = VersionVector::new();
        for dot in iter {
            v.add(dot);
        }
        v
    }
}

impl serde::Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.len()))?;
        for (instance, counter) in self.iter() {
            map.serialize_entry(&crate::codec::Bytes16(instance.0), &counter)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a version vector of at most {VECTOR_ENTRIES_MAX} entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<VersionVector, A::Error> {
                let mut v = VersionVector::new();
                let mut count = 0;
                let mut last: Option<InstanceId> = None;
                while let Some((instance, counter)) = map.next_entry::<crate::codec::Bytes16, u64>()? {
                    count += 1;
                    if count > VECTOR_ENTRIES_MAX {
                        return Err(serde::de::Error::custom("version vector has too many entries"));
                    }
                    let instance = InstanceId(instance.0);
                    // One encoding per vector: keys ascending, no zeros.
                    if last.is_some_and(|l| l >= instance) || counter == 0 {
                        return Err(serde::de::Error::custom("version vector is not canonical"));
                    }
                    last = Some(instance);
                    v.add(Dot { instance, counter });
                }
                Ok(v)
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(n: u8) -> InstanceId {
        InstanceId([n; 16])
    }

    #[test]
    fn vector_covers_merges_and_dominates() {
        let mut a: VersionVector = [Dot { instance: i(1), counter: 3 }].into_iter().collect();
        let b: VersionVector =
            [Dot { instance: i(1), counter: 1 }, Dot { instance: i(2), counter: 5 }].into_iter().collect();
        assert!(a.covers(Dot { instance: i(1), counter: 2 }));
        assert!(!a.covers(Dot { instance: i(2), counter: 1 }));
        assert!(!a.dominates(&b));
        a.merge(&b);
        assert!(a.dominates(&b));
        assert_eq!(a.get(&i(1)), 3);
        assert_eq!(a.get(&i(2)), 5);
        a.add(Dot { instance: i(3), counter: 0 });
        assert_eq!(a.len(), 2, "zero entries are never stored");
    }
}
