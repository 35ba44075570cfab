//! Partitions: paths of segments under an org, `<org-id>:<segment>:…`.
//!
//! A partition holds the org id and its segments in canonical text. Invariants:
//! every segment is 1..=`SEGMENT_BYTES_MAX` characters of `[A-Za-z0-9._-]`,
//! there are at most `PARTITION_SEGMENTS_MAX` of them, and containment is by
//! whole segments (`tc-4` does not contain `tc-42`). The key form used by
//! stores ends every segment with a zero byte, so "partition A contains
//! partition B" is exactly "A's key is a byte prefix of B's key".

use std::fmt;
use std::str::FromStr;

use crate::limits::{PARTITION_BYTES_MAX, PARTITION_SEGMENTS_MAX, SEGMENT_BYTES_MAX};
use crate::org::{ORG_ID_BYTES, ORG_ID_TEXT_LEN, OrgId, OrgIdError};

/// A partition of an organisation's data.
///
/// Partitions order by org, then segment by segment, which is the byte order
/// of their key form: a partition sorts right before everything it contains.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    org: OrgId,
    /// The canonical printed form, starting with the org id.
    text: String,
}

/// Why a text is not a partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("partition is empty")]
    Empty,
    #[error("partition is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("partition does not start with an org id: {0}")]
    Org(#[from] OrgIdError),
    #[error("partition has {depth} segments below the org, more than the {max} allowed")]
    TooDeep { depth: usize, max: usize },
    #[error("partition segment {index} is empty")]
    EmptySegment { index: usize },
    #[error("partition segment {index} is {len} bytes, more than the {max} allowed")]
    SegmentTooLong { index: usize, len: usize, max: usize },
    #[error("partition segment {index} has character {ch:?}; only A-Z a-z 0-9 . _ - are allowed")]
    Character { index: usize, ch: char },
    #[error("partition key is malformed")]
    Key,
}

impl Partition {
    /// The whole of an org: the partition that contains all of its data.
    pub fn root(org: OrgId) -> Partition {
        Partition { org, text: org.to_string() }
    }

    /// Parses an absolute partition, `<org-id>[:<segment>…]`.
    pub fn parse(text: &str) -> Result<Partition, PartitionError> {
        if text.is_empty() {
            return Err(PartitionError::Empty);
        }
        if text.len() > PARTITION_BYTES_MAX {
            return Err(PartitionError::TooLong { len: text.len(), max: PARTITION_BYTES_MAX });
        }
        let (org_text, rest) = match text.split_once(':') {
            Some((org_text, rest)) => (org_text, Some(rest)),
            None => (text, None),
        };
        let org = OrgId::parse(org_text)?;
        let mut partition = Partition::root(org);
        if let Some(rest) = rest {
            for segment in rest.split(':') {
                partition = partition.child(segment)?;
            }
        }
        Ok(partition)
    }

    /// Resolves a partition written relative to `org` (`results:tc-1`), or
    /// parses an absolute one. A text whose first segment is a well-formed
    /// org id is absolute; an empty text is the org itself.
    pub fn resolve(org: OrgId, text: &str) -> Result<Partition, PartitionError> {
        let first = text.split(':').next().unwrap_or_default();
        if first.len() == ORG_ID_TEXT_LEN && OrgId::parse(first).is_ok() {
            return Partition::parse(text);
        }
        let mut partition = Partition::root(org);
        if text.is_empty() {
            return Ok(partition);
        }
        if text.len() > PARTITION_BYTES_MAX {
            return Err(PartitionError::TooLong { len: text.len(), max: PARTITION_BYTES_MAX });
        }
        for segment in text.split(':') {
            partition = partition.child(segment)?;
        }
        Ok(partition)
    }

    /// This partition with one more segment.
    pub fn child(&self, segment: &str) -> Result<Partition, PartitionError> {
        let index = self.depth();
        if index >= PARTITION_SEGMENTS_MAX {
            return Err(PartitionError::TooDeep { depth: index + 1, max: PARTITION_SEGMENTS_MAX });
        }
        check_segment(index, segment)?;
        let mut text = String::with_capacity(self.text.len() + 1 + segment.len());
        text.push_str(&self.text);
        text.push(':');
        text.push_str(segment);
        Ok(Partition { org: self.org, text })
    }

    pub fn org(&self) -> OrgId {
        self.org
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments below the org id.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.text[ORG_ID_TEXT_LEN..].split(':').skip(1)
    }

    /// Number of segments below the org id; the org root has depth 0.
    pub fn depth(&self) -> usize {
        self.text[ORG_ID_TEXT_LEN..].bytes().filter(|&b| b == b':').count()
    }

    /// Whether `other` lies inside this partition (or is it), by whole segments.
    pub fn contains(&self, other: &Partition) -> bool {
        other.text.len() >= self.text.len()
            && other.text.starts_with(&self.text)
            && (other.text.len() == self.text.len() || other.text.as_bytes()[self.text.len()] == b':')
    }

    /// The partition this one is written relative to its org (`results:tc-1`).
    pub fn relative(&self) -> &str {
        self.text[ORG_ID_TEXT_LEN..].strip_prefix(':').unwrap_or_default()
    }

    /// The key form: the 16 org id bytes, then every segment followed by a
    /// zero byte. Containment of partitions is byte-prefix of keys.
    pub fn to_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(ORG_ID_BYTES + self.text.len() - ORG_ID_TEXT_LEN);
        self.write_key(&mut key);
        key
    }

    /// Appends the key form to `out`.
    pub fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.org.as_bytes());
        for segment in self.segments() {
            out.extend_from_slice(segment.as_bytes());
            out.push(0);
        }
    }

    /// Reads a partition back from its whole key form.
    pub fn from_key(key: &[u8]) -> Result<Partition, PartitionError> {
        if key.len() < ORG_ID_BYTES {
            return Err(PartitionError::Key);
        }
        let mut org = [0u8; ORG_ID_BYTES];
        org.copy_from_slice(&key[..ORG_ID_BYTES]);
        let mut partition = Partition::root(OrgId::from_bytes(org));
        let mut rest = &key[ORG_ID_BYTES..];
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == 0).ok_or(PartitionError::Key)?;
            let segment = std::str::from_utf8(&rest[..end]).map_err(|_| PartitionError::Key)?;
            partition = partition.child(segment)?;
            rest = &rest[end + 1..];
        }
        Ok(partition)
    }
}

/// Checks one segment of a partition (also used for template values).
pub(crate) fn check_segment(index: usize, segment: &str) -> Result<(), PartitionError> {
    if segment.is_empty() {
        return Err(PartitionError::EmptySegment { index });
    }
    if segment.len() > SEGMENT_BYTES_MAX {
        return Err(PartitionError::SegmentTooLong { index, len: segment.len(), max: SEGMENT_BYTES_MAX });
    }
    if let Some(ch) = segment.chars().find(|&c| !is_segment_char(c)) {
        return Err(PartitionError::Character { index, ch });
    }
    Ok(())
}

pub(crate) fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl Ord for Partition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Segment by segment is byte order with the separator ranked below
        // every segment character (as the key form's 0x00 terminator is).
        let rank = |b: u8| if b == b':' { 0 } else { b };
        self.org.cmp(&other.org).then_with(|| {
            let (a, b) = (&self.text.as_bytes()[ORG_ID_TEXT_LEN..], &other.text.as_bytes()[ORG_ID_TEXT_LEN..]);
            a.iter().map(|&x| rank(x)).cmp(b.iter().map(|&x| rank(x)))
        })
    }
}

impl PartialOrd for Partition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Partition({})", self.text)
    }
}

impl FromStr for Partition {
    type Err = PartitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Partition::parse(s)
    }
}

impl serde::Serialize for Partition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Partition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Partition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a partition")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Partition, E> {
                Partition::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> OrgId {
        OrgId::from_public_key(&[1u8; 32])
    }

    #[test]
    fn partition_contains_by_whole_segments() {
        let tc4 = Partition::resolve(org(), "results:tc-4").unwrap();
        let tc42 = Partition::resolve(org(), "results:tc-42").unwrap();
        let tc4_student = Partition::resolve(org(), "results:tc-4:s1").unwrap();
        assert!(!tc4.contains(&tc42));
        assert!(tc4.contains(&tc4_student));
        assert!(tc4.contains(&tc4));
        assert!(!tc4_student.contains(&tc4));
        assert!(Partition::root(org()).contains(&tc42));
    }

    #[test]
    fn partition_of_another_org_is_never_contained() {
        let other = OrgId::from_public_key(&[2u8; 32]);
        let a = Partition::resolve(org(), "results").unwrap();
        let b = Partition::resolve(other, "results").unwrap();
        assert!(!Partition::root(org()).contains(&b));
        assert!(!a.contains(&b));
    }

    #[test]
    fn partition_relative_text_resolves_against_the_org() {
        let p = Partition::resolve(org(), "results:tc-1").unwrap();
        assert_eq!(p.to_string(), format!("{}:results:tc-1", org()));
        assert_eq!(p.relative(), "results:tc-1");
        assert_eq!(Partition::resolve(org(), &p.to_string()).unwrap(), p);
        assert_eq!(Partition::resolve(org(), "").unwrap(), Partition::root(org()));
        assert_eq!(p.segments().collect::<Vec<_>>(), ["results", "tc-1"]);
        assert_eq!(p.depth(), 2);
    }

    #[test]
    fn partition_rejects_bad_segments_with_the_reason() {
        let o = org();
        assert_eq!(Partition::resolve(o, "a::b"), Err(PartitionError::EmptySegment { index: 1 }));
        assert_eq!(Partition::resolve(o, "a:b c"), Err(PartitionError::Character { index: 1, ch: ' ' }));
        let long = "x".repeat(SEGMENT_BYTES_MAX + 1);
        assert_eq!(Partition::resolve(o, &long), Err(PartitionError::SegmentTooLong { index: 0, len: 65, max: 64 }));
        let deep = ["s"; PARTITION_SEGMENTS_MAX + 1].join(":");
        assert_eq!(Partition::resolve(o, &deep), Err(PartitionError::TooDeep { depth: 9, max: 8 }));
        assert!(matches!(Partition::parse("nope:results"), Err(PartitionError::Org(_))));
        assert_eq!(Partition::parse(""), Err(PartitionError::Empty));
    }

    #[test]
    fn partition_key_prefix_is_containment() {
        let tc4 = Partition::resolve(org(), "results:tc-4").unwrap();
        let tc42 = Partition::resolve(org(), "results:tc-42").unwrap();
        let tc4s = Partition::resolve(org(), "results:tc-4:s1").unwrap();
        assert!(tc4s.to_key().starts_with(&tc4.to_key()));
        assert!(!tc42.to_key().starts_with(&tc4.to_key()));
        assert_eq!(Partition::from_key(&tc4s.to_key()).unwrap(), tc4s);
        assert_eq!(Partition::from_key(&[0; 3]), Err(PartitionError::Key));
    }
}
