//! The zone transfer itself: an AXFR or IXFR request over TCP, read
//! message by message under one deadline, and the SOA framing of the
//! answer (RFC 5936 §2.2, RFC 1995 §4) assembled into a [`Transfer`].

use std::net::SocketAddr;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::TcpStream;

use super::message::{check_reply, decode, fqdn, new_query, read_framed, write_framed};
use super::tsig::{encode_request, now_secs, TsigKey};
use super::{malformed, AxfrError, Limits, Transfer};

/// AXFR (when `have_serial` is None) or IXFR from `have_serial`, over TCP to `primary`.
///
/// Cost: one TCP connection; memory proportional to the transfer (all
/// records are kept until the closing SOA, so that a broken transfer
/// yields nothing). Fails on the first message with a wrong ID, a non-zero
/// rcode, a bad TSIG, a record out of the zone, or a broken SOA framing.
pub async fn transfer(
    primary: SocketAddr,
    zone: &Name,
    have_serial: Option<u32>,
    tsig: Option<&TsigKey>,
    limits: &Limits,
) -> Result<Transfer, AxfrError> {
    match tokio::time::timeout(limits.timeout, transfer_inner(primary, zone, have_serial, tsig, limits)).await {
        Ok(result) => result,
        Err(_) => Err(AxfrError::Timeout),
    }
}

async fn transfer_inner(
    primary: SocketAddr,
    zone: &Name,
    have_serial: Option<u32>,
    tsig: Option<&TsigKey>,
    limits: &Limits,
) -> Result<Transfer, AxfrError> {
    let zone = fqdn(zone);
    let qtype = if have_serial.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    let mut request = new_query(&zone, qtype);
    if let Some(serial) = have_serial {
        // RFC 1995 §3: the client's version goes in the authority section.
        let soa = SOA::new(Name::root(), Name::root(), serial, 0, 0, 0, 0);
        request.add_authority(Record::from_rdata(zone.clone(), 0, RData::SOA(soa)));
    }
    let id = request.metadata.id;
    let (wire, mut verifier) = encode_request(request, tsig)?;

    let mut stream = TcpStream::connect(primary).await?;
    stream.set_nodelay(true)?;
    write_framed(&mut stream, &wire).await?;

    let mut asm = Assembler::new(zone.clone(), have_serial, limits.max_records);
    let mut bytes = 0usize;
    let mut first = true;
    loop {
        let buf = read_framed(&mut stream, &mut bytes, limits.max_bytes).await?;
        let reply = decode(&buf)?;
        check_reply(&reply, id, &zone, qtype)?;
        if let Some(v) = verifier.as_mut() {
            v.check(&buf, &reply, now_secs())?;
        }
        let in_message = reply.answers.len();
        for record in reply.answers {
            asm.push(record)?;
        }
        if let Some(done) = asm.end_of_message(first, in_message)? {
            if let Some(v) = &verifier {
                v.finish()?;
            }
            return Ok(done);
        }
        first = false;
    }
}

/// `a` is newer than `b` in RFC 1982 serial arithmetic.
fn serial_newer(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000_0000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet.
    Start,
    /// Only the opening SOA.
    Opened,
    /// AXFR body (or IXFR answered AXFR-style).
    Full,
    /// IXFR: deleted records of a difference sequence.
    Deleting,
    /// IXFR: added records of a difference sequence.
    Adding,
    /// The closing SOA was read.
    Done,
}

/// Turns the stream of answer records into a [`Transfer`], checking the
/// SOA framing of RFC 5936 §2.2 and RFC 1995 §4.
struct Assembler {
    zone: Name,
    have: Option<u32>,
    max_records: usize,
    phase: Phase,
    count: usize,
    /// Serial of the opening SOA: the version being transferred.
    serial: u32,
    records: Vec<Record>,
    diffs: Vec<(Vec<Record>, Vec<Record>)>,
    deleted: Vec<Record>,
    added: Vec<Record>,
    /// Serial the current difference sequence leads to.
    to: u32,
}

impl Assembler {
    fn new(zone: Name, have: Option<u32>, max_records: usize) -> Self {
        Self {
            zone,
            have,
            max_records,
            phase: Phase::Start,
            count: 0,
            serial: 0,
            records: Vec::new(),
            diffs: Vec::new(),
            deleted: Vec::new(),
            added: Vec::new(),
            to: 0,
        }
    }

    fn push(&mut self, record: Record) -> Result<(), AxfrError> {
        if self.phase == Phase::Done {
            return Err(malformed("records after the closing SOA"));
        }
        self.count += 1;
        if self.count > self.max_records {
            tracing::debug!(max_records = self.max_records, zone = %self.zone, "zone transfer over the record limit");
            return Err(AxfrError::TooLarge);
        }
        if !self.zone.zone_of(&record.name) {
            return Err(AxfrError::Malformed(format!(
                "record `{}` is outside zone `{}`",
                record.name, self.zone
            )));
        }
        let soa = match &record.data {
            RData::SOA(soa) => {
                if record.name != self.zone {
                    return Err(AxfrError::Malformed(format!(
                        "SOA record at `{}`, below the apex",
                        record.name
                    )));
                }
                Some(soa.serial)
            }
            _ => None,
        };
        match (self.phase, soa) {
            (Phase::Start, Some(serial)) => {
                self.serial = serial;
                self.records.push(record);
                self.phase = Phase::Opened;
            }
            (Phase::Start, None) => return Err(malformed("the answer does not start with the zone's SOA")),
            (Phase::Opened, None) => {
                self.records.push(record);
                self.phase = Phase::Full;
            }
            (Phase::Opened, Some(s)) if self.have == Some(s) && s != self.serial => {
                // RFC 1995 incremental: the first difference starts at our version.
                self.phase = Phase::Deleting;
            }
            (Phase::Opened, Some(s)) if s == self.serial => self.phase = Phase::Done, // a zone of one SOA
            (Phase::Opened, Some(s)) => {
                return Err(AxfrError::Malformed(format!(
                    "SOA serial {s} after the opening SOA {} (we have {:?})",
                    self.serial, self.have
                )))
            }
            (Phase::Full, None) => self.records.push(record),
            (Phase::Full, Some(s)) if s == self.serial => self.phase = Phase::Done,
            (Phase::Full, Some(s)) => {
                return Err(AxfrError::Malformed(format!(
                    "closing SOA serial {s} differs from the opening {}",
                    self.serial
                )))
            }
            (Phase::Deleting, None) => self.deleted.push(record),
            (Phase::Deleting, Some(s)) => {
                self.to = s;
                self.phase = Phase::Adding;
            }
            (Phase::Adding, None) => self.added.push(record),
            (Phase::Adding, Some(s)) => {
                self.diffs
                    .push((std::mem::take(&mut self.deleted), std::mem::take(&mut self.added)));
                if s == self.serial && self.to == self.serial {
                    self.phase = Phase::Done;
                } else if s == self.to {
                    self.phase = Phase::Deleting;
                } else {
                    return Err(AxfrError::Malformed(format!(
                        "IXFR difference ends at serial {}, the next starts at {s}",
                        self.to
                    )));
                }
            }
            (Phase::Done, _) => return Err(malformed("records after the closing SOA")),
        }
        Ok(())
    }

    /// Called after each message's answers; returns the result once the
    /// transfer is complete.
    fn end_of_message(&mut self, first: bool, in_message: usize) -> Result<Option<Transfer>, AxfrError> {
        match self.phase {
            Phase::Done => {
                let serial = self.serial;
                if self.have.is_some() && !self.diffs.is_empty() {
                    Ok(Some(Transfer::Incremental {
                        from_serial: self.have.unwrap_or(serial),
                        serial,
                        diffs: std::mem::take(&mut self.diffs),
                    }))
                } else {
                    Ok(Some(Transfer::Full {
                        serial,
                        records: std::mem::take(&mut self.records),
                    }))
                }
            }
            // RFC 1995 §2: a single SOA, not newer than ours, means we are current.
            // A single SOA that is newer (or any AXFR) is just an SOA-only first message.
            Phase::Opened if first && in_message == 1 => match self.have {
                Some(have) if !serial_newer(self.serial, have) => Ok(Some(Transfer::UpToDate { serial: self.serial })),
                _ => Ok(None),
            },
            Phase::Start if in_message == 0 => Err(malformed("an answer message with no records")),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::A;
    use std::time::Duration;

    #[tokio::test]
    async fn axfr_over_several_messages() {
        let parts = vec![
            vec![soa(7), cname("a", "."), cname("b", "*.")],
            vec![cname("c", "rpz-passthru."), cname("*.d", ".")],
            vec![cname("e", "."), soa(7)],
        ];
        let got = run(None, &limits(), parts).await.unwrap();
        let want = vec![
            soa(7),
            cname("a", "."),
            cname("b", "*."),
            cname("c", "rpz-passthru."),
            cname("*.d", "."),
            cname("e", "."),
        ];
        assert_eq!(
            got,
            Transfer::Full {
                serial: 7,
                records: want
            }
        );
    }

    #[tokio::test]
    async fn axfr_soa_only_first_message() {
        let parts = vec![vec![soa(7)], vec![cname("a", ".")], vec![cname("b", "."), soa(7)]];
        let got = run(None, &limits(), parts).await.unwrap();
        assert_eq!(
            got,
            Transfer::Full {
                serial: 7,
                records: vec![soa(7), cname("a", "."), cname("b", ".")]
            }
        );
    }

    #[tokio::test]
    async fn ixfr_incremental_two_steps() {
        let addr = fake_primary(|req, _| {
            assert_eq!(req.queries[0].query_type(), RecordType::IXFR);
            let have = match &req.authorities[0].data {
                RData::SOA(s) => s.serial,
                other => panic!("authority {other:?}"),
            };
            assert_eq!(have, 1);
            let parts = vec![
                vec![soa(3)],
                vec![soa(1), cname("x", "."), soa(2), cname("y", ".")],
                vec![soa(2), soa(3), cname("z", "*.")],
                vec![soa(3)],
            ];
            (messages(&req, parts), false)
        })
        .await;
        let got = transfer(addr, &zone(), Some(1), None, &limits()).await.unwrap();
        let want = Transfer::Incremental {
            from_serial: 1,
            serial: 3,
            diffs: vec![
                (vec![cname("x", ".")], vec![cname("y", ".")]),
                (vec![], vec![cname("z", "*.")]),
            ],
        };
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn ixfr_up_to_date_and_older_primary() {
        for (primary, have) in [(5, 5), (4, 5)] {
            let got = run(Some(have), &limits(), vec![vec![soa(primary)]]).await.unwrap();
            assert_eq!(got, Transfer::UpToDate { serial: primary });
        }
    }

    #[tokio::test]
    async fn ixfr_answered_axfr_style() {
        let parts = vec![vec![soa(9), cname("a", ".")], vec![cname("b", "."), soa(9)]];
        let got = run(Some(3), &limits(), parts).await.unwrap();
        assert_eq!(
            got,
            Transfer::Full {
                serial: 9,
                records: vec![soa(9), cname("a", "."), cname("b", ".")]
            }
        );
    }

    #[tokio::test]
    async fn ixfr_single_newer_soa_then_full_zone() {
        let parts = vec![vec![soa(9)], vec![cname("a", "."), soa(9)]];
        let got = run(Some(3), &limits(), parts).await.unwrap();
        assert_eq!(
            got,
            Transfer::Full {
                serial: 9,
                records: vec![soa(9), cname("a", ".")]
            }
        );
    }

    #[tokio::test]
    async fn broken_transfers() {
        let small = Limits {
            max_records: 3,
            ..limits()
        };
        let tiny = Limits {
            max_bytes: 100,
            ..limits()
        };
        type Case = (&'static str, Option<u32>, Limits, Vec<Vec<Record>>, &'static str);
        let cases: Vec<Case> = vec![
            (
                "truncated stream",
                None,
                limits(),
                vec![vec![soa(7), cname("a", ".")]],
                "Truncated",
            ),
            (
                "over max_records",
                None,
                small,
                vec![vec![soa(7), cname("a", "."), cname("b", "."), cname("c", "."), soa(7)]],
                "TooLarge",
            ),
            (
                "over max_bytes",
                None,
                tiny,
                vec![vec![soa(7), cname("a", ".")], vec![cname("b", ".")], vec![soa(7)]],
                "TooLarge",
            ),
            (
                "no opening SOA",
                None,
                limits(),
                vec![vec![cname("a", "."), soa(7)]],
                "Malformed",
            ),
            (
                "closing SOA differs",
                None,
                limits(),
                vec![vec![soa(7), cname("a", "."), soa(8)]],
                "Malformed",
            ),
            (
                "record after closing SOA",
                None,
                limits(),
                vec![vec![soa(7), cname("a", "."), soa(7), cname("b", ".")]],
                "Malformed",
            ),
            (
                "out of zone",
                None,
                limits(),
                vec![vec![
                    soa(7),
                    Record::from_rdata(name("evil.example."), 1, RData::A(A::new(1, 2, 3, 4))),
                    soa(7),
                ]],
                "Malformed",
            ),
            (
                "broken IXFR chain",
                Some(1),
                limits(),
                vec![vec![soa(3), soa(1), soa(2), soa(5), soa(3)]],
                "Malformed",
            ),
        ];
        for (case, have, lim, parts, want) in cases {
            let got = run(have, &lim, parts).await;
            let got = format!("{got:?}");
            assert!(got.starts_with(&format!("Err({want}")), "case `{case}`: {got}");
        }
    }

    #[tokio::test]
    async fn wrong_id_is_an_error() {
        let addr = fake_primary(|req, _| {
            let mut first = response(&req, vec![soa(7), cname("a", ".")]);
            first.metadata.id = req.metadata.id.wrapping_add(1);
            (vec![wire(&first)], false)
        })
        .await;
        let err = transfer(addr, &zone(), None, None, &limits()).await.unwrap_err();
        assert!(
            matches!(&err, AxfrError::Malformed(m) if m.contains("does not match request ID")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn wrong_id_in_a_later_message_is_an_error() {
        let addr = fake_primary(|req, _| {
            let mut out = messages(&req, vec![vec![soa(7), cname("a", ".")]]);
            let mut second = response(&req, vec![soa(7)]);
            second.metadata.id = req.metadata.id.wrapping_add(1);
            out.push(wire(&second));
            (out, false)
        })
        .await;
        let err = transfer(addr, &zone(), None, None, &limits()).await.unwrap_err();
        assert!(matches!(err, AxfrError::Malformed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn garbage_message_is_malformed() {
        let addr = fake_primary(|req, _| {
            // Right ID, a response header claiming 5 answers, then 8 stray bytes.
            let mut m = req.metadata.id.to_be_bytes().to_vec();
            m.extend_from_slice(&[0x84, 0x00, 0, 0, 0, 5, 0, 0, 0, 0]);
            m.extend_from_slice(&[0xc0, 0xff, 0, 5, 0, 1, 0, 0]);
            (vec![m], false)
        })
        .await;
        let err = transfer(addr, &zone(), None, None, &limits()).await.unwrap_err();
        assert!(matches!(err, AxfrError::Decode(_)), "{err:?}");
        assert!(std::error::Error::source(&err).is_some(), "hickory's decode error is the cause");
    }

    #[tokio::test]
    async fn refused_is_reported_with_its_rcode() {
        let addr = fake_primary(|req, _| {
            let mut m = response(&req, vec![]);
            m.metadata.response_code = ResponseCode::Refused;
            (vec![wire(&m)], false)
        })
        .await;
        let err = transfer(addr, &zone(), None, None, &limits()).await.unwrap_err();
        assert!(matches!(err, AxfrError::Refused(ResponseCode::Refused)), "{err:?}");
    }

    #[tokio::test]
    async fn silent_primary_times_out() {
        let addr = fake_primary(|req, _| (messages(&req, vec![vec![soa(7), cname("a", ".")]]), true)).await;
        let lim = Limits {
            timeout: Duration::from_millis(300),
            ..limits()
        };
        let started = std::time::Instant::now();
        let err = transfer(addr, &zone(), None, None, &lim).await.unwrap_err();
        assert!(matches!(err, AxfrError::Timeout), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn serial_arithmetic() {
        let cases = [
            (2, 1, true),
            (1, 2, false),
            (1, 1, false),
            (0, u32::MAX, true),
            (u32::MAX, 0, false),
        ];
        for (a, b, want) in cases {
            assert_eq!(serial_newer(a, b), want, "{a} newer than {b}");
        }
    }
}
