//! Token checking cost per request, by algorithm, for BENCHMARKS.md:
//! `cargo bench -p herald-server --bench auth -- --warm-up-time 1 --measurement-time 3`.
//!
//! Every subscribe, publish and admin request checks its token once (a stream's token is not
//! checked again while it lasts), so this is the CPU a connection's opening pays for its
//! credentials. Keys are made with `openssl`, as an operator or identity provider would.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use herald_server::auth::{Claims, Grants, JwtKeys, PublishGrant, SigningKey, keys};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (the bench makes its keys with it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn claims() -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Claims {
        sub: "alice".into(),
        exp: now + 3_600,
        herald: Grants {
            subscribe: vec!["orders".into(), "news/*".into()],
            publish: PublishGrant::All(false),
            admin: false,
        },
        ..Claims::default()
    }
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let now = claims().exp - 3_600;
    let mut group = c.benchmark_group("verify a token");
    let secret = SigningKey::Secret(b"0123456789abcdef0123456789abcdef".to_vec());
    let cases: Vec<(&str, &[&str])> = vec![
        (
            "RS256 (RSA 2048)",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        (
            "ES256 (P-256)",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        ("EdDSA (Ed25519)", &["-algorithm", "ed25519"]),
    ];
    let hs = JwtKeys::new(vec![secret.verify_key()]);
    let token = secret.mint(&claims());
    group.bench_function("HS256", |b| {
        b.iter(|| hs.identify(&token, now).expect("a valid token"))
    });
    for (i, (name, algorithm)) in cases.into_iter().enumerate() {
        let (private, public) = (format!("k{i}.pem"), format!("k{i}-public.pem"));
        let mut args = vec!["genpkey"];
        args.extend(algorithm);
        args.extend(["-out", &private]);
        openssl(dir.path(), &args);
        openssl(
            dir.path(),
            &["pkey", "-in", &private, "-pubout", "-out", &public],
        );
        let signer = SigningKey::from_file(&dir.path().join(&private)).expect("a private key");
        let checker = JwtKeys::new(
            keys::public_keys_from_file(&dir.path().join(&public)).expect("a public key"),
        );
        let token = signer.mint(&claims());
        group.bench_function(name, |b| {
            b.iter(|| checker.identify(&token, now).expect("a valid token"))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
