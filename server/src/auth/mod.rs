//! Who is calling: JWTs from a header, a cookie or the query string, and what they may do.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::{Target, TopicPattern, UserId};
use serde::{Deserialize, Serialize};

pub mod jwks;
pub mod keys;
pub use keys::{Alg, KeyError, NamedKey, SigningKey, VerifyKey};

/// The cookie a browser can carry its token in.
pub const TOKEN_COOKIE: &str = "herald_token";

/// How far a token's `nbf` may be ahead of this server's clock: the minting machine's clock
/// may be ahead of this one's.
pub const CLOCK_SKEW: u64 = 60;

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A token's claims: `sub` is the user id, `herald` what the user may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, unix seconds (a JSON number: a fraction, which RFC 7519 allows, is dropped).
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Not before, unix seconds: a token for later (`herald token` never sets it).
    #[serde(
        default,
        deserialize_with = "some_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<u64>,
    /// The issuer, checked against `--jwt-issuer` when the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience, one or several, checked against `--jwt-audience` when the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Herald's own grants.
    #[serde(default)]
    pub herald: Grants,
}

/// The `aud` claim: one audience or several (RFC 7519, 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `name` is one of them.
    pub fn names(&self, name: &str) -> bool {
        match self {
            Audience::One(one) => one == name,
            Audience::Many(many) => many.iter().any(|a| a == name),
        }
    }
}

/// What a token must say of where it comes from and whom it is for, besides its signature:
/// an identity provider signs tokens for many applications with the same keys.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// `iss` must be this.
    pub issuer: Option<String>,
    /// `aud` must name this.
    pub audience: Option<String>,
}

/// A JWT NumericDate: seconds since the epoch, a whole number or not (its fraction dropped).
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    seconds(serde_json::Number::deserialize(d)?)
}

fn some_numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(seconds)
        .transpose()
}

fn seconds<E: serde::de::Error>(n: serde_json::Number) -> Result<u64, E> {
    // `as` saturates past u64::MAX: a date that far ahead never comes.
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v as u64)
        })
        .ok_or_else(|| E::custom(format!("{n} is not a date (seconds since 1970)")))
}

/// What a token allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Topics and `prefix/*` patterns the user may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// `true` for any topic, or the topics (and patterns) the user may publish to.
    #[serde(default)]
    pub publish: PublishGrant,
    /// May read the admin API and push to anyone.
    #[serde(default)]
    pub admin: bool,
}

/// The `publish` claim: a flag or a list of topic patterns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PublishGrant {
    /// `true`: any topic, user or broadcast; `false`: nothing.
    All(bool),
    /// Only events whose topics all fall under these patterns (no users, no broadcast).
    Topics(Vec<String>),
}

impl Default for PublishGrant {
    fn default() -> Self {
        Self::All(false)
    }
}

/// Why a token was refused (answered with 401 and this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were presented.
    #[error(
        "missing credentials: send a token as 'Authorization: Bearer <token>', the '{TOKEN_COOKIE}' cookie or '?token='"
    )]
    Missing,
    /// The token is not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's algorithm is not one this server's keys check.
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    /// The token names a key id (`kid`) none of the server's keys has.
    #[error("token key id {0:?} is not one of this server's keys")]
    UnknownKey(String),
    /// The signature matches none of the server's keys.
    #[error("invalid token signature")]
    Signature,
    /// The token expired.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is still ahead (beyond [`CLOCK_SKEW`]).
    #[error("token not valid yet (its nbf is {0}s ahead)")]
    NotYetValid(u64),
    /// The token's `iss` is not the issuer the server expects.
    #[error("token is not from the issuer this server takes tokens from ({0:?})")]
    Issuer(String),
    /// The token's `aud` does not name the server's audience.
    #[error("token is not for this server's audience ({0:?})")]
    Audience(String),
    /// A grant in the token is not a valid topic pattern or user id.
    #[error("token claim is invalid: {0}")]
    BadClaim(String),
}

/// The verified caller: what a request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user (from `sub`), if any.
    pub user: Option<UserId>,
    /// Patterns the caller may subscribe to.
    pub subscribe: Vec<TopicPattern>,
    /// What the caller may publish.
    pub publish: PublishRight,
    /// Admin rights.
    pub admin: bool,
    /// When the credentials expire, unix seconds (`None` in dev mode).
    pub expires_unix: Option<u64>,
}

/// What an identity may publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishRight {
    /// Nothing.
    None,
    /// Anything: any topic, any user, broadcast.
    All,
    /// Events whose every topic falls under one of these patterns.
    Topics(Vec<TopicPattern>),
}

impl Identity {
    /// The anonymous caller of `--dev` mode: every right, optionally naming itself.
    pub fn dev(user: Option<UserId>) -> Self {
        Self {
            user,
            subscribe: vec![TopicPattern::Prefix("".into())],
            publish: PublishRight::All,
            admin: true,
            expires_unix: None,
        }
    }

    /// The first pattern the caller may not subscribe to, if any.
    pub fn forbidden_topic<'a>(&self, patterns: &'a [TopicPattern]) -> Option<&'a TopicPattern> {
        patterns
            .iter()
            .find(|p| !self.subscribe.iter().any(|grant| p.is_within(grant)))
    }

    /// Checks a publish; the error names what is not allowed.
    pub fn check_publish(&self, target: &Target) -> Result<(), String> {
        match &self.publish {
            PublishRight::All => Ok(()),
            PublishRight::None => Err("this token may not publish".into()),
            PublishRight::Topics(grants) => {
                if target.broadcast {
                    return Err("this token may not broadcast".into());
                }
                if let Some(user) = target.users.first() {
                    return Err(format!("this token may not publish to user {user:?}"));
                }
                match target
                    .topics
                    .iter()
                    .find(|t| !grants.iter().any(|g| g.matches(t)))
                {
                    Some(t) => Err(format!(
                        "this token may not publish to topic {:?}",
                        t.as_str()
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The keys a server checks tokens with: its secret, the secrets it still accepts while
/// they are rotated, the public keys of an identity provider's private keys, and the keys of
/// its JWKS documents, which are fetched again from time to time.
#[derive(Clone, Debug)]
pub struct JwtKeys {
    fixed: Vec<NamedKey>,
    expected: Expected,
    /// Replaced whole each time the JWKS documents are read again.
    fetched: Arc<RwLock<Arc<Vec<NamedKey>>>>,
}

/// Replaces the keys a [`JwtKeys`] took from JWKS documents.
#[derive(Clone, Debug)]
pub struct FetchedKeys(Arc<RwLock<Arc<Vec<NamedKey>>>>);

impl FetchedKeys {
    /// From now on, these are the keys from JWKS documents.
    pub fn replace(&self, keys: Vec<NamedKey>) {
        // A poisoned lock held a whole `Arc`: what it holds is still consistent.
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

impl JwtKeys {
    /// Checks tokens with these keys.
    pub fn new(keys: Vec<VerifyKey>) -> Self {
        Self {
            fixed: keys.into_iter().map(NamedKey::from).collect(),
            expected: Expected::default(),
            fetched: Arc::default(),
        }
    }

    /// Also requires what `expected` says of a token's issuer and audience.
    pub fn expecting(self, expected: Expected) -> Self {
        Self { expected, ..self }
    }

    /// Checks HS256 (HS384, HS512) tokens with one shared secret.
    pub fn secret(secret: &[u8]) -> Self {
        Self::new(vec![VerifyKey::Secret(secret.to_vec())])
    }

    /// Also checks tokens with keys from JWKS documents, `keys` for now; the handle replaces
    /// them.
    pub fn with_fetched(self, keys: Vec<NamedKey>) -> (Self, FetchedKeys) {
        let handle = FetchedKeys(self.fetched.clone());
        handle.replace(keys);
        (self, handle)
    }

    /// The keys from JWKS documents as they are now.
    fn fetched(&self) -> Arc<Vec<NamedKey>> {
        self.fetched
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The algorithms these keys check (`HS256, ES256`), for a message that names them.
    pub fn accepted(&self) -> String {
        let fetched = self.fetched();
        let algs: Vec<&str> = Alg::ALL
            .into_iter()
            .filter(|alg| {
                self.fixed
                    .iter()
                    .chain(fetched.iter())
                    .any(|k| k.checks(*alg))
            })
            .map(Alg::name)
            .collect();
        algs.join(", ")
    }

    /// Verifies signature and expiry, and returns the claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three dot-separated parts"));
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|_| AuthError::Malformed("header is not JSON"))?;
        // Each key checks its own algorithms only: a public key is never taken for an HMAC
        // secret, and `none` is no algorithm.
        let fetched = self.fetched();
        let keys: Vec<&NamedKey> = match Alg::from_name(&header.alg) {
            Some(alg) => (self.fixed.iter().chain(fetched.iter()))
                .filter(|k| k.checks(alg))
                .collect(),
            None => Vec::new(),
        };
        let Some(alg) = Alg::from_name(&header.alg).filter(|_| !keys.is_empty()) else {
            return Err(AuthError::Algorithm(format!(
                "{:?} (this server checks {})",
                header.alg,
                self.accepted()
            )));
        };
        let kid = header.kid.as_deref();
        let keys: Vec<&NamedKey> = keys.into_iter().filter(|k| k.answers_to(kid)).collect();
        if let (Some(kid), true) = (kid, keys.is_empty()) {
            return Err(AuthError::UnknownKey(kid.to_owned()));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        let input = signed_part(token).as_bytes();
        if !keys.iter().any(|k| k.key.verifies(alg, input, &sig)) {
            return Err(AuthError::Signature);
        }
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| AuthError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|e| match e.classify() {
            // JSON, but not the claims a token must have (`sub`, `exp`) in the right types.
            serde_json::error::Category::Data => AuthError::BadClaim(e.to_string()),
            _ => AuthError::Malformed("claims are not JSON"),
        })?;
        if claims.exp <= now_unix {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && nbf > now_unix + CLOCK_SKEW
        {
            return Err(AuthError::NotYetValid(nbf - now_unix));
        }
        if let Some(issuer) = &self.expected.issuer
            && claims.iss.as_ref() != Some(issuer)
        {
            return Err(AuthError::Issuer(issuer.clone()));
        }
        if let Some(audience) = &self.expected.audience
            && !claims.aud.as_ref().is_some_and(|aud| aud.names(audience))
        {
            return Err(AuthError::Audience(audience.clone()));
        }
        Ok(claims)
    }

    /// Verifies a token and turns its claims into an [`Identity`].
    pub fn identify(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError> {
        let claims = self.verify(token, now_unix)?;
        let user = if claims.sub.is_empty() {
            None
        } else {
            Some(UserId::new(&claims.sub).map_err(|e| AuthError::BadClaim(e.to_string()))?)
        };
        let patterns = |list: &[String]| -> Result<Vec<TopicPattern>, AuthError> {
            list.iter()
                .map(|p| TopicPattern::parse(p).map_err(|e| AuthError::BadClaim(e.to_string())))
                .collect()
        };
        let publish = match &claims.herald.publish {
            // Operators push to anyone from the console.
            _ if claims.herald.admin => PublishRight::All,
            PublishGrant::All(true) => PublishRight::All,
            PublishGrant::All(false) => PublishRight::None,
            PublishGrant::Topics(list) => PublishRight::Topics(patterns(list)?),
        };
        Ok(Identity {
            user,
            subscribe: patterns(&claims.herald.subscribe)?,
            publish,
            admin: claims.herald.admin,
            expires_unix: Some(claims.exp),
        })
    }
}

impl SigningKey {
    /// Signs `claims` as a JWT (HS256 with a secret; RS256, ES256, ES384 or EdDSA with a
    /// private key).
    pub fn mint(&self, claims: &Claims) -> String {
        self.mint_as(None, claims)
    }

    /// Like [`SigningKey::mint`], naming the key's id (`kid`) in the token's header, as an
    /// identity provider whose key set (JWKS) holds several keys does.
    pub fn mint_as(&self, kid: Option<&str>, claims: &Claims) -> String {
        let header = Header {
            alg: self.alg().name().into(),
            typ: Some("JWT".into()),
            kid: kid.map(str::to_owned),
        };
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let sig = URL_SAFE_NO_PAD.encode(self.sign(signing_input.as_bytes()));
        format!("{signing_input}.{sig}")
    }
}

/// The signed part of a token: everything before the last dot.
fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(input, _)| input)
}

/// Where a request's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// `Authorization: Bearer`.
    Header,
    /// `?token=` in the URL.
    Query,
    /// The `herald_token` cookie, which a browser adds by itself, also to a request another
    /// site's page makes.
    Cookie,
}

/// Finds the token in `Authorization: Bearer`, then `token` in the query, then the cookie: a
/// token the request names beats the one the browser adds by itself (a stale cookie must not
/// hide a fresh `?token=`, since a page cannot remove an HttpOnly cookie).
pub fn token_from(
    headers: &http::HeaderMap,
    query_token: Option<&str>,
) -> Option<(String, Carrier)> {
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, t)) = auth.trim_start().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some((t.trim().to_owned(), Carrier::Header));
    }
    // An empty `?token=` (a page that had none to put there) names no token.
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return Some((t.to_owned(), Carrier::Query));
    }
    for cookie in headers.get_all(http::header::COOKIE) {
        let Ok(cookie) = cookie.to_str() else {
            continue;
        };
        for pair in cookie.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == TOKEN_COOKIE
            {
                // RFC 6265 allows a cookie value in double quotes.
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                return Some((value.to_owned(), Carrier::Cookie));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Topic;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            nbf: None,
            iss: None,
            aud: None,
            herald: Grants {
                subscribe: vec!["orders".into(), "news/*".into()],
                publish: PublishGrant::Topics(vec!["orders".into()]),
                admin: false,
            },
        }
    }

    /// A secret to sign with, and the keys that check its tokens.
    fn secret(secret: &[u8]) -> (SigningKey, JwtKeys) {
        (SigningKey::Secret(secret.to_vec()), JwtKeys::secret(secret))
    }

    #[test]
    fn a_minted_token_verifies_and_grants_what_it_says() {
        let (signer, key) = secret(b"secret");
        let token = signer.mint(&claims(2_000));
        let id = key.identify(&token, 1_000).unwrap();
        assert_eq!(id.user, Some(UserId::new("alice").unwrap()));
        let p = |s| TopicPattern::parse(s).unwrap();
        assert_eq!(id.forbidden_topic(&[p("orders"), p("news/eu")]), None);
        assert_eq!(
            id.forbidden_topic(&[p("orders"), p("secret")]),
            Some(&p("secret"))
        );
        let orders = Target {
            topics: vec![Topic::new("orders").unwrap()],
            ..Target::default()
        };
        assert!(id.check_publish(&orders).is_ok());
        let bcast = Target {
            broadcast: true,
            ..Target::default()
        };
        assert!(id.check_publish(&bcast).is_err());
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused_with_a_reason() {
        let (signer, key) = secret(b"secret");
        let token = signer.mint(&claims(2_000));
        assert_eq!(
            JwtKeys::secret(b"other").verify(&token, 1_000),
            Err(AuthError::Signature)
        );
        assert_eq!(key.verify(&token, 2_000), Err(AuthError::Expired));
        // A token for later is refused until then, give or take the clocks' skew.
        let later = signer.mint(&Claims {
            nbf: Some(1_500),
            ..claims(2_000)
        });
        assert_eq!(key.verify(&later, 1_000), Err(AuthError::NotYetValid(500)));
        assert!(key.verify(&later, 1_500 - CLOCK_SKEW).is_ok());
        assert!(matches!(key.verify("abc", 0), Err(AuthError::Malformed(_))));
        assert!(matches!(
            key.verify("a.b.c", 0),
            Err(AuthError::Malformed(_))
        ));
        // Tampering with the claims breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD
            .encode(br#"{"sub":"mallory","exp":9999999999,"herald":{"admin":true}}"#);
        parts[1] = &forged;
        assert_eq!(key.verify(&parts.join("."), 0), Err(AuthError::Signature));
        // "alg": "none" is never accepted.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(
            key.verify(&none, 0),
            Err(AuthError::Algorithm(
                "\"none\" (this server checks HS256, HS384, HS512)".into()
            ))
        );
    }

    #[test]
    fn every_configured_key_checks_its_tokens_and_a_refusal_names_what_is_checked() {
        use keys::test_keys::{pair, private, public};
        let new = SigningKey::Secret(b"new".to_vec());
        let old = SigningKey::Secret(b"old".to_vec());
        let (es_private, es_public) = pair(Alg::Es256);
        let es = private(&es_private).unwrap();
        let mut verify = vec![new.verify_key(), old.verify_key()];
        verify.extend(public(&es_public).unwrap());
        let keys = JwtKeys::new(verify);
        for signer in [&new, &old, &es] {
            let id = keys.identify(&signer.mint(&claims(2_000)), 1_000);
            assert_eq!(id.unwrap().user, Some(UserId::new("alice").unwrap()));
        }
        let stranger = SigningKey::Secret(b"other".to_vec()).mint(&claims(2_000));
        assert_eq!(keys.verify(&stranger, 1_000), Err(AuthError::Signature));
        let (ed_private, _) = pair(Alg::EdDsa);
        let ed = private(&ed_private).unwrap().mint(&claims(2_000));
        assert_eq!(
            keys.verify(&ed, 1_000),
            Err(AuthError::Algorithm(
                "\"EdDSA\" (this server checks HS256, HS384, HS512, ES256)".into()
            ))
        );
        // A server with public keys alone takes no token signed with a secret.
        let public_only = JwtKeys::new(public(&es_public).unwrap());
        assert_eq!(
            public_only.verify(&new.mint(&claims(2_000)), 1_000),
            Err(AuthError::Algorithm(
                "\"HS256\" (this server checks ES256)".into()
            ))
        );
        // Expiry and claims are checked whatever signed the token.
        assert_eq!(
            keys.verify(&es.mint(&claims(2_000)), 2_000),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn an_expected_issuer_and_audience_are_required() {
        let (signer, key) = secret(b"secret");
        let key = key.expecting(Expected {
            issuer: Some("https://idp.example/".into()),
            audience: Some("herald".into()),
        });
        let with = |iss: Option<&str>, aud: Option<Audience>| {
            signer.mint(&Claims {
                iss: iss.map(str::to_owned),
                aud,
                ..claims(2_000)
            })
        };
        let idp = Some("https://idp.example/");
        let one = |a: &str| Some(Audience::One(a.into()));
        assert!(key.verify(&with(idp, one("herald")), 1_000).is_ok());
        let many = Some(Audience::Many(vec!["billing".into(), "herald".into()]));
        assert!(key.verify(&with(idp, many), 1_000).is_ok());
        let issuer = Err(AuthError::Issuer("https://idp.example/".into()));
        assert_eq!(key.verify(&with(None, one("herald")), 1_000), issuer);
        assert_eq!(
            key.verify(&with(Some("https://other.example/"), one("herald")), 1_000),
            issuer
        );
        let audience = Err(AuthError::Audience("herald".into()));
        assert_eq!(key.verify(&with(idp, None), 1_000), audience);
        assert_eq!(key.verify(&with(idp, one("billing")), 1_000), audience);
        // A server that expects neither takes a token with or without them.
        let (_, plain) = secret(b"secret");
        assert!(plain.verify(&with(idp, one("billing")), 1_000).is_ok());
    }

    /// A token over claims written by hand, signed with `key`.
    fn signed(key: &SigningKey, body: &str) -> String {
        let minted = key.mint(&claims(1));
        let header = minted.split('.').next().unwrap();
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
        let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()));
        format!("{input}.{sig}")
    }

    #[test]
    fn dates_may_have_fractions_and_claims_of_the_wrong_shape_are_named() {
        let (signer, key) = secret(b"secret");
        let token = signed(&signer, r#"{"sub":"alice","exp":2000.5,"nbf":999.9}"#);
        let claims = key.verify(&token, 1_000).unwrap();
        assert_eq!((claims.exp, claims.nbf), (2_000, Some(999)));
        for (claims, named) in [
            (r#"{"exp":2000}"#, "missing field `sub`"),
            (r#"{"sub":"alice","exp":"2000"}"#, "invalid type"),
            (r#"{"sub":"alice","exp":-1}"#, "-1 is not a date"),
        ] {
            match key.verify(&signed(&signer, claims), 1_000) {
                Err(AuthError::BadClaim(why)) => assert!(why.contains(named), "{claims}: {why}"),
                other => panic!("{claims}: {other:?}"),
            }
        }
        assert_eq!(
            key.verify(&signed(&signer, "not json"), 1_000),
            Err(AuthError::Malformed("claims are not JSON"))
        );
    }

    #[test]
    fn tokens_are_found_in_header_query_and_cookie_in_that_order() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(token_from(&headers, None), None);
        headers.insert(http::header::COOKIE, "a=1; herald_token=c".parse().unwrap());
        assert_eq!(
            token_from(&headers, None),
            Some(("c".into(), Carrier::Cookie))
        );
        // A token the request names beats the cookie the browser adds.
        assert_eq!(
            token_from(&headers, Some("q")),
            Some(("q".into(), Carrier::Query))
        );
        // An empty `?token=` names none; a quoted cookie value is the value.
        headers.insert(
            http::header::COOKIE,
            "a=1; herald_token=\"c\"".parse().unwrap(),
        );
        assert_eq!(
            token_from(&headers, Some("")),
            Some(("c".into(), Carrier::Cookie))
        );
        headers.insert(http::header::AUTHORIZATION, "Bearer h".parse().unwrap());
        assert_eq!(
            token_from(&headers, Some("q")),
            Some(("h".into(), Carrier::Header))
        );
        // The scheme's name is case-insensitive (RFC 9110, 11.1); another scheme is no token.
        headers.insert(http::header::AUTHORIZATION, "BEARER  u".parse().unwrap());
        assert_eq!(
            token_from(&headers, None),
            Some(("u".into(), Carrier::Header))
        );
        headers.insert(http::header::AUTHORIZATION, "Basic b".parse().unwrap());
        assert_eq!(
            token_from(&headers, None),
            Some(("c".into(), Carrier::Cookie))
        );
    }
}
