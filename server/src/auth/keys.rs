//! The keys tokens are checked against and signed with: shared secrets (HS256, HS384,
//! HS512), and public keys from PEM files (RSA, P-256, P-384, Ed25519) for tokens an identity
//! provider signs with a private key the server never sees.

use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use rustls::pki_types::pem::{PemObject as _, SectionKind};

/// A token's `alg`: the ones Herald checks (never `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    /// Every algorithm Herald checks.
    pub const ALL: [Alg; 12] = [
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::EdDsa,
    ];

    /// The name a JWT header gives it.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a header names, if Herald checks it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A key a token's signature is checked with.
#[derive(Clone)]
pub enum VerifyKey {
    /// A shared secret: HS256, HS384 and HS512.
    Secret(Vec<u8>),
    /// An RSA public key (PKCS#1 `RSAPublicKey`, DER): RS256 to RS512 and PS256 to PS512.
    Rsa(Vec<u8>),
    /// A P-256 public key (the uncompressed point): ES256.
    P256(Vec<u8>),
    /// A P-384 public key (the uncompressed point): ES384.
    P384(Vec<u8>),
    /// An Ed25519 public key: EdDSA.
    Ed25519(Vec<u8>),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret is never printed.
        f.write_str(match self {
            VerifyKey::Secret(_) => "Secret(..)",
            VerifyKey::Rsa(_) => "Rsa(..)",
            VerifyKey::P256(_) => "P256(..)",
            VerifyKey::P384(_) => "P384(..)",
            VerifyKey::Ed25519(_) => "Ed25519(..)",
        })
    }
}

impl VerifyKey {
    /// Whether this key checks tokens of `alg`.
    pub fn checks(&self, alg: Alg) -> bool {
        self.check(alg).is_some()
    }

    /// Whether `signature` is this key's for `input` under `alg` (false for an algorithm the
    /// key does not check).
    pub fn verifies(&self, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
        match self.check(alg) {
            Some(Check::Hmac(algorithm, secret)) => {
                let key = ring::hmac::Key::new(algorithm, secret);
                ring::hmac::verify(&key, input, signature).is_ok()
            }
            Some(Check::Public(algorithm, key)) => sig::UnparsedPublicKey::new(algorithm, key)
                .verify(input, signature)
                .is_ok(),
            None => false,
        }
    }

    /// How this key checks a signature under `alg`, if it does: the one table of which key
    /// takes which algorithm.
    fn check(&self, alg: Alg) -> Option<Check<'_>> {
        use Alg::*;
        let public: (&'static dyn sig::VerificationAlgorithm, &[u8]) = match (self, alg) {
            (VerifyKey::Secret(secret), Hs256 | Hs384 | Hs512) => {
                return Some(Check::Hmac(hmac_algorithm(alg), secret));
            }
            (VerifyKey::Rsa(key), Rs256) => (&sig::RSA_PKCS1_2048_8192_SHA256, key),
            (VerifyKey::Rsa(key), Rs384) => (&sig::RSA_PKCS1_2048_8192_SHA384, key),
            (VerifyKey::Rsa(key), Rs512) => (&sig::RSA_PKCS1_2048_8192_SHA512, key),
            (VerifyKey::Rsa(key), Ps256) => (&sig::RSA_PSS_2048_8192_SHA256, key),
            (VerifyKey::Rsa(key), Ps384) => (&sig::RSA_PSS_2048_8192_SHA384, key),
            (VerifyKey::Rsa(key), Ps512) => (&sig::RSA_PSS_2048_8192_SHA512, key),
            // JWS carries an ECDSA signature as r and s side by side (RFC 7518, 3.4).
            (VerifyKey::P256(key), Es256) => (&sig::ECDSA_P256_SHA256_FIXED, key),
            (VerifyKey::P384(key), Es384) => (&sig::ECDSA_P384_SHA384_FIXED, key),
            (VerifyKey::Ed25519(key), EdDsa) => (&sig::ED25519, key),
            _ => return None,
        };
        Some(Check::Public(public.0, public.1))
    }
}

/// How a [`VerifyKey`] checks one algorithm's signatures.
enum Check<'k> {
    Hmac(ring::hmac::Algorithm, &'k [u8]),
    Public(&'static dyn sig::VerificationAlgorithm, &'k [u8]),
}

/// A key as a key set (JWKS) names it: its id, and the one algorithm it is for.
#[derive(Clone, Debug)]
pub struct NamedKey {
    /// `kid`: a token naming a key id is checked with the keys of that id only.
    pub kid: Option<String>,
    /// `alg`: the key checks tokens of this algorithm only.
    pub alg: Option<Alg>,
    /// The key.
    pub key: VerifyKey,
}

impl From<VerifyKey> for NamedKey {
    fn from(key: VerifyKey) -> Self {
        Self {
            kid: None,
            alg: None,
            key,
        }
    }
}

impl NamedKey {
    /// Whether this key checks tokens of `alg`.
    pub fn checks(&self, alg: Alg) -> bool {
        self.key.checks(alg) && self.alg.is_none_or(|only| only == alg)
    }

    /// Whether a token naming `kid` (or none) may be checked with this key.
    pub fn answers_to(&self, kid: Option<&str>) -> bool {
        match (kid, &self.kid) {
            (Some(asked), Some(own)) => asked == own,
            _ => true,
        }
    }
}

fn hmac_algorithm(alg: Alg) -> ring::hmac::Algorithm {
    match alg {
        Alg::Hs384 => ring::hmac::HMAC_SHA384,
        Alg::Hs512 => ring::hmac::HMAC_SHA512,
        _ => ring::hmac::HMAC_SHA256,
    }
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// It holds no key Herald can use.
    #[error("{}: {why}", path.display())]
    Unusable { path: PathBuf, why: String },
}

fn read_pem<T>(path: &Path, parse: impl FnOnce(&[u8]) -> Result<T, String>) -> Result<T, KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&pem).map_err(|why| KeyError::Unusable {
        path: path.to_owned(),
        why,
    })
}

/// The blocks of a PEM file, in order.
fn pem_sections(pem: &[u8]) -> impl Iterator<Item = Result<(SectionKind, Vec<u8>), String>> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).map(|s| s.map_err(|e| format!("not PEM: {e}")))
}

/// The public keys in a PEM file: `PUBLIC KEY` blocks (what `openssl pkey -pubout` writes)
/// and `CERTIFICATE` blocks (the key they certify), one or more.
pub fn public_keys_from_file(path: &Path) -> Result<Vec<VerifyKey>, KeyError> {
    read_pem(path, public_keys_from_pem)
}

fn public_keys_from_pem(pem: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let mut keys = Vec::new();
    for section in pem_sections(pem) {
        let (kind, der) = section?;
        match kind {
            SectionKind::PublicKey => keys.push(spki_key(&der)?),
            SectionKind::Certificate => keys.push(spki_key(certified_key(&der)?)?),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(
                    "it holds a private key: give the server the public key alone \
                            (`openssl pkey -in private.pem -pubout -out public.pem`)"
                        .into(),
                );
            }
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err(
            "expected PEM `PUBLIC KEY` or `CERTIFICATE` blocks (an `RSA PUBLIC KEY` converts \
             with `openssl rsa -RSAPublicKey_in -in key.pem -pubout`)"
                .into(),
        );
    }
    Ok(keys)
}

/// DER object identifiers (their content octets) of the keys Herald takes.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

pub(super) const SEQUENCE: u8 = 0x30;
const OBJECT_ID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
pub(super) const INTEGER: u8 = 0x02;

/// The key of a DER `SubjectPublicKeyInfo`.
fn spki_key(der: &[u8]) -> Result<VerifyKey, String> {
    let malformed = || String::from("a PUBLIC KEY block is not a well-formed key");
    let info = Der::expect(der, SEQUENCE).ok_or_else(malformed)?.content;
    let algorithm = Der::expect(info, SEQUENCE).ok_or_else(malformed)?;
    let bits = Der::expect(algorithm.rest, BIT_STRING).ok_or_else(malformed)?;
    // The key's bits start on a byte boundary: no unused bits.
    let key = match bits.content.split_first() {
        Some((0, key)) => key.to_vec(),
        _ => return Err(malformed()),
    };
    let oid = Der::expect(algorithm.content, OBJECT_ID).ok_or_else(malformed)?;
    match oid.content {
        RSA_ENCRYPTION | RSASSA_PSS => checked_rsa(key),
        EC_PUBLIC_KEY => match Der::expect(oid.rest, OBJECT_ID).map(|c| c.content) {
            Some(P256) => Ok(VerifyKey::P256(key)),
            Some(P384) => Ok(VerifyKey::P384(key)),
            _ => Err("an EC key on a curve other than P-256 and P-384 (ES256, ES384)".into()),
        },
        ED25519 => Ok(VerifyKey::Ed25519(key)),
        _ => {
            Err("a key of a kind Herald does not check (RSA, P-256, P-384 and Ed25519 are)".into())
        }
    }
}

/// The size of an RSA key's modulus, from its PKCS#1 `RSAPublicKey`.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let key = Der::expect(der, SEQUENCE)?.content;
    let modulus = Der::expect(key, INTEGER)?.content;
    let first = modulus.iter().position(|b| *b != 0)?;
    Some((modulus.len() - first) * 8 - modulus[first].leading_zeros() as usize)
}

/// The `SubjectPublicKeyInfo` (whole, as DER) of a DER certificate.
fn certified_key(der: &[u8]) -> Result<&[u8], String> {
    let malformed = || String::from("a CERTIFICATE block is not a well-formed certificate");
    let certificate = Der::expect(der, SEQUENCE).ok_or_else(malformed)?.content;
    let mut fields = Der::expect(certificate, SEQUENCE)
        .ok_or_else(malformed)?
        .content;
    // [0] version (absent in version 1), serial number, signature algorithm, issuer,
    // validity, subject, then the key.
    let mut skip = 5;
    loop {
        let field = Der::read(fields).ok_or_else(malformed)?;
        match field.tag {
            0xa0 => {}
            _ if skip == 0 => return Ok(field.whole),
            _ => skip -= 1,
        }
        fields = field.rest;
    }
}

/// One DER element.
struct Der<'a> {
    tag: u8,
    /// The element, tag and length included.
    whole: &'a [u8],
    content: &'a [u8],
    /// What follows it.
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn read(input: &'a [u8]) -> Option<Self> {
        let (&tag, after_tag) = input.split_first()?;
        let (&first, after_length) = after_tag.split_first()?;
        let (len, content_and_rest) = match first {
            0..=0x7f => (usize::from(first), after_length),
            // The long form, with a length of at most 4 bytes (a key is never that big).
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                let (octets, rest) = after_length.split_at_checked(n)?;
                (
                    octets.iter().fold(0, |len, b| len << 8 | usize::from(*b)),
                    rest,
                )
            }
            _ => return None,
        };
        let (content, rest) = content_and_rest.split_at_checked(len)?;
        let whole = &input[..input.len() - rest.len()];
        Some(Self {
            tag,
            whole,
            content,
            rest,
        })
    }

    fn expect(input: &'a [u8], tag: u8) -> Option<Self> {
        Self::read(input).filter(|d| d.tag == tag)
    }
}

/// A DER element of `tag` holding `content`.
pub(super) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match u8::try_from(content.len()) {
        Ok(len @ 0..0x80) => out.push(len),
        _ => {
            let octets: Vec<u8> = content
                .len()
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            // A usize has at most 8 bytes.
            out.push(0x80 | octets.len() as u8);
            out.extend(octets);
        }
    }
    out.extend_from_slice(content);
    out
}

/// An RSA public key (PKCS#1 `RSAPublicKey`, DER) from its modulus and exponent (unsigned,
/// big-endian), checked as a key from a file is.
pub(super) fn rsa_key(modulus: &[u8], exponent: &[u8]) -> Result<VerifyKey, String> {
    // DER integers are signed: a leading zero keeps a high first bit positive.
    let integer = |value: &[u8]| {
        let value = &value[value.iter().take_while(|b| **b == 0).count()..];
        let mut content = Vec::with_capacity(value.len() + 1);
        if value.first().is_none_or(|b| *b >= 0x80) {
            content.push(0);
        }
        content.extend_from_slice(value);
        der(INTEGER, &content)
    };
    let mut fields = integer(modulus);
    fields.extend(integer(exponent));
    checked_rsa(der(SEQUENCE, &fields))
}

fn checked_rsa(key: Vec<u8>) -> Result<VerifyKey, String> {
    let bits =
        rsa_modulus_bits(&key).ok_or_else(|| String::from("an RSA key that is not well-formed"))?;
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits: tokens are checked with 2048 to 8192 bits"
        ));
    }
    Ok(VerifyKey::Rsa(key))
}

/// A key tokens are signed with: the server's secret, or a private key (`herald token
/// --private-key`, for a server that checks tokens with the public half).
pub enum SigningKey {
    /// HS256.
    Secret(Vec<u8>),
    /// RS256.
    Rsa(sig::RsaKeyPair),
    /// ES256 or ES384.
    Ecdsa(sig::EcdsaKeyPair, Alg),
    /// EdDSA.
    Ed25519(sig::Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.alg().name())
    }
}

impl SigningKey {
    /// The private key in a PEM file: PKCS#8 (`PRIVATE KEY`, what `openssl genpkey` writes)
    /// of an RSA, P-256, P-384 or Ed25519 key, or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        read_pem(path, Self::from_pem)
    }

    fn from_pem(pem: &[u8]) -> Result<Self, String> {
        for section in pem_sections(pem) {
            let (kind, der) = section?;
            match kind {
                SectionKind::RsaPrivateKey => {
                    return sig::RsaKeyPair::from_der(&der)
                        .map(Self::Rsa)
                        .map_err(|e| format!("an RSA key that cannot sign: {e}"));
                }
                SectionKind::PrivateKey => return Self::from_pkcs8(&der),
                SectionKind::EcPrivateKey => {
                    return Err("an `EC PRIVATE KEY` (SEC1): convert it to PKCS#8 with \
                                `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key8.pem`"
                        .into());
                }
                _ => {}
            }
        }
        Err("expected a PEM `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` block".into())
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        if let Ok(key) = sig::RsaKeyPair::from_pkcs8(der) {
            return Ok(Self::Rsa(key));
        }
        for (alg, signing) in [
            (Alg::Es256, &sig::ECDSA_P256_SHA256_FIXED_SIGNING),
            (Alg::Es384, &sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        ] {
            if let Ok(key) = sig::EcdsaKeyPair::from_pkcs8(signing, der, &rng) {
                return Ok(Self::Ecdsa(key, alg));
            }
        }
        // openssl writes Ed25519 keys as PKCS#8 version 1, without the public key.
        sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(Self::Ed25519)
            .map_err(|_| {
                "a PKCS#8 key Herald cannot sign with (RSA of 2048 bits or more, P-256, P-384 \
                 and Ed25519 it can)"
                    .into()
            })
    }

    /// The algorithm its tokens name.
    pub fn alg(&self) -> Alg {
        match self {
            SigningKey::Secret(_) => Alg::Hs256,
            SigningKey::Rsa(_) => Alg::Rs256,
            SigningKey::Ecdsa(_, alg) => *alg,
            SigningKey::Ed25519(_) => Alg::EdDsa,
        }
    }

    /// The signature of `input`.
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Secret(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::sign(&key, input).as_ref().to_vec()
            }
            SigningKey::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                // Fails only for a buffer of the wrong size or a broken random source.
                key.sign(&sig::RSA_PKCS1_SHA256, &rng, input, &mut out)
                    .unwrap_or_else(|e| panic!("RSA signing failed: {e}"));
                out
            }
            SigningKey::Ecdsa(key, _) => key
                .sign(&rng, input)
                .unwrap_or_else(|e| panic!("ECDSA signing failed: {e}"))
                .as_ref()
                .to_vec(),
            SigningKey::Ed25519(key) => key.sign(input).as_ref().to_vec(),
        }
    }

    /// The key that checks this key's tokens.
    pub fn verify_key(&self) -> VerifyKey {
        match self {
            SigningKey::Secret(secret) => VerifyKey::Secret(secret.clone()),
            SigningKey::Rsa(key) => VerifyKey::Rsa(key.public_key().as_ref().to_vec()),
            SigningKey::Ecdsa(key, Alg::Es384) => {
                VerifyKey::P384(key.public_key().as_ref().to_vec())
            }
            SigningKey::Ecdsa(key, _) => VerifyKey::P256(key.public_key().as_ref().to_vec()),
            SigningKey::Ed25519(key) => VerifyKey::Ed25519(key.public_key().as_ref().to_vec()),
        }
    }
}

/// Keys made for tests, as the PEM files `openssl` would write for them.
#[cfg(test)]
pub(super) mod test_keys {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use ring::rand::SystemRandom;
    use ring::signature::{self as sig, KeyPair as _};

    use super::*;

    /// A `SubjectPublicKeyInfo` for `key` of the algorithm `oid` (with a curve's `params`).
    pub fn spki(oid: &[u8], params: Option<&[u8]>, key: &[u8]) -> Vec<u8> {
        let mut algorithm = der(OBJECT_ID, oid);
        if let Some(params) = params {
            algorithm.extend(der(OBJECT_ID, params));
        }
        let mut bits = vec![0];
        bits.extend_from_slice(key);
        let mut info = der(SEQUENCE, &algorithm);
        info.extend(der(BIT_STRING, &bits));
        der(SEQUENCE, &info)
    }

    /// `der` as a PEM block labelled `label`.
    pub fn pem(label: &str, der: &[u8]) -> String {
        let text = STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A new key of `alg` (ES256, ES384 or EdDSA): its private key and its public key, as PEM.
    pub fn pair(alg: Alg) -> (String, String) {
        let rng = SystemRandom::new();
        let (pkcs8, public) = match alg {
            Alg::Es256 | Alg::Es384 => {
                let (signing, curve) = match alg {
                    Alg::Es256 => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, P256),
                    _ => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, P384),
                };
                let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
                let key = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
                let public = spki(EC_PUBLIC_KEY, Some(curve), key.public_key().as_ref());
                (pkcs8, public)
            }
            Alg::EdDsa => {
                let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let key = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                (pkcs8, spki(ED25519, None, key.public_key().as_ref()))
            }
            other => panic!("no test key for {other:?}"),
        };
        (
            pem("PRIVATE KEY", pkcs8.as_ref()),
            pem("PUBLIC KEY", &public),
        )
    }

    /// The public keys in `pem`, or why there are none.
    pub fn public(pem: &str) -> Result<Vec<VerifyKey>, String> {
        public_keys_from_pem(pem.as_bytes())
    }

    /// The private key in `pem`, or why there is none.
    pub fn private(pem: &str) -> Result<SigningKey, String> {
        SigningKey::from_pem(pem.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::*;
    use super::*;

    #[test]
    fn a_private_keys_signature_is_checked_by_its_public_key_and_no_other() {
        for alg in [Alg::Es256, Alg::Es384, Alg::EdDsa] {
            let (private_pem, public_pem) = pair(alg);
            let signer = private(&private_pem).unwrap();
            assert_eq!(signer.alg(), alg);
            let keys = public(&public_pem).unwrap();
            assert_eq!(keys.len(), 1);
            let signature = signer.sign(b"input");
            assert!(keys[0].verifies(alg, b"input", &signature), "{alg:?}");
            assert!(
                !keys[0].verifies(alg, b"other input", &signature),
                "{alg:?}"
            );
            let (_, stranger) = pair(alg);
            assert!(!public(&stranger).unwrap()[0].verifies(alg, b"input", &signature));
            // The key from the private half is the one in the public file.
            assert!(signer.verify_key().verifies(alg, b"input", &signature));
        }
    }

    #[test]
    fn each_key_checks_its_own_algorithms_only() {
        let (_, public_pem) = pair(Alg::Es256);
        let p256 = public(&public_pem).unwrap().remove(0);
        assert!(p256.checks(Alg::Es256));
        assert!(!p256.checks(Alg::Es384) && !p256.checks(Alg::Hs256));
        // A public key is public: one taken for an HMAC secret would let anyone sign.
        let VerifyKey::P256(point) = &p256 else {
            panic!("{p256:?}")
        };
        let forged = SigningKey::Secret(point.clone()).sign(b"input");
        assert!(!p256.verifies(Alg::Hs256, b"input", &forged));
        let secret = VerifyKey::Secret(b"s".to_vec());
        for alg in [Alg::Hs256, Alg::Hs384, Alg::Hs512] {
            let key = ring::hmac::Key::new(hmac_algorithm(alg), b"s");
            let tag = ring::hmac::sign(&key, b"input");
            assert!(secret.verifies(alg, b"input", tag.as_ref()), "{alg:?}");
        }
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("hs256"), None);
        assert_eq!(Alg::from_name("EdDSA"), Some(Alg::EdDsa));
    }

    #[test]
    fn key_files_that_cannot_be_used_say_why() {
        let (private_pem, public_pem) = pair(Alg::Es256);
        let why = public(&private_pem).unwrap_err();
        assert!(why.contains("holds a private key"), "{why}");
        let why = public("").unwrap_err();
        assert!(why.contains("expected PEM `PUBLIC KEY`"), "{why}");
        let why = private(&public_pem).unwrap_err();
        assert!(why.contains("expected a PEM `PRIVATE KEY`"), "{why}");
        let why = private(&pem("EC PRIVATE KEY", b"\x30\x00")).unwrap_err();
        assert!(why.contains("openssl pkcs8 -topk8"), "{why}");
        let why = private(&pem("PRIVATE KEY", b"\x30\x00")).unwrap_err();
        assert!(why.contains("cannot sign with"), "{why}");
        // RSA under 2048 bits (a modulus of 1024 bits, its top bit set, and the exponent).
        let mut modulus = vec![0x00, 0x80];
        modulus.resize(129, 0x01);
        let mut rsa = der(INTEGER, &modulus);
        rsa.extend(der(INTEGER, &[1, 0, 1]));
        let short = spki(RSA_ENCRYPTION, None, &der(SEQUENCE, &rsa));
        let why = public(&pem("PUBLIC KEY", &short)).unwrap_err();
        assert!(why.contains("RSA key of 1024 bits"), "{why}");
        // P-521 (1.3.132.0.35) is not checked.
        let p521 = spki(
            EC_PUBLIC_KEY,
            Some(&[0x2b, 0x81, 0x04, 0x00, 0x23]),
            &[4; 133],
        );
        let why = public(&pem("PUBLIC KEY", &p521)).unwrap_err();
        assert!(why.contains("curve other than P-256"), "{why}");
    }

    #[test]
    fn a_damaged_key_is_refused_never_misread() {
        let (_, public_pem) = pair(Alg::Es384);
        let der = match pem_sections(public_pem.as_bytes()).next() {
            Some(Ok((SectionKind::PublicKey, der))) => der,
            other => panic!("{other:?}"),
        };
        for len in 0..der.len() {
            assert!(spki_key(&der[..len]).is_err(), "cut at {len}");
        }
        let mut longer = der.clone();
        longer.push(0);
        // Trailing bytes after the key's own element are not part of it.
        assert!(matches!(spki_key(&longer), Ok(VerifyKey::P384(_))));
        assert!(certified_key(&der).is_err());
    }
}
