//! End-to-end tests: each starts the real `herald` binary on a free port with its own temp
//! data dir (see `herald_tests::Herald`) and uses it over HTTP like a browser or a publisher
//! would. One binary (this directory), one module per area, so every test runs in parallel
//! with the others instead of one test binary after another.

mod admin;
mod auth;
mod bench;
mod cluster;
mod console;
mod cors;
mod delivery;
mod limits;
mod resume;
mod shutdown;
mod storage;
mod transport;

/// A token for alice, who may read `orders` and `news/*`, signed with `secret`.
fn alice_token(secret: &str) -> String {
    herald_tests::mint_token(
        secret,
        &[
            "--sub",
            "alice",
            "--subscribe",
            "orders",
            "--subscribe",
            "news/*",
        ],
    )
}
