#![no_main]
//! An upstream reply as the forwarder takes it in: `wire::query`, `wire::scan` and `Reply::accept`, the cache entry made
//! of it, its CNAME/address walk and its lazy decode. Never panics; what is accepted has in-bounds TTL offsets.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qalqan_fuzz::fuzz_upstream_reply(data);
});
