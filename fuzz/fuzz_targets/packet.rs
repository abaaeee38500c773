#![no_main]
//! Request bytes in, reply bytes out, through `server::slow::handle_bytes`
//! and the real handler. Byte 0 picks the client address (see
//! `qalqan_fuzz::source_for`); the rest is the DNS request.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qalqan_fuzz::fuzz_packet(data);
});
