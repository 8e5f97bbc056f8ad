//! The connection limits (SPEC §3 `max_connections`,
//! `max_connections_per_ip`): a slot per session, given back when it ends.

use super::*;

/// Counts sessions, in all and per client (address, or uid on the local
/// socket).
pub(super) struct Limiter {
    pub(super) max: usize,
    pub(super) max_per_ip: usize,
    pub(super) state: Mutex<Counts>,
}

/// Who a session is counted against for `max_connections_per_ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Source {
    Ip(IpAddr),
    /// A caller on the local socket.
    Uid(u32),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source::Ip(ip)
    }
}

#[derive(Default)]
pub(super) struct Counts {
    pub(super) total: usize,
    pub(super) per_ip: HashMap<Source, usize>,
}

/// One session's place under the limits, given back on drop.
pub(super) struct Slot {
    pub(super) limiter: Arc<Limiter>,
    pub(super) ip: Source,
}

impl Limiter {
    pub(super) fn new(max: usize, max_per_ip: usize) -> Limiter {
        Limiter {
            max,
            max_per_ip,
            state: Mutex::new(Counts::default()),
        }
    }

    pub(super) fn acquire(self: &Arc<Self>, ip: impl Into<Source>) -> Option<Slot> {
        let ip = ip.into();
        let mut counts = lock(&self.state);
        let for_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= self.max || for_ip >= self.max_per_ip {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, for_ip + 1);
        Some(Slot {
            limiter: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.limiter.state);
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}
