#![no_main]
//! Parse (format picked by byte 0), compile an `Index`, look names up.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qalqan_fuzz::fuzz_compile(data);
});
