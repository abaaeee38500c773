//! Zone-transfer client (AXFR, RFC 5936; IXFR, RFC 1995) with TSIG
//! (RFC 8945, HMAC-SHA256), for RPZ feeds served by a primary.
//!
//! Our own reader over TCP, not hickory's `Client::zone_transfer` (STYLE
//! §4.8: it can run over UDP and has lost records after an SOA-only first
//! message). hickory-proto is used for the wire format only: message
//! header, names, records and the TSIG record layout. The MAC itself is
//! computed here with `hmac` + `sha2`, so hickory's `dnssec-ring` feature
//! (and `ring`) stays out of the build.
//!
//! Every byte from the network is bounds-checked: lengths come from the
//! two-byte TCP prefix, record counts from the header, and each record is
//! decoded by hickory's `BinDecoder`, which fails rather than panics.
//! The whole transfer runs under one deadline ([`Limits::timeout`]); the
//! record count and the byte count are capped as they arrive.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{make_tsig_record, TsigAlgorithm, TsigError, TSIG};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

type HmacSha256 = Hmac<Sha256>;

/// Allowed clock difference for TSIG, both ways (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;
/// HMAC-SHA256 output length; truncated MACs are refused.
const MAC_LEN: usize = 32;
/// RFC 8945 §5.3.1: at most 99 unsigned messages between two signed ones.
const MAX_UNSIGNED_RUN: u32 = 99;
const HEADER_LEN: usize = 12;

/// A TSIG key, as given to `kdig -y`.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Key name, fully qualified, lowercase.
    pub name: Name,
    /// Always `"hmac-sha256"` (the only algorithm supported).
    pub algorithm: String,
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl TsigKey {
    /// Parses the `kdig -y` form `hmac-sha256:NAME:BASE64SECRET` (the
    /// algorithm may be left out, as kdig allows: `NAME:BASE64SECRET`).
    ///
    /// Fails with [`AxfrError::Tsig`] on another algorithm, a bad name, a
    /// secret that is not base64, or an empty secret.
    pub fn parse(s: &str) -> Result<Self, AxfrError> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let (alg, name, secret) = match parts.as_slice() {
            [alg, name, secret] => (*alg, *name, *secret),
            [name, secret] => ("hmac-sha256", *name, *secret),
            _ => {
                return Err(AxfrError::Tsig(
                    "key must look like `hmac-sha256:NAME:BASE64SECRET`".into(),
                ))
            }
        };
        let algorithm = alg.to_ascii_lowercase();
        if algorithm != "hmac-sha256" {
            return Err(AxfrError::Tsig(format!(
                "algorithm `{alg}` is not supported (only hmac-sha256)"
            )));
        }
        let mut key_name = Name::from_ascii(name).map_err(|e| AxfrError::Tsig(format!("key name `{name}`: {e}")))?;
        if key_name.num_labels() == 0 {
            return Err(AxfrError::Tsig("key name is empty".into()));
        }
        key_name.set_fqdn(true);
        let secret = secret.trim();
        let secret = data_encoding::BASE64
            .decode(secret.as_bytes())
            .or_else(|_| data_encoding::BASE64_NOPAD.decode(secret.as_bytes()))
            .map_err(|e| AxfrError::Tsig(format!("key secret is not base64: {e}")))?;
        if secret.is_empty() {
            return Err(AxfrError::Tsig("key secret is empty".into()));
        }
        Ok(Self {
            name: key_name.to_lowercase(),
            algorithm,
            secret,
        })
    }
}

/// Caps on one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// For the whole transfer: connect, request, every message.
    pub timeout: Duration,
    /// Answer records over all messages (SOAs included).
    pub max_records: usize,
    /// Bytes over all messages (length prefixes included).
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            max_records: 10_000_000,
            max_bytes: 1 << 30,
        }
    }
}

/// What a transfer brought.
#[derive(Debug, Clone, PartialEq)]
pub enum Transfer {
    /// A full zone (AXFR, or an IXFR answered with a full transfer): every record in order, first SOA included once.
    Full { serial: u32, records: Vec<Record> },
    /// RFC 1995 incremental: a sequence of (deleted, added) difference sequences, oldest first.
    ///
    /// The SOA records that frame each difference sequence are not in the
    /// lists: the chain `from_serial → … → serial` was checked while reading.
    Incremental {
        from_serial: u32,
        serial: u32,
        diffs: Vec<(Vec<Record>, Vec<Record>)>,
    },
    /// IXFR answered with only the current SOA: nothing new.
    UpToDate { serial: u32 },
}

impl Transfer {
    /// The zone serial the transfer brings the client to.
    pub fn serial(&self) -> u32 {
        match self {
            Transfer::Full { serial, .. } | Transfer::Incremental { serial, .. } | Transfer::UpToDate { serial } => {
                *serial
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AxfrError {
    #[error("talking to the primary")]
    Io(#[from] std::io::Error),
    #[error("the primary did not finish answering in time")]
    Timeout,
    #[error("the primary answered {0}")]
    Refused(ResponseCode),
    #[error("malformed answer from the primary: {0}")]
    Malformed(String),
    #[error("TSIG: {0}")]
    Tsig(String),
    #[error("transfer exceeds the record or byte limit")]
    TooLarge,
    #[error("the primary closed the connection before the transfer ended")]
    Truncated,
}

fn malformed(e: impl fmt::Display) -> AxfrError {
    AxfrError::Malformed(e.to_string())
}

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

/// SOA serial of `zone` at `primary` (UDP query with TCP fallback; TSIG if given), for refresh checks.
///
/// Falls back to TCP when the UDP answer is truncated, or when no UDP
/// answer came within half of `timeout` or the UDP exchange failed.
pub async fn soa_serial(
    primary: SocketAddr,
    zone: &Name,
    tsig: Option<&TsigKey>,
    timeout: Duration,
) -> Result<u32, AxfrError> {
    match tokio::time::timeout(timeout, soa_inner(primary, zone, tsig, timeout)).await {
        Ok(result) => result,
        Err(_) => Err(AxfrError::Timeout),
    }
}

async fn soa_inner(
    primary: SocketAddr,
    zone: &Name,
    tsig: Option<&TsigKey>,
    timeout: Duration,
) -> Result<u32, AxfrError> {
    let zone = fqdn(zone);
    let request = new_query(&zone, RecordType::SOA);
    let id = request.metadata.id;
    let (wire, verifier) = encode_request(request, tsig)?;

    if let Ok(Ok(buf)) = tokio::time::timeout(timeout / 2, udp_exchange(primary, &wire, id)).await {
        let reply = decode(&buf)?;
        if !reply.header.metadata.truncation {
            return soa_from_reply(&buf, reply, id, &zone, verifier);
        }
        tracing::debug!(%zone, %primary, "SOA answer truncated over UDP, retrying over TCP");
    }
    let mut stream = TcpStream::connect(primary).await?;
    stream.set_nodelay(true)?;
    write_framed(&mut stream, &wire).await?;
    let mut bytes = 0;
    let buf = read_framed(&mut stream, &mut bytes, usize::from(u16::MAX) + 2).await?;
    let reply = decode(&buf)?;
    soa_from_reply(&buf, reply, id, &zone, verifier)
}

fn soa_from_reply(
    buf: &[u8],
    reply: Reply,
    id: u16,
    zone: &Name,
    mut verifier: Option<TsigVerifier<'_>>,
) -> Result<u32, AxfrError> {
    check_reply(&reply, id, zone, RecordType::SOA)?;
    if reply.header.metadata.truncation {
        return Err(malformed("truncated answer over TCP"));
    }
    if let Some(v) = verifier.as_mut() {
        v.check(buf, &reply, now_secs())?;
        v.finish()?;
    }
    reply
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) if r.name == *zone => Some(soa.serial),
            _ => None,
        })
        .ok_or_else(|| AxfrError::Malformed(format!("no SOA for {zone} in the answer")))
}

async fn udp_exchange(primary: SocketAddr, wire: &[u8], id: u16) -> Result<Vec<u8>, AxfrError> {
    let local: SocketAddr = if primary.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(primary).await?;
    socket.send(wire).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let n = socket.recv(&mut buf).await?;
        let Some(datagram) = buf.get(..n) else { continue };
        // A datagram with another ID is a late answer to something else: ignore it.
        if datagram.get(..2) == Some(&id.to_be_bytes()[..]) {
            return Ok(datagram.to_vec());
        }
    }
}

fn fqdn(name: &Name) -> Name {
    let mut name = name.clone();
    name.set_fqdn(true);
    name
}

fn new_query(zone: &Name, qtype: RecordType) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(zone.clone(), qtype));
    msg
}

/// Encodes (and signs, with a key) a request.
fn encode_request(
    mut request: Message,
    tsig: Option<&TsigKey>,
) -> Result<(Vec<u8>, Option<TsigVerifier<'_>>), AxfrError> {
    match tsig {
        None => Ok((request.to_vec().map_err(malformed)?, None)),
        Some(key) => {
            let mac = sign_message(&mut request, key, now_secs(), None)?;
            Ok((request.to_vec().map_err(malformed)?, Some(TsigVerifier::new(key, mac))))
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn write_framed(stream: &mut TcpStream, wire: &[u8]) -> Result<(), AxfrError> {
    let len = u16::try_from(wire.len()).map_err(|_| malformed("request longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one length-prefixed message; `total` counts the bytes read so far.
async fn read_framed(stream: &mut TcpStream, total: &mut usize, max_bytes: usize) -> Result<Vec<u8>, AxfrError> {
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
struct Reply {
    header: Header,
    questions: Vec<Query>,
    answers: Vec<Record>,
    tsig: Option<SignedPart>,
}

/// The TSIG record of a message and where it starts in the raw bytes.
struct SignedPart {
    start: usize,
    key: Name,
    rdata: TSIG,
}

fn decode(buf: &[u8]) -> Result<Reply, AxfrError> {
    let mut d = BinDecoder::new(buf);
    let Header { mut metadata, counts } = Header::read(&mut d).map_err(malformed)?;
    let mut questions = Vec::with_capacity(usize::from(counts.queries).min(1));
    for _ in 0..counts.queries {
        questions.push(Query::read(&mut d).map_err(malformed)?);
    }
    // The count is the sender's claim: reserve no more than the bytes can hold
    // (a record is at least 11 bytes).
    let mut answers = Vec::with_capacity(usize::from(counts.answers).min(buf.len() / 11));
    for _ in 0..counts.answers {
        answers.push(Record::read(&mut d).map_err(malformed)?);
    }
    for _ in 0..counts.authorities {
        Record::read(&mut d).map_err(malformed)?;
    }
    let mut tsig = None;
    for _ in 0..counts.additionals {
        let start = d.index();
        let record = Record::read(&mut d).map_err(malformed)?;
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

fn check_reply(reply: &Reply, id: u16, zone: &Name, qtype: RecordType) -> Result<(), AxfrError> {
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

fn tsig_error_name(err: TsigError) -> String {
    match err {
        TsigError::BadSig => "BADSIG (wrong secret?)".into(),
        TsigError::BadKey => "BADKEY (key name or algorithm unknown to the primary)".into(),
        TsigError::BadTime => "BADTIME (clocks differ by more than the fudge)".into(),
        TsigError::BadTrunc => "BADTRUNC".into(),
        TsigError::Unknown(code) => format!("TSIG error {code}"),
    }
}

// ---------------------------------------------------------------- TSIG

fn hmac_of(key: &TsigKey) -> Result<HmacSha256, AxfrError> {
    HmacSha256::new_from_slice(&key.secret).map_err(|_| AxfrError::Tsig("unusable key secret".into()))
}

/// TSIG variables of a first (or only) message, RFC 8945 §4.3.3.
fn tsig_variables(rdata: &TSIG, key_name: &Name) -> Result<Vec<u8>, AxfrError> {
    let mut out = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut out);
    rdata.emit_tsig_for_mac(&mut enc, key_name).map_err(malformed)?;
    Ok(out)
}

/// TSIG timers (time signed, fudge) of a later message, RFC 8945 §5.3.1.
fn tsig_timers(rdata: &TSIG) -> [u8; 8] {
    // Time signed is 48 bits: the low six bytes of the u64. Constant indices
    // into fixed-size arrays, checked at compile time.
    let t = rdata.time.to_be_bytes();
    let f = rdata.fudge.to_be_bytes();
    [t[2], t[3], t[4], t[5], t[6], t[7], f[0], f[1]]
}

/// Signs `msg` (which has no signature yet) and attaches the TSIG record.
/// `prior_mac` is the request MAC when signing a response (tests' fake
/// primary). Returns the MAC.
fn sign_message(msg: &mut Message, key: &TsigKey, now: u64, prior_mac: Option<&[u8]>) -> Result<Vec<u8>, AxfrError> {
    sign_message_with(msg, key, now, FUDGE, prior_mac)
}

/// [`sign_message`] with the given fudge (tests sign as a lax primary would).
fn sign_message_with(msg: &mut Message, key: &TsigKey, now: u64, fudge: u16, prior_mac: Option<&[u8]>) -> Result<Vec<u8>, AxfrError> {
    let stub = TSIG::new(
        TsigAlgorithm::HmacSha256,
        now,
        fudge,
        Vec::new(),
        msg.metadata.id,
        None,
        Vec::new(),
    );
    let body = msg.to_vec().map_err(malformed)?;
    let vars = tsig_variables(&stub, &key.name)?;
    let mut mac = hmac_of(key)?;
    if let Some(prior) = prior_mac {
        let len = u16::try_from(prior.len()).map_err(|_| AxfrError::Tsig("MAC too long".into()))?;
        mac.update(&len.to_be_bytes());
        mac.update(prior);
    }
    mac.update(&body);
    mac.update(&vars);
    let mac = mac.finalize().into_bytes().to_vec();
    msg.signature = Some(Box::new(make_tsig_record(key.name.clone(), stub.set_mac(mac.clone()))));
    Ok(mac)
}

/// Checks the TSIG of each response message in turn (RFC 8945 §5.3):
/// the first with the request MAC and all TSIG variables, each later one
/// with the prior MAC, any unsigned messages since, and the timers only.
struct TsigVerifier<'k> {
    key: &'k TsigKey,
    prior_mac: Vec<u8>,
    first: bool,
    /// Unsigned messages since the last signed one, as received.
    unsigned: Vec<u8>,
    unsigned_run: u32,
}

impl<'k> TsigVerifier<'k> {
    fn new(key: &'k TsigKey, request_mac: Vec<u8>) -> Self {
        Self {
            key,
            prior_mac: request_mac,
            first: true,
            unsigned: Vec::new(),
            unsigned_run: 0,
        }
    }

    fn check(&mut self, buf: &[u8], reply: &Reply, now: u64) -> Result<(), AxfrError> {
        let Some(sig) = &reply.tsig else {
            if self.first {
                return Err(AxfrError::Tsig("the primary's answer is not signed".into()));
            }
            self.unsigned_run += 1;
            if self.unsigned_run > MAX_UNSIGNED_RUN {
                return Err(AxfrError::Tsig(format!(
                    "more than {MAX_UNSIGNED_RUN} unsigned messages in a row"
                )));
            }
            self.unsigned.extend_from_slice(buf);
            return Ok(());
        };
        if sig.key != self.key.name {
            return Err(AxfrError::Tsig(format!(
                "answer signed with key `{}`, not `{}`",
                sig.key, self.key.name
            )));
        }
        if sig.rdata.algorithm != TsigAlgorithm::HmacSha256 {
            return Err(AxfrError::Tsig(format!(
                "answer signed with {}, not hmac-sha256",
                sig.rdata.algorithm
            )));
        }
        if sig.rdata.mac.len() != MAC_LEN {
            return Err(AxfrError::Tsig(format!(
                "MAC of {} bytes (truncated MACs are not accepted)",
                sig.rdata.mac.len()
            )));
        }
        // our own limit, not only the primary's: a signed answer carrying a
        // fudge of hours could be replayed for hours (RFC 8945 §5.2.3: the
        // receiver's policy decides)
        let fudge = sig.rdata.fudge.min(FUDGE);
        if now.abs_diff(sig.rdata.time) > u64::from(fudge) {
            return Err(AxfrError::Tsig(format!(
                "answer signed at {}, now is {now}: outside the {fudge} s fudge",
                sig.rdata.time
            )));
        }
        let (header, body) = unsigned_parts(buf, reply, sig)?;
        let prior_len = u16::try_from(self.prior_mac.len()).map_err(|_| AxfrError::Tsig("MAC too long".into()))?;

        let mut mac = hmac_of(self.key)?;
        mac.update(&prior_len.to_be_bytes());
        mac.update(&self.prior_mac);
        mac.update(&self.unsigned);
        mac.update(&header);
        mac.update(body);
        if self.first {
            mac.update(&tsig_variables(&sig.rdata, &sig.key)?);
        } else {
            mac.update(&tsig_timers(&sig.rdata));
        }
        mac.verify_slice(&sig.rdata.mac)
            .map_err(|_| AxfrError::Tsig("bad MAC on the primary's answer".into()))?;

        self.prior_mac.clone_from(&sig.rdata.mac);
        self.first = false;
        self.unsigned.clear();
        self.unsigned_run = 0;
        Ok(())
    }

    /// The last message must be signed.
    fn finish(&self) -> Result<(), AxfrError> {
        if self.first || self.unsigned_run > 0 {
            return Err(AxfrError::Tsig("the last message of the answer is not signed".into()));
        }
        Ok(())
    }
}

// ------------------------------------------------- signed requests (NOTIFY)

/// Why a request that had to carry the list's TSIG key was not accepted.
///
/// [`RequestTsigError::tsig_error`] gives the RFC 8945 error to answer
/// with (in a NOTAUTH reply); `Unsigned` and `Malformed` have none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestTsigError {
    #[error("not signed")]
    Unsigned,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("signed with key `{0}` (hmac-sha256 key of the list expected)")]
    BadKey(Name),
    #[error("MAC of {0} bytes (truncated MACs are not accepted)")]
    BadTrunc(usize),
    #[error("bad MAC")]
    BadSig,
    /// The MAC is good; `request` is what a signed BADTIME reply needs.
    #[error("signed at {signed}, now is {now}: outside the {FUDGE} s fudge")]
    BadTime { signed: u64, now: u64, request: SignedRequest },
}

impl RequestTsigError {
    /// The TSIG error code for the reply, if this is a TSIG error at all.
    pub fn tsig_error(&self) -> Option<TsigError> {
        match self {
            Self::Unsigned | Self::Malformed(_) => None,
            Self::BadKey(_) => Some(TsigError::BadKey),
            Self::BadTrunc(_) => Some(TsigError::BadTrunc),
            Self::BadSig => Some(TsigError::BadSig),
            Self::BadTime { .. } => Some(TsigError::BadTime),
        }
    }
}

/// A request whose TSIG checked out: what signing the reply needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The request MAC: the reply's MAC covers it (RFC 8945 §5.3).
    pub mac: Vec<u8>,
    /// The request's original ID, echoed in the reply's TSIG.
    pub original_id: u16,
}

/// Checks the TSIG of one request message `raw` (as received) against
/// `key` at time `now` (seconds since the epoch), as RFC 8945 §5.2 orders
/// it: key and algorithm, MAC length, MAC, then time (our 300 s fudge, or
/// the signer's if smaller).
///
/// Cost: one decode of the message and one HMAC over it. Never panics on
/// any input; a message that does not decode is `Malformed`.
pub fn verify_request(raw: &[u8], key: &TsigKey, now: u64) -> Result<SignedRequest, RequestTsigError> {
    let bad = |e: AxfrError| RequestTsigError::Malformed(e.to_string());
    let msg = decode(raw).map_err(bad)?;
    let Some(sig) = &msg.tsig else { return Err(RequestTsigError::Unsigned) };
    if sig.key != key.name || sig.rdata.algorithm != TsigAlgorithm::HmacSha256 {
        return Err(RequestTsigError::BadKey(sig.key.clone()));
    }
    if sig.rdata.mac.len() != MAC_LEN {
        return Err(RequestTsigError::BadTrunc(sig.rdata.mac.len()));
    }
    let (header, body) = unsigned_parts(raw, &msg, sig).map_err(bad)?;
    let mut mac = hmac_of(key).map_err(bad)?;
    mac.update(&header);
    mac.update(body);
    mac.update(&tsig_variables(&sig.rdata, &sig.key).map_err(bad)?);
    mac.verify_slice(&sig.rdata.mac).map_err(|_| RequestTsigError::BadSig)?;
    let request = SignedRequest { mac: sig.rdata.mac.clone(), original_id: sig.rdata.oid };
    if now.abs_diff(sig.rdata.time) > u64::from(sig.rdata.fudge.min(FUDGE)) {
        return Err(RequestTsigError::BadTime { signed: sig.rdata.time, now, request });
    }
    Ok(request)
}

/// The TSIG record for a reply to a verified request: `unsigned` is the
/// reply encoded without it. With `error` (BADTIME), the record carries the
/// error and our time in Other Data, and is still signed (RFC 8945 §5.3.2).
pub fn sign_reply(
    unsigned: &[u8],
    key: &TsigKey,
    request: &SignedRequest,
    now: u64,
    error: Option<TsigError>,
) -> Result<Record<TSIG>, AxfrError> {
    let other = match error {
        // the 48-bit time: the low six bytes (constant indices, fixed array)
        Some(TsigError::BadTime) => {
            let t = now.to_be_bytes();
            vec![t[2], t[3], t[4], t[5], t[6], t[7]]
        }
        _ => Vec::new(),
    };
    let stub = TSIG::new(TsigAlgorithm::HmacSha256, now, FUDGE, Vec::new(), request.original_id, error, other);
    let len = u16::try_from(request.mac.len()).map_err(|_| AxfrError::Tsig("MAC too long".into()))?;
    let mut mac = hmac_of(key)?;
    mac.update(&len.to_be_bytes());
    mac.update(&request.mac);
    mac.update(unsigned);
    mac.update(&tsig_variables(&stub, &key.name)?);
    let mac = mac.finalize().into_bytes().to_vec();
    Ok(make_tsig_record(key.name.clone(), stub.set_mac(mac)))
}

/// The unsigned TSIG record of an error reply (BADKEY, BADSIG, BADTRUNC):
/// empty MAC, as RFC 8945 §5.3.2 requires for key and MAC errors.
pub fn unsigned_error_record(key_name: Name, original_id: u16, now: u64, error: TsigError) -> Record<TSIG> {
    make_tsig_record(
        key_name,
        TSIG::new(TsigAlgorithm::HmacSha256, now, FUDGE, Vec::new(), original_id, Some(error), Vec::new()),
    )
}

/// Signs `msg` as a request with `key` at `now` and encodes it: how a
/// primary signs its NOTIFY (for tests of the verifying side).
pub fn sign_request(mut msg: Message, key: &TsigKey, now: u64) -> Result<Vec<u8>, AxfrError> {
    sign_message(&mut msg, key, now, None)?;
    msg.to_vec().map_err(malformed)
}

/// Whether `unsigned` with `record` attached verifies as a response to a
/// request whose MAC was `request_mac` (tests of the NOTIFY reply).
#[cfg(test)]
pub(crate) fn reply_verifies(unsigned: &[u8], record: &Record<TSIG>, key: &TsigKey, request_mac: &[u8]) -> bool {
    let Ok(mut msg) = Message::from_vec(unsigned) else { return false };
    msg.signature = Some(Box::new(record.clone()));
    let Ok(buf) = msg.to_vec() else { return false };
    let Ok(reply) = decode(&buf) else { return false };
    TsigVerifier::new(key, request_mac.to_vec()).check(&buf, &reply, record.data.time).is_ok()
}

/// The original ID of a request's TSIG, if it has one (for error replies).
pub fn request_tsig_id(raw: &[u8]) -> Option<(Name, u16)> {
    let msg = decode(raw).ok()?;
    msg.tsig.map(|t| (t.key, t.rdata.oid))
}

/// The message as it was before its TSIG was added (RFC 8945 §4.3.1):
/// the header with the original ID and one additional record fewer, and
/// the bytes between the header and the TSIG record.
fn unsigned_parts<'b>(buf: &'b [u8], msg: &Reply, sig: &SignedPart) -> Result<([u8; HEADER_LEN], &'b [u8]), AxfrError> {
    let mut header: [u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| malformed("short header"))?;
    let arcount = msg.header.counts.additionals.checked_sub(1).ok_or_else(|| malformed("TSIG not counted"))?;
    // Constant indices into our own [u8; 12]: checked at compile time.
    let [id_hi, id_lo] = sig.rdata.oid.to_be_bytes();
    let [ar_hi, ar_lo] = arcount.to_be_bytes();
    header[0] = id_hi;
    header[1] = id_lo;
    header[10] = ar_hi;
    header[11] = ar_lo;
    let body = buf.get(HEADER_LEN..sig.start).ok_or_else(|| malformed("TSIG record inside the header"))?;
    Ok((header, body))
}

// ---------------------------------------------------------------- framing

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

// ---------------------------------------------------------------- zone text

/// Renders records as zone-file lines ("owner TTL IN TYPE rdata"), for feeding qalqan's own RPZ text parser.
///
/// First line `$ORIGIN origin.`; every owner and every name in rdata is
/// absolute with a trailing dot (so `CNAME .`, `CNAME *.` and
/// `CNAME rpz-passthru.` come out exactly so); names are in ASCII
/// (punycode, never decoded to Unicode); TXT strings are quoted with `"`
/// and `\` escaped and other non-printable bytes as `\DDD`. Types with no
/// presentation form here are written as RFC 3597 `TYPEnnn \# len hex`.
/// Cost: O(total record size), one `String`.
pub fn to_zone_text(origin: &Name, records: &[Record]) -> String {
    let mut out = String::with_capacity(records.len().saturating_mul(48).saturating_add(64));
    let _ = writeln!(out, "$ORIGIN {}", abs(origin));
    for r in records {
        let _ = write!(out, "{} {} {} ", abs(&r.name), r.ttl, r.dns_class);
        write_type_and_rdata(&mut out, r);
        out.push('\n');
    }
    out
}

fn abs(name: &Name) -> String {
    let mut s = name.to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn write_type_and_rdata(out: &mut String, r: &Record) {
    let rtype = r.record_type();
    match &r.data {
        RData::CNAME(n) => {
            let _ = write!(out, "CNAME {}", abs(&n.0));
        }
        RData::NS(n) => {
            let _ = write!(out, "NS {}", abs(&n.0));
        }
        RData::PTR(n) => {
            let _ = write!(out, "PTR {}", abs(&n.0));
        }
        RData::A(a) => {
            let _ = write!(out, "A {}", a.0);
        }
        RData::AAAA(a) => {
            let _ = write!(out, "AAAA {}", a.0);
        }
        RData::MX(mx) => {
            let _ = write!(out, "MX {} {}", mx.preference, abs(&mx.exchange));
        }
        RData::SOA(s) => {
            let _ = write!(
                out,
                "SOA {} {} {} {} {} {} {}",
                abs(&s.mname),
                abs(&s.rname),
                s.serial,
                s.refresh,
                s.retry,
                s.expire,
                s.minimum
            );
        }
        RData::TXT(t) => {
            out.push_str("TXT");
            for s in t.txt_data.iter() {
                out.push(' ');
                quote_into(out, s);
            }
            if t.txt_data.is_empty() {
                out.push_str(" \"\"");
            }
        }
        RData::Unknown { rdata, .. } => write_generic(out, rtype, &rdata.anything),
        RData::Update0(_) => write_generic(out, rtype, &[]),
        other => {
            let text = other.to_string();
            if text.contains('\n') || matches!(rtype, RecordType::Unknown(_)) {
                write_generic(out, rtype, &[]);
            } else {
                let _ = write!(out, "{rtype} {text}");
            }
        }
    }
}

fn write_generic(out: &mut String, rtype: RecordType, bytes: &[u8]) {
    let _ = write!(out, "TYPE{} \\# {}", u16::from(rtype), bytes.len());
    if !bytes.is_empty() {
        out.push(' ');
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
    }
}

fn quote_into(out: &mut String, s: &[u8]) {
    out.push('"');
    for &b in s {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, TXT};
    use tokio::net::TcpListener;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn zone() -> Name {
        name("rpz.test.")
    }
    fn soa(serial: u32) -> Record {
        let soa = SOA::new(
            name("ns.rpz.test."),
            name("admin.rpz.test."),
            serial,
            3600,
            600,
            86400,
            60,
        );
        Record::from_rdata(zone(), 3600, RData::SOA(soa))
    }
    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(
            name(&format!("{owner}.rpz.test.")),
            300,
            RData::CNAME(CNAME(name(target))),
        )
    }
    fn limits() -> Limits {
        Limits {
            timeout: Duration::from_secs(5),
            max_records: 1000,
            max_bytes: 1 << 20,
        }
    }
    fn key() -> TsigKey {
        TsigKey::parse("hmac-sha256:qalqan-key:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==").unwrap()
    }

    /// One answer message to `req` carrying `answers`.
    fn response(req: &Message, answers: Vec<Record>) -> Message {
        let mut m = Message::response(req.metadata.id, OpCode::Query);
        m.metadata.authoritative = true;
        m.add_queries(req.queries.clone());
        m.add_answers(answers);
        m
    }
    fn wire(m: &Message) -> Vec<u8> {
        m.to_vec().unwrap()
    }
    fn messages(req: &Message, parts: Vec<Vec<Record>>) -> Vec<Vec<u8>> {
        parts.into_iter().map(|p| wire(&response(req, p))).collect()
    }

    /// A primary on 127.0.0.1:0 that answers one TCP request with the
    /// messages `script` makes, then closes (or, with `hold`, stays silent).
    async fn fake_primary<F>(script: F) -> SocketAddr
    where
        F: FnOnce(Message, Vec<u8>) -> (Vec<Vec<u8>>, bool) + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.unwrap();
            let req = Message::from_vec(&buf).unwrap();
            let (out, hold) = script(req, buf);
            for m in out {
                let mut framed = u16::try_from(m.len()).unwrap().to_be_bytes().to_vec();
                framed.extend_from_slice(&m);
                if s.write_all(&framed).await.is_err() {
                    return;
                }
            }
            if hold {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        addr
    }

    async fn run(have: Option<u32>, limits: &Limits, parts: Vec<Vec<Record>>) -> Result<Transfer, AxfrError> {
        let addr = fake_primary(move |req, _| (messages(&req, parts), false)).await;
        transfer(addr, &zone(), have, None, limits).await
    }

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
        assert!(matches!(err, AxfrError::Malformed(_)), "{err:?}");
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

    /// Signs a later message of a multi-message answer (prior MAC + message + timers).
    fn sign_later(msg: &mut Message, key: &TsigKey, now: u64, prior: &[u8]) -> Vec<u8> {
        let stub = TSIG::new(
            TsigAlgorithm::HmacSha256,
            now,
            FUDGE,
            Vec::new(),
            msg.metadata.id,
            None,
            Vec::new(),
        );
        let mut mac = hmac_of(key).unwrap();
        mac.update(&u16::try_from(prior.len()).unwrap().to_be_bytes());
        mac.update(prior);
        mac.update(&msg.to_vec().unwrap());
        mac.update(&tsig_timers(&stub));
        let mac = mac.finalize().into_bytes().to_vec();
        msg.signature = Some(Box::new(make_tsig_record(key.name.clone(), stub.set_mac(mac.clone()))));
        mac
    }

    /// A fake primary that checks the request's MAC and signs its answer
    /// (`unsigned_middle`: leave the middle message unsigned; `tamper`:
    /// flip a byte of the last message after signing).
    async fn signing_primary(server_key: TsigKey, unsigned_middle: bool, tamper: bool) -> SocketAddr {
        fake_primary(move |mut req, raw| {
            let reply = decode(&raw).unwrap();
            let sig = reply.tsig.expect("request is signed");
            // Check the request MAC as a primary would.
            let mut header: [u8; 12] = raw[..12].try_into().unwrap();
            header[11] -= 1;
            let mut mac = hmac_of(&server_key).unwrap();
            mac.update(&header);
            mac.update(&raw[12..sig.start]);
            mac.update(&tsig_variables(&sig.rdata, &sig.key).unwrap());
            if mac.verify_slice(&sig.rdata.mac).is_err() {
                let mut m = response(&req, vec![]);
                m.metadata.response_code = ResponseCode::NotAuth;
                let t = TSIG::new(
                    TsigAlgorithm::HmacSha256,
                    now_secs(),
                    FUDGE,
                    vec![],
                    req.metadata.id,
                    Some(TsigError::BadSig),
                    vec![],
                );
                m.signature = Some(Box::new(make_tsig_record(sig.key.clone(), t)));
                return (vec![wire(&m)], false);
            }
            req.additionals.clear();
            let now = now_secs();
            let mut first = response(&req, vec![soa(7), cname("a", ".")]);
            let mut prior = sign_message(&mut first, &server_key, now, Some(&sig.rdata.mac)).unwrap();
            let mut middle = response(&req, vec![cname("b", ".")]);
            let mut last = response(&req, vec![cname("c", "."), soa(7)]);
            let middle_wire = if unsigned_middle {
                let w = wire(&middle);
                // The next MAC covers the unsigned message as sent.
                let stub = TSIG::new(
                    TsigAlgorithm::HmacSha256,
                    now,
                    FUDGE,
                    Vec::new(),
                    last.metadata.id,
                    None,
                    Vec::new(),
                );
                let mut mac = hmac_of(&server_key).unwrap();
                mac.update(&u16::try_from(prior.len()).unwrap().to_be_bytes());
                mac.update(&prior);
                mac.update(&w);
                mac.update(&last.to_vec().unwrap());
                mac.update(&tsig_timers(&stub));
                let mac = mac.finalize().into_bytes().to_vec();
                last.signature = Some(Box::new(make_tsig_record(server_key.name.clone(), stub.set_mac(mac))));
                w
            } else {
                prior = sign_later(&mut middle, &server_key, now, &prior);
                sign_later(&mut last, &server_key, now, &prior);
                wire(&middle)
            };
            let mut last_wire = wire(&last);
            if tamper {
                // Clear the AA bit: covered by the MAC, ignored otherwise.
                last_wire[2] ^= 0x04;
            }
            (vec![wire(&first), middle_wire, last_wire], false)
        })
        .await
    }

    #[tokio::test]
    async fn tsig_signed_multi_message_transfer() {
        let want = Transfer::Full {
            serial: 7,
            records: vec![soa(7), cname("a", "."), cname("b", "."), cname("c", ".")],
        };
        for unsigned_middle in [false, true] {
            let addr = signing_primary(key(), unsigned_middle, false).await;
            let got = transfer(addr, &zone(), None, Some(&key()), &limits()).await;
            assert_eq!(got.unwrap(), want, "unsigned_middle={unsigned_middle}");
        }
    }

    #[tokio::test]
    async fn tsig_failures() {
        let other = TsigKey::parse("hmac-sha256:qalqan-key:b3RoZXItc2VjcmV0").unwrap();
        // Primary has another secret: it rejects the request.
        let addr = signing_primary(other, false, false).await;
        let err = transfer(addr, &zone(), None, Some(&key()), &limits())
            .await
            .unwrap_err();
        assert!(matches!(&err, AxfrError::Tsig(m) if m.contains("BADSIG")), "{err:?}");
        // A message altered in flight.
        let addr = signing_primary(key(), false, true).await;
        let err = transfer(addr, &zone(), None, Some(&key()), &limits())
            .await
            .unwrap_err();
        assert!(matches!(&err, AxfrError::Tsig(m) if m.contains("bad MAC")), "{err:?}");
        // An unsigned answer to a signed request.
        let addr = fake_primary(|req, _| (messages(&req, vec![vec![soa(7), soa(7)]]), false)).await;
        let err = transfer(addr, &zone(), None, Some(&key()), &limits())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AxfrError::Tsig(m) if m.contains("not signed")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn soa_serial_over_udp_and_tcp_fallback() {
        // UDP answers with TC; the TCP fallback gives the serial.
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            let req = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(req.queries[0].query_type(), RecordType::SOA);
            let mut m = response(&req, vec![]);
            m.metadata.truncation = true;
            udp.send_to(&wire(&m), peer).await.unwrap();
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.unwrap();
            let req = Message::from_vec(&buf).unwrap();
            let w = wire(&response(&req, vec![soa(42)]));
            let mut framed = u16::try_from(w.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&w);
            s.write_all(&framed).await.unwrap();
        });
        assert_eq!(
            soa_serial(addr, &zone(), None, Duration::from_secs(5)).await.unwrap(),
            42
        );
    }

    /// A primary's own fudge does not widen ours: an answer signed an hour
    /// ago with a 10-hour fudge is refused (a replay window of hours).
    #[test]
    fn tsig_time_is_checked_against_our_fudge_not_the_primarys() {
        let key = TsigKey::parse("hmac-sha256:k.example:c2VjcmV0").unwrap();
        let request_mac = vec![7u8; 32];
        let signed_at = 1_800_000_000u64;
        let mut msg = Message::new(42, MessageType::Response, OpCode::Query);
        msg.add_query(Query::query(zone(), RecordType::AXFR));
        msg.add_answer(soa(7));
        sign_message_with(&mut msg, &key, signed_at, 36_000, Some(&request_mac)).unwrap();
        let buf = msg.to_vec().unwrap();
        let reply = decode(&buf).unwrap();
        let err = TsigVerifier::new(&key, request_mac.clone()).check(&buf, &reply, signed_at + 3600).unwrap_err();
        assert!(err.to_string().contains("outside the 300 s fudge"), "{err}");
        TsigVerifier::new(&key, request_mac.clone()).check(&buf, &reply, signed_at + 299).unwrap();
        // and a wrong MAC is still a wrong MAC inside the window
        TsigVerifier::new(&key, vec![8u8; 32]).check(&buf, &reply, signed_at).unwrap_err();
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

    #[test]
    fn tsig_key_parsing() {
        let ok = TsigKey::parse("hmac-sha256:Qalqan-Key:c2VjcmV0").unwrap();
        assert_eq!(ok.name, name("qalqan-key."));
        assert_eq!(ok.secret, b"secret");
        assert_eq!(ok.algorithm, "hmac-sha256");
        assert_eq!(TsigKey::parse("k.example:c2VjcmV0").unwrap().name, name("k.example."));
        assert!(!format!("{ok:?}").contains("c2VjcmV0") && !format!("{ok:?}").contains("secret\""));
        let bad: &[(&str, &str)] = &[
            ("algorithm", "hmac-md5:k:c2VjcmV0"),
            ("base64", "hmac-sha256:k:not base64!"),
            ("empty secret", "hmac-sha256:k:"),
            ("empty name", "hmac-sha256::c2VjcmV0"),
            ("one part", "c2VjcmV0"),
            ("four parts", "a:b:c:d"),
        ];
        for (case, s) in bad {
            assert!(matches!(TsigKey::parse(s), Err(AxfrError::Tsig(_))), "case `{case}`");
        }
    }

    #[test]
    fn zone_text_lines() {
        let txt = Record::from_rdata(
            name("t.rpz.test."),
            60,
            RData::TXT(TXT::from_bytes(vec![&b"a \"q\" \\ b"[..], &[7u8, b'x'][..]])),
        );
        let cases: Vec<(&str, Record, &str)> = vec![
            (
                "nxdomain",
                cname("bad.example", "."),
                "bad.example.rpz.test. 300 IN CNAME .",
            ),
            (
                "nodata",
                cname("*.bad.example", "*."),
                "*.bad.example.rpz.test. 300 IN CNAME *.",
            ),
            (
                "passthru",
                cname("ok.example", "rpz-passthru."),
                "ok.example.rpz.test. 300 IN CNAME rpz-passthru.",
            ),
            (
                "drop",
                cname("d.example", "rpz-drop."),
                "d.example.rpz.test. 300 IN CNAME rpz-drop.",
            ),
            (
                "redirect",
                cname("r.example", "walled.example."),
                "r.example.rpz.test. 300 IN CNAME walled.example.",
            ),
            (
                "idn stays ascii",
                cname("xn--80ak6aa92e.com", "."),
                "xn--80ak6aa92e.com.rpz.test. 300 IN CNAME .",
            ),
            (
                "a",
                Record::from_rdata(name("l.rpz.test."), 5, RData::A(A::new(192, 0, 2, 1))),
                "l.rpz.test. 5 IN A 192.0.2.1",
            ),
            ("txt", txt, r#"t.rpz.test. 60 IN TXT "a \"q\" \\ b" "\007x""#),
            (
                "soa",
                soa(9),
                "rpz.test. 3600 IN SOA ns.rpz.test. admin.rpz.test. 9 3600 600 86400 60",
            ),
        ];
        for (case, record, want) in cases {
            let text = to_zone_text(&zone(), std::slice::from_ref(&record));
            assert_eq!(text, format!("$ORIGIN rpz.test.\n{want}\n"), "case `{case}`");
        }
    }

    #[test]
    fn zone_text_parses_as_rpz() {
        use crate::lists::parse::{rpz, ParseOutput};
        let records = vec![
            soa(9),
            Record::from_rdata(
                zone(),
                3600,
                RData::NS(hickory_proto::rr::rdata::NS(name("ns.rpz.test."))),
            ),
            cname("bad.example", "."),
            cname("*.bad.example", "*."),
            cname("ok.example", "rpz-passthru."),
            Record::from_rdata(name("l.rpz.test."), 5, RData::A(A::new(192, 0, 2, 1))),
            Record::from_rdata(
                name("l.rpz.test."),
                5,
                RData::TXT(TXT::new(vec!["blocked \"here\"".into()])),
            ),
        ];
        let text = to_zone_text(&zone(), &records);
        let mut out = ParseOutput::default();
        rpz::parse("axfr", text.as_bytes(), &mut out);
        assert_eq!(out.bad_lines, 0, "{:?}\n{text}", out.errors);
        assert_eq!(out.entries.len(), 4, "{:?}\n{text}", out.entries);
    }
}
