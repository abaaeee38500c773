//! The slow path: one request as bytes through hickory's decode, its
//! FORMERR/drop rules and our handler, reply as bytes. What the fast paths
//! hand over (UDP's and the encrypted transports', [`super::fast::answer_stream`]:
//! anything they do not answer themselves) and what every TCP query goes
//! through; the fuzz targets and the differential tests call it
//! the same way.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use super::handler::{Handler, Prechecked};
use crate::metrics::Transport;
use crate::policy::{Hit, Policy};

/// Captures the encoded reply. `udp`: encode within the reply's EDNS payload
/// (512 without EDNS), truncating as hickory does for UDP.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>, bool);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut buf = Vec::with_capacity(512);
        let limit = if self.1 { response.edns().map(|e| e.max_payload().max(512)).unwrap_or(512) } else { u16::MAX };
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(limit);
        let info = response.destructive_emit(&mut enc)?;
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(buf);
        }
        Ok(info)
    }
}

/// Handles one UDP request from `src`; `None` = no reply (dropped).
pub async fn handle_bytes(handler: &Handler, bytes: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    handle_bytes_on(handler, bytes, src, true).await
}

/// Handles one request that came over UDP (`udp`: replies truncated to the
/// client's payload size) or TCP.
pub async fn handle_bytes_on(handler: &Handler, bytes: &[u8], src: SocketAddr, udp: bool) -> Option<Vec<u8>> {
    handle_bytes_via(handler, bytes, src, if udp { Transport::Udp } else { Transport::Tcp }).await
}

/// Handles one request that came over `transport`. Replies over an
/// encrypted transport to a client that sent EDNS are padded to a multiple
/// of 468 bytes (RFC 8467 §4.1).
pub async fn handle_bytes_via(handler: &Handler, bytes: &[u8], src: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
    handle_bytes_checked(handler, bytes, src, transport, Prechecked::default()).await
}

/// [`handle_bytes_via`] for a query the fast path has looked at already
/// ([`Prechecked`]).
pub async fn handle_bytes_checked(handler: &Handler, bytes: &[u8], src: SocketAddr, transport: Transport, pre: Prechecked) -> Option<Vec<u8>> {
    let mut reply = handle_request_bytes(handler, bytes, src, transport, pre).await?;
    if transport.encrypted() {
        crate::wire::pad::pad(&mut reply, crate::wire::pad::RESPONSE_BLOCK);
    }
    Some(reply)
}

/// [`handle_request`] and, with dnstap on, the query and its reply (or its
/// absence) handed to it.
async fn handle_request_bytes(handler: &Handler, bytes: &[u8], src: SocketAddr, transport: Transport, pre: Prechecked) -> Option<Vec<u8>> {
    let Some(tap) = &handler.shared.dnstap else {
        return handle_request(handler, bytes, src, transport, pre).await.0;
    };
    let at = std::time::SystemTime::now();
    let (reply, blocked) = handle_request(handler, bytes, src, transport, pre).await;
    // a dropped query is reported when a policy dropped it (a rate-limited
    // one, or a message that was no query, is not)
    if reply.is_some() || blocked.is_some() {
        tap.log(bytes, reply.as_deref(), src, transport, Some(at), blocked.as_ref().map(|(p, h)| (p, h)));
    }
    reply
}

/// The reply to one request (`None`: none) and the policy and hit that
/// blocked it, if one did.
async fn handle_request(
    handler: &Handler,
    bytes: &[u8],
    src: SocketAddr,
    transport: Transport,
    pre: Prechecked,
) -> (Option<Vec<u8>>, Option<(Arc<Policy>, Hit)>) {
    let udp = transport == Transport::Udp;
    let mut decoder = BinDecoder::new(bytes);
    let Ok(header) = Header::read(&mut decoder) else { return (None, None) };
    if header.metadata.message_type == MessageType::Response {
        return (None, None); // never answer a response, not even with FORMERR (reply loops)
    }
    let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
    let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
        Ok(r) => r,
        Err(_) => {
            // as hickory-server does: FORMERR once the header parses
            let mut m = Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr);
            m.metadata.recursion_desired = header.metadata.recursion_desired;
            return (m.to_vec().ok(), None);
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return (None, None);
    }
    let cap = Capture(Arc::default(), udp);
    let (_, blocked) = handler.handle_tapped(&request, cap.clone(), transport, pre).await;
    (cap.0.lock().ok().and_then(|mut s| s.take()), blocked)
}
