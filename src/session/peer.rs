//! Who is on the other end of a session: a network client (its address and
//! ours) or a caller on the local submission socket (SPEC §5).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Who is on the other end, and on which address they reached us.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address; None when unknown (inetd over a pipe) and on
    /// the local socket.
    pub remote: Option<SocketAddr>,
    /// Our address on this connection, for address literals (`root@[IP]`).
    pub local: Option<SocketAddr>,
    /// The caller on the local submission socket; None on the network.
    pub caller: Option<LocalCaller>,
}

/// A caller on the local submission socket (SPEC §5): the uid the kernel
/// reported (SO_PEERCRED), never one the client claims, and its login name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCaller {
    pub uid: u32,
    /// From /etc/passwd; the uid in decimal when it has no entry there.
    pub user: String,
}

impl Peer {
    /// A network client. An IPv4 client reached through an IPv6 socket
    /// (`::ffff:a.b.c.d`) is kept as the IPv4 address, so that logs, the
    /// Received header and address literals see one form (SPEC §6).
    pub fn network(remote: Option<SocketAddr>, local: Option<SocketAddr>) -> Peer {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        Peer {
            remote: remote.map(canonical),
            local: local.map(canonical),
            caller: None,
        }
    }

    /// A caller on the local submission socket.
    pub fn local_caller(caller: LocalCaller) -> Peer {
        Peer {
            remote: None,
            local: None,
            caller: Some(caller),
        }
    }

    /// Loopback clients, local pipes and local-socket callers are trusted
    /// for pipelining rules and may AUTH without TLS.
    pub fn is_loopback(&self) -> bool {
        self.caller.is_some()
            || self
                .remote
                .is_none_or(|a| a.ip().is_loopback() || is_mapped_loopback(a.ip()))
    }

    /// `[IP]:PORT` for logs (`local uid=N user=NAME` on the local socket),
    /// `unknown` when there is no address.
    pub fn describe(&self) -> String {
        match (&self.caller, self.remote) {
            (Some(c), _) => format!("local uid={} user={}", c.uid, c.user),
            (None, Some(a)) => format!("[{}]:{}", a.ip(), a.port()),
            (None, None) => "unknown".to_string(),
        }
    }

    /// The comment after HELO in the Received header: `[IP]`, or
    /// `uid UID user NAME` on the local socket (SPEC §6); written where
    /// it is formatted, without a String of its own.
    pub fn trace_comment(&self) -> TraceComment<'_> {
        TraceComment(self)
    }
}

/// [`Peer::trace_comment`].
pub struct TraceComment<'a>(&'a Peer);

impl fmt::Display for TraceComment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.caller, self.0.remote) {
            (Some(c), _) => write!(f, "uid {} user {}", c.uid, c.user),
            (None, Some(a)) => write!(f, "[{}]", a.ip()),
            (None, None) => f.write_str("[unknown]"),
        }
    }
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}
