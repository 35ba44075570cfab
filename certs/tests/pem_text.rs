//! PEM text for chains: the exact form ferry writes, that it reads back,
//! what it ignores around the blocks, and each way a text is refused.

use certs::pem::{decode_chain, encode_chain};
use certs::{Chain, IssueRequest, Issuer, PemError, create_org};
use ed25519_dalek::SigningKey;
use partitions::{OrgId, Scope};

const T0: u64 = 1_700_000_000;

fn chain() -> Chain {
    let root_key = SigningKey::from_bytes(&[1; 32]);
    let root = create_org("Test org", &root_key, T0, T0 + 1000, [1; 16]).expect("org");
    let org = OrgId::from_public_key(&root_key.verifying_key().to_bytes());
    let request = IssueRequest {
        subject_key: SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes(),
        name: "device".into(),
        scope: Scope::full(org),
        not_before: T0,
        not_after: T0 + 100,
        can_issue: None,
        authority: None,
    };
    Issuer::new(root, root_key).expect("issuer").issue(&request, [2; 16]).expect("device")
}

#[test]
fn chains_are_written_as_lf_blocks_of_64_columns_and_read_back() {
    let chain = chain();
    let text = encode_chain(&chain);
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"), "{text}");
    assert!(text.ends_with("\n-----END CERTIFICATE-----\n"), "{text}");
    assert!(!text.contains('\r') && !text.contains("\n\n"), "{text}");
    assert_eq!(text.matches("-----BEGIN CERTIFICATE-----\n").count(), chain.len());
    assert!(text.contains("-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(line.len() <= 64, "{line}");
    }
    // Each block is the standard base64 of one certificate's DER.
    let first = text.lines().skip(1).take_while(|l| !l.starts_with("-----")).collect::<String>();
    assert_eq!(first, data_encoding::BASE64.encode(chain.certs()[0].der()));
    assert_eq!(decode_chain(&text), Ok(chain.encode()));
}

#[test]
fn text_around_the_blocks_and_other_blocks_are_ignored() {
    let chain = chain();
    let text = format!(
        "Certificate:\n    Data: …\n{}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\ntrailing words\n",
        encode_chain(&chain).replace('\n', "\r\n")
    );
    assert_eq!(decode_chain(&text), Ok(chain.encode()));
}

#[test]
fn bad_texts_are_refused_with_the_reason() {
    let good = encode_chain(&chain());
    let unclosed = good.trim_end().trim_end_matches("-----END CERTIFICATE-----").to_owned();
    let damaged = good.replacen("MII", "M!I", 1);
    let rows: Vec<(String, PemError)> = vec![
        ("".into(), PemError::NoCertificate),
        ("no blocks here".into(), PemError::NoCertificate),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(), PemError::NoCertificate),
        (unclosed, PemError::NotClosed),
        (
            "x".repeat(certs::limits::PEM_BYTES_MAX + 1),
            PemError::TooLarge { len: certs::limits::PEM_BYTES_MAX + 1, max: certs::limits::PEM_BYTES_MAX },
        ),
    ];
    for (text, expected) in rows {
        assert_eq!(decode_chain(&text), Err(expected), "{:?}", &text[..text.len().min(80)]);
    }
    assert!(matches!(decode_chain(&damaged), Err(PemError::Damaged { .. })), "{:?}", decode_chain(&damaged));
}
