//! placeholder: filled in by the blocklist-engine work.
use super::ParseOutput;
#[allow(dead_code)]
pub fn parse_line(_file: &str, _n: u32, _line: &str, _out: &mut ParseOutput) {}
pub fn parse(_file: &str, _bytes: &[u8], _out: &mut ParseOutput) {}
