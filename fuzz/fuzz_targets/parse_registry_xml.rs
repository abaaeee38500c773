#![no_main]
//! `qalqan::lists::parse::parse(Format::RegistryXml, ..)`: never panics, counters agree.
use libfuzzer_sys::fuzz_target;
use qalqan::rules::Format;

fuzz_target!(|data: &[u8]| {
    qalqan_fuzz::check_parse(Format::RegistryXml, data);
});
