//! Every raw socket call qalqan makes, in one place: batched UDP receive
//! and send (`recvmmsg`, `sendmmsg`), plain non-blocking sends, socket
//! options (DF, `SO_REUSEPORT`, receive buffer). The rest of the crate
//! speaks in buffers and addresses; nix, rustix and socket2 appear only here.

pub mod udp;
