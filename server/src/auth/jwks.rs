//! JSON Web Key Sets (RFC 7517): the public keys an identity provider publishes at a URL
//! (`.../.well-known/jwks.json`), read at start and again from time to time, so that a key the
//! provider adds is taken without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::FetchedKeys;
use super::keys::{Alg, NamedKey, VerifyKey, rsa_key};

/// Where a key set is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// `http://` or `https://`, trusting the system's roots and the certificates of
    /// `ca_file` (--jwt-jwks-ca-file).
    Url {
        /// The set's address.
        url: String,
        /// PEM certificates to trust besides the system's.
        ca_file: Option<PathBuf>,
    },
    /// A file.
    File(PathBuf),
}

impl JwksSource {
    /// A URL when it starts with `http://` or `https://` (read trusting `ca_file` too), a file
    /// otherwise.
    pub fn parse(text: &str, ca_file: Option<&Path>) -> Self {
        if text.starts_with("http://") || text.starts_with("https://") {
            Self::Url {
                url: text.to_owned(),
                ca_file: ca_file.map(Path::to_path_buf),
            }
        } else {
            Self::File(PathBuf::from(text))
        }
    }

    /// Reads the set and returns the keys Herald can check tokens with.
    pub async fn fetch(&self) -> Result<Vec<NamedKey>, String> {
        let document = match self {
            JwksSource::File(path) => {
                let text = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
                serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))?
            }
            JwksSource::Url { url, ca_file } => {
                let trust = crate::client::Trust {
                    ca_file: ca_file.as_deref(),
                    flag: "--jwt-jwks-ca-file",
                };
                let (status, body) =
                    crate::client::request_json(http::Method::GET, url, None, None, trust)
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                if status != http::StatusCode::OK {
                    return Err(format!("answered {status}"));
                }
                body
            }
        };
        keys_of(document)
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Url { url, .. } => f.write_str(url),
            JwksSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

/// One JWK, with the members Herald reads.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The keys of a JWKS document that check signatures (RSA, P-256, P-384, Ed25519). Others
/// (encryption keys, symmetric keys, other curves) are passed over; a set with none left is an
/// error.
pub fn keys_of(document: serde_json::Value) -> Result<Vec<NamedKey>, String> {
    let set: KeySet =
        serde_json::from_value(document).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    let mut passed_over = Vec::new();
    for (i, member) in set.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(member) {
            Ok(jwk) => jwk,
            Err(e) => {
                passed_over.push(format!("key {i}: {e}"));
                continue;
            }
        };
        let name = jwk.kid.clone().unwrap_or_else(|| format!("key {i}"));
        match named_key(jwk) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(why) => passed_over.push(format!("{name}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(match passed_over.is_empty() {
            true => "no signature key (RSA, EC P-256 or P-384, Ed25519) in the set".into(),
            false => format!("no usable key in the set ({})", passed_over.join("; ")),
        });
    }
    Ok(keys)
}

/// The key a JWK holds; `None` for a key that is not for signatures.
fn named_key(jwk: Jwk) -> Result<Option<NamedKey>, String> {
    if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let member = |value: Option<&String>, name: &str| -> Result<Vec<u8>, String> {
        let value = value.ok_or_else(|| format!("no `{name}`"))?;
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("`{name}` is not base64url"))
    };
    let point = |size: usize| -> Result<Vec<u8>, String> {
        let (x, y) = (member(jwk.x.as_ref(), "x")?, member(jwk.y.as_ref(), "y")?);
        if x.len() != size || y.len() != size {
            return Err(format!("`x` and `y` must be {size} bytes each"));
        }
        Ok([&[4][..], &x, &y].concat())
    };
    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => rsa_key(&member(jwk.n.as_ref(), "n")?, &member(jwk.e.as_ref(), "e")?)?,
        ("EC", Some("P-256")) => VerifyKey::P256(point(32)?),
        ("EC", Some("P-384")) => VerifyKey::P384(point(48)?),
        ("OKP", Some("Ed25519")) => {
            let x = member(jwk.x.as_ref(), "x")?;
            if x.len() != 32 {
                return Err("`x` must be 32 bytes".into());
            }
            VerifyKey::Ed25519(x)
        }
        // Symmetric keys are secrets: Herald takes those from its own settings only.
        ("oct", _) => return Ok(None),
        (kty, crv) => {
            return Err(format!(
                "a key of type {kty:?}{} that Herald does not check",
                crv.map(|c| format!(" on {c:?}")).unwrap_or_default()
            ));
        }
    };
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => match Alg::from_name(name).filter(|alg| key.checks(*alg)) {
            Some(alg) => Some(alg),
            None => return Err(format!("`alg` {name:?} is not one this key can check")),
        },
    };
    Ok(Some(NamedKey {
        kid: jwk.kid,
        alg,
        key,
    }))
}

/// Reads every set once: the keys the server starts with, each source's apart.
pub async fn fetch_all(sources: &[JwksSource]) -> Result<Vec<Vec<NamedKey>>, String> {
    let mut sets = Vec::with_capacity(sources.len());
    for source in sources {
        let keys = source
            .fetch()
            .await
            .map_err(|why| format!("cannot read the JWKS {source}: {why}"))?;
        sets.push(keys);
    }
    Ok(sets)
}

/// The longest a request whose token names an unknown key id waits for the sets to be read
/// again.
pub const ASKED_READ_WAIT: Duration = Duration::from_secs(3);
/// Asked reads are at most this frequent: a token naming a key id nobody has (a forgery, a
/// stale token) must not make the server hammer the identity provider.
const ASKED_READ_EVERY: Duration = Duration::from_secs(10);

/// Asks for the sets to be read before their next turn: for a token naming a key id none of
/// the keys has, which may be a key the provider added since the last read.
#[derive(Debug)]
pub struct ReadAgain {
    asked: tokio::sync::Notify,
    /// Counts the reads done, asked or not.
    reads: tokio::sync::watch::Sender<u64>,
    /// When a read was last asked for, and whether one is under way.
    state: std::sync::Mutex<(crate::Throttle, bool)>,
}

impl Default for ReadAgain {
    fn default() -> Self {
        Self {
            asked: tokio::sync::Notify::new(),
            reads: tokio::sync::watch::channel(0).0,
            state: std::sync::Mutex::new((crate::Throttle::default(), false)),
        }
    }
}

impl ReadAgain {
    /// Asks for a read (or joins one under way) and waits for it, at most `within`; false
    /// without waiting when a read was asked for less than 10 s ago and is done.
    pub async fn read_now(&self, within: Duration) -> bool {
        let mut reads = self.reads.subscribe();
        {
            let mut state = crate::lock(&self.state);
            let (asked, under_way) = &mut *state;
            if !*under_way {
                if !asked.due(ASKED_READ_EVERY) {
                    return false;
                }
                *under_way = true;
                self.asked.notify_one();
            }
        }
        tokio::time::timeout(within, reads.changed())
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    fn done(&self) {
        crate::lock(&self.state).1 = false;
        self.reads.send_modify(|n| *n += 1);
    }
}

/// Reads the sets again every `every`, and when `again` asks, for ever, and puts their keys in
/// `fetched`. A set that cannot be read keeps the keys it last gave (the provider may be down
/// for a moment; tokens signed with those keys are still good), and is warned about.
pub async fn refresh(
    sources: Vec<JwksSource>,
    mut sets: Vec<Vec<NamedKey>>,
    every: Duration,
    fetched: FetchedKeys,
    again: std::sync::Arc<ReadAgain>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An interval's first tick is at once: the sets were just read.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = again.asked.notified() => {}
        }
        for (source, set) in sources.iter().zip(&mut sets) {
            match source.fetch().await {
                Ok(keys) => *set = keys,
                Err(why) => tracing::warn!(
                    "cannot read the JWKS {source} again ({why}); its {} keys read before stay \
                     in use",
                    set.len()
                ),
            }
        }
        fetched.replace(sets.concat());
        again.done();
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::test_keys::{pair, private};
    use super::super::keys::{INTEGER, SEQUENCE, der};
    use super::super::{AuthError, Claims, JwtKeys};
    use super::*;
    use serde_json::json;

    /// A new P-256 key: its private key, and its public key as a JWK named `kid`.
    fn p256(kid: &str) -> (super::super::SigningKey, serde_json::Value) {
        let (private_pem, _) = pair(Alg::Es256);
        let signer = private(&private_pem).unwrap();
        let VerifyKey::P256(point) = signer.verify_key() else {
            panic!("a P-256 key")
        };
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        (signer, jwk)
    }

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            exp: 2_000,
            ..Claims::default()
        }
    }

    #[test]
    fn a_token_naming_a_key_id_is_checked_with_that_key() {
        let (a, a_jwk) = p256("a");
        let (b, b_jwk) = p256("b");
        let (ed_private, _) = pair(Alg::EdDsa);
        let ed = private(&ed_private).unwrap();
        let VerifyKey::Ed25519(ed_x) = ed.verify_key() else {
            panic!("an Ed25519 key")
        };
        let set = json!({"keys": [
            a_jwk, b_jwk,
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode(ed_x)},
            // Passed over: an encryption key, a secret, a curve Herald does not check.
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        ]});
        let keys = keys_of(set).unwrap();
        assert_eq!(keys.len(), 3);
        let (jwt, _) = JwtKeys::new(Vec::new()).with_fetched(keys);
        for (signer, kid) in [(&a, "a"), (&b, "b"), (&ed, "ed")] {
            assert!(
                jwt.verify(&signer.mint_as(Some(kid), &claims()), 1_000)
                    .is_ok()
            );
            // A token without a key id is tried with every key of its algorithm.
            assert!(jwt.verify(&signer.mint(&claims()), 1_000).is_ok());
        }
        assert_eq!(
            jwt.verify(&a.mint_as(Some("b"), &claims()), 1_000),
            Err(AuthError::Signature)
        );
        assert_eq!(
            jwt.verify(&a.mint_as(Some("c"), &claims()), 1_000),
            Err(AuthError::UnknownKey("c".into()))
        );
        assert_eq!(jwt.accepted(), "ES256, EdDSA");
    }

    #[test]
    fn an_rsa_key_is_read_from_its_modulus_and_exponent() {
        // A 2048-bit modulus whose first bit is set: DER needs a zero byte before it.
        let mut n = vec![0xc5; 256];
        n[255] = 0x01;
        let set = json!({"keys": [{"kty": "RSA", "kid": "r", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"}]});
        let keys = keys_of(set).unwrap();
        let mut modulus = vec![0];
        modulus.extend(&n);
        let mut fields = der(INTEGER, &modulus);
        fields.extend(der(INTEGER, &[1, 0, 1]));
        assert!(matches!(&keys[0].key, VerifyKey::Rsa(k) if *k == der(SEQUENCE, &fields)));
        assert_eq!(keys[0].alg, Some(Alg::Rs256));
        assert!(keys[0].checks(Alg::Rs256) && !keys[0].checks(Alg::Ps256));
    }

    #[test]
    fn a_set_without_a_usable_key_says_why() {
        let why = keys_of(json!({"keys": []})).unwrap_err();
        assert!(why.contains("no signature key"), "{why}");
        let why = keys_of(json!({"kids": []})).unwrap_err();
        assert!(why.contains("not a JWK set"), "{why}");
        let why = keys_of(json!({"keys": [
            {"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "bent", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "kid": "odd", "alg": "RS256",
             "x": URL_SAFE_NO_PAD.encode([1; 32]), "y": URL_SAFE_NO_PAD.encode([2; 32])},
            {"kid": "untyped"},
        ]}))
        .unwrap_err();
        for named in [
            "short: an RSA key of 17 bits",
            "bent: `x` and `y` must be 32 bytes",
            "odd: `alg` \"RS256\" is not one this key can check",
            "key 3: missing field `kty`",
        ] {
            assert!(why.contains(named), "{named} in {why}");
        }
    }
}
