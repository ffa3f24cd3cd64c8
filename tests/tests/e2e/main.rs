//! End-to-end tests: each starts the real `herald` binary on a free port with its own temp
//! data dir (see `herald_tests::Herald`) and uses it over HTTP like a browser or a publisher
//! would. One binary (this directory), one module per area, so every test runs in parallel
//! with the others instead of one test binary after another.

mod admin;
mod auth;
mod console;
mod cors;
mod delivery;
mod limits;
mod resume;
mod shutdown;
mod transport;
