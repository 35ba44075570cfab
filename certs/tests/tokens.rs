//! Enrolment tokens: one line that round-trips, and a redeem step that
//! issues exactly once per use and refuses wrong, expired and used tokens.

use certs::{EnrolError, Issuer, Revocations, Token, TokenError, TokenRequest, create_org, create_token, redeem};
use ed25519_dalek::SigningKey;
use partitions::{Filter, OrgId, Scope};

const T0: u64 = 1_700_000_000;
const DAY: u64 = 86_400;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn setup(uses: u32) -> (Issuer, Token, certs::TokenRecord) {
    let root = create_org("School district", &key(1), T0 - DAY, T0 + 365 * DAY, [1; 16]).expect("org");
    let issuer = Issuer::new(root, key(1)).expect("issuer");
    let org = OrgId::from_public_key(&key(1).verifying_key().to_bytes());
    let request = TokenRequest {
        scope: Scope {
            read: Filter::parse(org, "tests,results:tc-1").expect("filter"),
            write: Filter::parse(org, "results:tc-1").expect("filter"),
            types: Scope::parse_types("test=ro").expect("types"),
        },
        can_issue: None,
        authority: None,
        certificate_validity: 30 * DAY,
        expires_at: T0 + DAY,
        uses,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (token, record) = create_token(
        &issuer,
        &key(1),
        vec!["/ip4/127.0.0.1/tcp/4001".into(), "/ip4/127.0.0.1/udp/4001/quic-v1".into()],
        &request,
        &mut rng,
    )
    .expect("token");
    (issuer, token, record)
}

use rand::SeedableRng as _;

#[test]
fn token_is_one_line_that_decodes_back() {
    let (_, token, _) = setup(1);
    let line = token.encode();
    assert!(line.starts_with("ferry-enrol-"));
    assert!(line.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    assert_eq!(Token::decode(&line), Ok(token.clone()));
    assert_eq!(Token::decode(&format!("  {line}\n")), Ok(token));
}

#[test]
fn damaged_tokens_are_refused_with_a_reason() {
    let (_, token, _) = setup(1);
    let line = token.encode();
    assert_eq!(Token::decode("hello"), Err(TokenError::Prefix));
    assert!(matches!(Token::decode(&line[..line.len() - 3]), Err(TokenError::Base32(_) | TokenError::Content(_))));
    let mut upper = line.clone();
    upper.replace_range(20..21, "A");
    assert!(matches!(Token::decode(&upper), Err(TokenError::Base32(_))));
}

#[test]
fn redeem_issues_a_chain_for_the_device_key_and_counts_the_use() {
    let (issuer, token, mut record) = setup(2);
    let device = key(5).verifying_key().to_bytes();
    let chain = redeem(&mut record, &token.secret, &device, "tablet 5", T0, &issuer, [5; 16]).expect("enrols");
    let verified = chain.verify(Some(&device), T0, &Revocations::default()).expect("verifies");
    assert_eq!(verified.scope, token.scope);
    assert_eq!(verified.not_after, T0 + 30 * DAY);
    assert_eq!(record.uses_left, 1);
}

#[test]
fn wrong_expired_and_used_tokens_issue_nothing() {
    let (issuer, token, mut record) = setup(1);
    let device = key(5).verifying_key().to_bytes();
    let mut wrong = token.secret;
    wrong[0] ^= 1;
    assert_eq!(redeem(&mut record, &wrong, &device, "t", T0, &issuer, [5; 16]), Err(EnrolError::WrongSecret));
    assert_eq!(
        redeem(&mut record, &token.secret, &device, "t", T0 + 2 * DAY, &issuer, [5; 16]),
        Err(EnrolError::Expired { expires_at: T0 + DAY, now: T0 + 2 * DAY })
    );
    assert_eq!(record.uses_left, 1, "refusals do not use the token up");
    assert_eq!(redeem(&mut record, &token.secret, &[0; 32], "t", T0, &issuer, [5; 16]), Err(EnrolError::BadSubjectKey));
    assert!(redeem(&mut record, &token.secret, &device, "t", T0, &issuer, [5; 16]).is_ok());
    assert_eq!(redeem(&mut record, &token.secret, &device, "t", T0, &issuer, [6; 16]), Err(EnrolError::UsedUp));
}
