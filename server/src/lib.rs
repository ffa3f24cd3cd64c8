//! herald-server: the `herald` binary's library: the durable log, the HTTP API and the driver
//! that runs the herald-core engine.

pub mod log;
