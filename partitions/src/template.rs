//! Scope templates: scopes with `${param}` placeholders, expanded from named
//! parameters, after Morango's `${facility_id}:user-rw:${user_id}`.
//!
//! Templates are written relative to an org. A parameter's value must be one
//! well-formed segment, so a value can never add segments (`a:b`) or escape
//! into another org. Expansion takes exactly the template's parameters: a
//! missing one and an unknown one are both errors.

use std::collections::{BTreeMap, BTreeSet};

use crate::filter::Filter;
use crate::limits::{FILTER_PREFIXES_MAX, TEMPLATE_BYTES_MAX, TEMPLATE_PARAMS_MAX};
use crate::org::OrgId;
use crate::partition::{Partition, PartitionError, check_segment};
use crate::scope::{RecordType, Scope, TypeMode};

/// One partition with placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

/// A scope with placeholders in its filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeTemplate {
    pub read: Vec<Template>,
    pub write: Vec<Template>,
    pub types: BTreeMap<RecordType, TypeMode>,
}

/// Why a template cannot be parsed or expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("template {template:?} at byte {at}: {reason}")]
    Syntax { template: String, at: usize, reason: &'static str },
    #[error("template uses {count} parameters, more than the {max} allowed")]
    TooManyParams { count: usize, max: usize },
    #[error("template has {count} partitions, more than the {max} allowed")]
    TooManyPartitions { count: usize, max: usize },
    #[error("parameter {name:?} is missing")]
    Missing { name: String },
    #[error("parameter {name:?} is not used by the template")]
    Unknown { name: String },
    #[error("parameter {name:?} is not one partition segment: {error}")]
    BadValue { name: String, error: PartitionError },
    #[error("template {template:?} expands to a bad partition: {error}")]
    Partition { template: String, error: PartitionError },
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        if text.len() > TEMPLATE_BYTES_MAX {
            return Err(TemplateError::TooLong { len: text.len(), max: TEMPLATE_BYTES_MAX });
        }
        let syntax = |at: usize, reason: &'static str| TemplateError::Syntax { template: text.to_owned(), at, reason };
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| syntax(offset + start, "unterminated ${"))?;
            let name = &after[..end];
            if name.is_empty() {
                return Err(syntax(offset + start, "empty parameter name"));
            }
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(syntax(offset + start, "parameter names are [a-z_][a-z0-9_]*"));
            }
            pieces.push(Piece::Param(name.to_owned()));
            let consumed = start + 2 + end + 1;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if let Some(at) = rest.find('$') {
            return Err(syntax(offset + at, "a $ must start ${name}"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// The names of the parameters this template uses.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Param(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Expands with `values` and resolves against `org`.
    pub fn expand(&self, org: OrgId, values: &BTreeMap<String, String>) -> Result<Partition, TemplateError> {
        let mut text = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Param(name) => {
                    let value = values.get(name).ok_or_else(|| TemplateError::Missing { name: name.clone() })?;
                    check_segment(0, value).map_err(|error| TemplateError::BadValue { name: name.clone(), error })?;
                    text.push_str(value);
                }
            }
        }
        Partition::resolve(org, &text).map_err(|error| TemplateError::Partition { template: self.to_string(), error })
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => f.write_str(t)?,
                Piece::Param(name) => write!(f, "${{{name}}}")?,
            }
        }
        Ok(())
    }
}

impl ScopeTemplate {
    /// Parses comma-separated read and write templates and `TYPE=MODE,…`.
    pub fn parse(read: &str, write: &str, types: &str) -> Result<ScopeTemplate, TemplateError> {
        let list = |text: &str| -> Result<Vec<Template>, TemplateError> {
            let items: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if items.len() > FILTER_PREFIXES_MAX {
                return Err(TemplateError::TooManyPartitions { count: items.len(), max: FILTER_PREFIXES_MAX });
            }
            items.into_iter().map(Template::parse).collect()
        };
        let template = ScopeTemplate {
            read: list(read)?,
            write: list(write)?,
            types: Scope::parse_types(types).map_err(|e| TemplateError::Syntax {
                template: types.to_owned(),
                at: 0,
                reason: match e {
                    crate::scope::ScopeError::TooManyTypes { .. } => "too many record types",
                    _ => "type modes are TYPE=MODE with MODE one of rw, ro, update-only, none",
                },
            })?,
        };
        let count = template.params().len();
        if count > TEMPLATE_PARAMS_MAX {
            return Err(TemplateError::TooManyParams { count, max: TEMPLATE_PARAMS_MAX });
        }
        Ok(template)
    }

    /// Every parameter name the template uses.
    pub fn params(&self) -> BTreeSet<&str> {
        self.read.iter().chain(&self.write).flat_map(Template::params).collect()
    }

    /// The scope for these parameter values: exactly the template's
    /// parameters must be given.
    pub fn expand(&self, org: OrgId, values: &BTreeMap<String, String>) -> Result<Scope, TemplateError> {
        let params = self.params();
        if let Some(name) = values.keys().find(|k| !params.contains(k.as_str())) {
            return Err(TemplateError::Unknown { name: name.clone() });
        }
        if let Some(name) = params.iter().find(|p| !values.contains_key(**p)) {
            return Err(TemplateError::Missing { name: (*name).to_owned() });
        }
        let expand_all = |templates: &[Template]| -> Result<Filter, TemplateError> {
            Ok(Filter::new(templates.iter().map(|t| t.expand(org, values)).collect::<Result<Vec<_>, _>>()?))
        };
        Ok(Scope { read: expand_all(&self.read)?, write: expand_all(&self.write)?, types: self.types.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> OrgId {
        OrgId::from_public_key(&[1u8; 32])
    }
    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn morango_single_user_template_expands_to_the_users_partitions() {
        let template =
            ScopeTemplate::parse("${facility}:user-ro,${facility}:user-rw:${user}", "${facility}:user-rw:${user}", "")
                .unwrap();
        assert_eq!(template.params(), BTreeSet::from(["facility", "user"]));
        let scope = template.expand(org(), &values(&[("facility", "f1"), ("user", "u7")])).unwrap();
        assert_eq!(scope.write, Filter::parse(org(), "f1:user-rw:u7").unwrap());
        assert_eq!(scope.read, Filter::parse(org(), "f1:user-ro,f1:user-rw:u7").unwrap());
    }

    #[test]
    fn template_rejects_missing_unknown_and_segment_escaping_values() {
        let template = ScopeTemplate::parse("${facility}", "", "").unwrap();
        assert_eq!(template.expand(org(), &values(&[])), Err(TemplateError::Missing { name: "facility".into() }));
        assert_eq!(
            template.expand(org(), &values(&[("facility", "f"), ("user", "u")])),
            Err(TemplateError::Unknown { name: "user".into() })
        );
        assert!(matches!(
            template.expand(org(), &values(&[("facility", "f:other")])),
            Err(TemplateError::BadValue { .. })
        ));
    }

    #[test]
    fn template_syntax_errors_say_where() {
        assert!(matches!(Template::parse("a:${x"), Err(TemplateError::Syntax { at: 2, .. })));
        assert!(matches!(Template::parse("${}"), Err(TemplateError::Syntax { at: 0, .. })));
        assert!(matches!(Template::parse("a$b"), Err(TemplateError::Syntax { at: 1, .. })));
        assert!(matches!(Template::parse("${Bad}"), Err(TemplateError::Syntax { .. })));
    }
}
