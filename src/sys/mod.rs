//! Every raw socket call qalqan makes, in one place: batched UDP receive
//! and send (`recvmmsg`, `sendmmsg`), plain non-blocking sends, socket
//! options (DF, `SO_REUSEPORT`, receive buffer) in `udp`, and the one send
//! batch both directions of forwarding queue into (`outbox`). The rest of
//! the crate speaks in buffers and addresses; nix, rustix and socket2
//! appear only here.

pub mod outbox;
pub mod udp;
