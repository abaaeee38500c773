//! One integration-test binary: the real server on 127.0.0.1 port 0, a real
//! upstream on loopback, queries over the wire.

mod arch;
mod blocking;
mod blockpage;
mod cache;
mod contrib;
mod ctl;
mod differential;
mod dnstap;
mod encrypted;
mod formats;
mod integrity;
mod fuzz_regressions;
mod guard;
mod hierarchy;
mod observability;
mod limits;
mod malformed;
mod poisoning;
mod process;
mod recursive;
mod registry;
mod reload;
mod resolving;
mod subscribers;
pub mod sources;
mod support;
mod workflow;
