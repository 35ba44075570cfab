//! Enrolment tokens on the issuer side: creating them (`ferry enroll-token`)
//! and redeeming one for a device, once, within its window.

use anyhow::{Context, anyhow, bail};
use certs::{Token, TokenRecord, TokenRequest, pem};
use partitions::OrgId;
use serde_json::json;

use crate::home::{write_atomic, write_private};

use super::*;

impl Node {
    // -- enrolment tokens (issuer side) -------------------------------------

    pub fn tokens(&self) -> anyhow::Result<Vec<TokenRecord>> {
        let path = self.home.tokens_file();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path)?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    pub(super) fn save_tokens(&self, tokens: &[TokenRecord]) -> anyhow::Result<()> {
        write_private(&self.home.tokens_file(), serde_json::to_string_pretty(tokens)?.as_bytes())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_token(
        &self,
        org: OrgId,
        read: &str,
        write: &str,
        types: &str,
        ttl_s: u64,
        uses: u32,
        days: u64,
        can_issue: bool,
        authority: Option<String>,
        addresses: Vec<String>,
    ) -> anyhow::Result<serde_json::Value> {
        let days = certificate_days(days)?;
        if uses == 0 {
            bail!("--uses 0 would make a token nobody can use: give at least 1");
        }
        if ttl_s == 0 {
            bail!("--ttl 0s would make a token that has already expired: give at least 1s");
        }
        let issuer = self.issuer(org)?;
        let request = TokenRequest {
            scope: parse_scope(org, read, write, types)?,
            can_issue: can_issue.then_some(0),
            authority,
            certificate_validity: days.saturating_mul(86_400),
            expires_at: now_s().saturating_add(ttl_s),
            uses,
        };
        let (token, record) =
            certs::create_token(&issuer, &self.identity.key, addresses, &request, &mut crate::random::rng())?;
        let mut tokens = self.tokens()?;
        tokens.retain(|t| t.expires_at >= now_s() && t.uses_left > 0);
        tokens.push(record);
        self.save_tokens(&tokens)?;
        Ok(json!({ "token": token.encode() }))
    }

    /// Redeems a presented secret for `subject`; the use is saved before the
    /// chain is returned, so a token can never issue twice for one use. The
    /// certificate starts early enough for the device's clock
    /// (`device_clock_s`), or the enrolment is refused before anything is
    /// spent: a device must be able to use what it is given.
    pub fn redeem_token(
        &self,
        secret: &[u8; 32],
        subject: &[u8; 32],
        name: &str,
        device_clock_s: Option<u64>,
    ) -> Result<Vec<u8>, String> {
        let mut tokens = self.tokens().map_err(|e| format!("{e:#}"))?;
        let hash = certs::token::secret_hash(secret);
        let Some(record) = tokens.iter_mut().find(|t| blake3::Hash::from(t.secret_hash) == blake3::Hash::from(hash))
        else {
            return Err("unknown enrolment token".into());
        };
        let issuer = self.issuer(record.org).map_err(|e| e.to_string())?;
        let now = now_s();
        // A token that is spent or expired is refused as such (by redeem),
        // whatever the device's clock says.
        let usable = record.uses_left > 0 && now <= record.expires_at;
        let not_before = match device_clock_s {
            Some(device) if usable => {
                let leaf = issuer.chain().leaf();
                let not_after = now.saturating_add(record.certificate_validity).min(leaf.not_after());
                enrol_window(now, device, leaf.not_before(), not_after)?
            }
            _ => now.saturating_sub(CLOCK_SKEW_S).max(issuer.chain().leaf().not_before()),
        };
        let chain = certs::redeem_at(record, secret, subject, name, now, not_before, &issuer, crate::random::bytes())
            .map_err(|e| e.to_string())?;
        self.save_tokens(&tokens).map_err(|e| e.to_string())?;
        let _ = write_atomic(
            &self.home.issued_dir().join(format!("{}.pem", chain.leaf().id())),
            pem::encode_chain(&chain).as_bytes(),
        );
        Ok(chain.encode())
    }
}

/// When a certificate issued at enrolment starts: a minute before the
/// earlier of the two clocks, but no more than `ENROL_CLOCK_BEHIND_MAX_S`
/// before the issuer's and not before the issuer's own certificate. A device
/// whose clock falls outside the certificate's window is refused (nothing is
/// spent): it could not use the certificate.
pub(super) fn enrol_window(issuer_now: u64, device_now: u64, issuer_start: u64, not_after: u64) -> Result<u64, String> {
    let earliest = issuer_now.saturating_sub(ENROL_CLOCK_BEHIND_MAX_S).max(issuer_start);
    let start = issuer_now.min(device_now).saturating_sub(CLOCK_SKEW_S).max(earliest);
    if device_now < start || device_now > not_after {
        let edge = if device_now < start { ("start", start) } else { ("end", not_after) };
        return Err(format!(
            "this device's clock reads {}, the issuer's {}, and the certificate would {} at {}; check the clock (the token was not used)",
            iso8601_ms(device_now.saturating_mul(1000)),
            iso8601_ms(issuer_now.saturating_mul(1000)),
            edge.0,
            iso8601_ms(edge.1.saturating_mul(1000)),
        ));
    }
    Ok(start)
}
/// Decodes a token line with a friendly error.
pub fn parse_token(text: &str) -> anyhow::Result<Token> {
    Token::decode(text).map_err(|e| anyhow!("that is not a valid enrolment token: {e}"))
}
