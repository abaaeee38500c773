//! One DNS message on the wire, as the transfer and the probe exchange
//! them: building a query, the two-byte TCP length prefix (RFC 1035
//! §4.2.2), and decoding a reply in one pass (answers, TSIG record and
//! where it starts, EDNS rcode) with the checks every reply must pass.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigError, TSIG};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{malformed, AxfrError};

pub(super) const HEADER_LEN: usize = 12;

/// `name`, fully qualified (a configured zone may come without the dot).
pub(super) fn fqdn(name: &Name) -> Name {
    let mut name = name.clone();
    name.set_fqdn(true);
    name
}

/// A query for `zone`/`qtype` with a random ID and RD clear (we ask the primary, not a resolver).
pub(super) fn new_query(zone: &Name, qtype: RecordType) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(zone.clone(), qtype));
    msg
}

/// Writes `wire` with its two-byte length prefix, in one write.
pub(super) async fn write_framed(stream: &mut TcpStream, wire: &[u8]) -> Result<(), AxfrError> {
    let len = u16::try_from(wire.len()).map_err(|_| malformed("request longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one length-prefixed message; `total` counts the bytes read so far.
pub(super) async fn read_framed(stream: &mut TcpStream, total: &mut usize, max_bytes: usize) -> Result<Vec<u8>, AxfrError> {
    let eof = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => AxfrError::Truncated,
        _ => AxfrError::Io(e),
    };
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await.map_err(eof)?;
    let len = usize::from(u16::from_be_bytes(prefix));
    if len < HEADER_LEN {
        return Err(AxfrError::Malformed(format!(
            "message of {len} bytes is shorter than a DNS header"
        )));
    }
    *total = total.saturating_add(len + 2);
    if *total > max_bytes {
        tracing::debug!(bytes = *total, max_bytes, "zone transfer over the byte limit");
        return Err(AxfrError::TooLarge);
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.map_err(eof)?;
    Ok(buf)
}

/// One response message, decoded in a single pass.
pub(super) struct Reply {
    pub(super) header: Header,
    pub(super) questions: Vec<Query>,
    pub(super) answers: Vec<Record>,
    pub(super) tsig: Option<SignedPart>,
}

/// The TSIG record of a message and where it starts in the raw bytes.
pub(super) struct SignedPart {
    pub(super) start: usize,
    pub(super) key: Name,
    pub(super) rdata: TSIG,
}

/// Decodes one message; fails on anything hickory's decoder refuses and on
/// a record after the TSIG record (which must come last, RFC 8945 §5.1).
pub(super) fn decode(buf: &[u8]) -> Result<Reply, AxfrError> {
    let mut d = BinDecoder::new(buf);
    let Header { mut metadata, counts } = Header::read(&mut d)?;
    let mut questions = Vec::with_capacity(usize::from(counts.queries).min(1));
    for _ in 0..counts.queries {
        questions.push(Query::read(&mut d)?);
    }
    // The count is the sender's claim: reserve no more than the bytes can hold
    // (a record is at least 11 bytes).
    let mut answers = Vec::with_capacity(usize::from(counts.answers).min(buf.len() / 11));
    for _ in 0..counts.answers {
        answers.push(Record::read(&mut d)?);
    }
    for _ in 0..counts.authorities {
        Record::read(&mut d)?;
    }
    let mut tsig = None;
    for _ in 0..counts.additionals {
        let start = d.index();
        let record = Record::read(&mut d)?;
        if tsig.is_some() {
            return Err(malformed("a record follows the TSIG record"));
        }
        if record.record_type() == RecordType::OPT {
            let edns = Edns::from(&record);
            metadata.merge_response_code(edns.rcode_high());
        } else if let RData::TSIG(rdata) = record.data {
            tsig = Some(SignedPart {
                start,
                key: record.name,
                rdata,
            });
        }
    }
    Ok(Reply {
        header: Header { metadata, counts },
        questions,
        answers,
        tsig,
    })
}

/// The checks every reply to our request `id` for `zone`/`qtype` must pass:
/// ID, QR, opcode, a TSIG error from the primary, rcode, TC, and the question.
pub(super) fn check_reply(reply: &Reply, id: u16, zone: &Name, qtype: RecordType) -> Result<(), AxfrError> {
    let meta = &reply.header.metadata;
    if meta.id != id {
        return Err(AxfrError::Malformed(format!(
            "message ID {} does not match request ID {id}",
            meta.id
        )));
    }
    if meta.message_type != MessageType::Response {
        return Err(malformed("message is not a response"));
    }
    if meta.op_code != OpCode::Query {
        return Err(AxfrError::Malformed(format!("unexpected opcode {:?}", meta.op_code)));
    }
    if let Some(err) = reply.tsig.as_ref().and_then(|t| t.rdata.error) {
        return Err(AxfrError::Tsig(format!(
            "the primary rejected our request: {}",
            tsig_error_name(err)
        )));
    }
    if meta.response_code != ResponseCode::NoError {
        return Err(AxfrError::Refused(meta.response_code));
    }
    if meta.truncation && qtype != RecordType::SOA {
        return Err(malformed("TC bit set on a TCP transfer"));
    }
    for q in &reply.questions {
        if q.name() != zone || q.query_type() != qtype {
            return Err(AxfrError::Malformed(format!(
                "question `{} {}` does not match `{zone} {qtype}`",
                q.name(),
                q.query_type()
            )));
        }
    }
    Ok(())
}

/// The TSIG error a primary answered with, in words an operator can act on.
pub(super) fn tsig_error_name(err: TsigError) -> String {
    match err {
        TsigError::BadSig => "BADSIG (wrong secret?)".into(),
        TsigError::BadKey => "BADKEY (key name or algorithm unknown to the primary)".into(),
        TsigError::BadTime => "BADTIME (clocks differ by more than the fudge)".into(),
        TsigError::BadTrunc => "BADTRUNC".into(),
        TsigError::Unknown(code) => format!("TSIG error {code}"),
    }
}
