//! Recipient routing (SPEC §4): whether a recipient is local, and the
//! delivery [`Target`] its mail goes to (today a Maildir).
//!
//! `config.rs` parses the `domain`, `maildir`, `mailbox` and `alias` keys
//! and lends them here as [`Tables`]; the decisions are made here, for SMTP sessions,
//! sendmail mode and `newaliases` alike:
//!
//! 1. the domain: one of the configured domains (case-insensitive, one
//!    trailing dot ignored), an address literal of this box, or none;
//! 2. the local part: case-insensitive, `+detail` dropped;
//! 3. aliases followed (loading refuses a cycle, see [`alias_cycle`]);
//! 4. then `mailbox` entries, then the default `maildir`;
//! 5. with `detail_folders`, the `+detail` names the Maildir++ folder the
//!    mail goes into, when it is a safe folder name ([`folder_of`]); the
//!    target carries its Maildir's budget.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::address::{Address, Domain};
use crate::delivery::Target;
use crate::listen::Listen;
use crate::maildir::Budget;

/// The tables routing decides from, as the config holds them
/// (`Config::routes`): routing needs no more of the config than this.
#[derive(Clone, Copy, Debug)]
pub struct Tables<'a> {
    /// Local domains, lowercased, without a trailing dot.
    pub domains: &'a [String],
    /// The default mailbox (catch-all for local recipients).
    pub maildir: Option<&'a PathBuf>,
    /// `mailbox` entries: a lowercased local part or full address, and
    /// its Maildir.
    pub mailboxes: &'a [(String, PathBuf)],
    /// `alias` entries: lowercased NAME to TARGET.
    pub aliases: &'a [(String, String)],
    /// The listeners: an address literal naming one is local.
    pub listen: &'a [Listen],
    /// The budget of every configured Maildir (one not listed has none).
    pub budgets: &'a [(PathBuf, Budget)],
    /// `detail_folders`: `name+detail` goes into the folder `.detail/`.
    pub detail_folders: bool,
}

/// The longest `+detail` that names a folder.
pub const MAX_FOLDER: usize = 64;

/// Where a recipient's mail goes (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A local recipient, delivered to this target.
    Mailbox(Target),
    /// A local recipient without a mailbox: `550 5.1.1`.
    NoMailbox,
    /// Not one of ours: `550 5.7.1` relay denied.
    NotLocal,
}

/// Routes one recipient. `local_ip` is the address the client connected
/// to, when there is a connection: an address literal naming it is local
/// (see [`is_box_ip`]).
///
/// An entry naming a full address wins over one naming only the local
/// part. An alias TARGET is always looked up locally, even when it names
/// another domain: smtpbox never relays.
pub fn route(tables: &Tables<'_>, addr: &Address, local_ip: Option<IpAddr>) -> Route {
    let mut key = match &addr.domain {
        // RFC 5321 4.5.1: `postmaster` (and any bare local part) is ours.
        None => Key::new(&addr.local, None),
        Some(Domain::Name(name)) => {
            let name = normalize_domain(name);
            if !tables.domains.iter().any(|d| normalize_domain(d) == name) {
                return Route::NotLocal;
            }
            Key::new(&addr.local, Some(&name))
        }
        Some(Domain::Literal(ip)) if is_box_ip(tables, local_ip, *ip) => {
            Key::new(&addr.local, None)
        }
        Some(Domain::Literal(_)) => return Route::NotLocal,
    };
    // Bounded: loading rejects alias loops, but the fields are public.
    for _ in 0..tables.aliases.len() {
        let Some(i) = find(tables.aliases, &key) else {
            break;
        };
        key = Key::from_name(&tables.aliases[i].1);
    }
    let maildir = match find(tables.mailboxes, &key) {
        Some(i) => Some(&tables.mailboxes[i].1),
        None => tables.maildir,
    };
    let Some(root) = maildir else {
        return Route::NoMailbox;
    };
    let budget = tables
        .budgets
        .iter()
        .find(|(path, _)| path == root)
        .map_or(Budget::default(), |(_, budget)| *budget);
    let folder = match tables.detail_folders {
        true => folder_of(&addr.local.to_lowercase()),
        false => None,
    };
    Route::Mailbox(Target::Maildir {
        root: root.clone(),
        folder,
        budget,
    })
}

/// The Maildir++ folder a local part's `+detail` names (`root+disk`:
/// `disk`), or None for the inbox: no detail, or one that is not a safe
/// folder name. Safe is 1 to [`MAX_FOLDER`] ASCII letters, digits, `-`
/// and `_`: no `.` (Maildir++'s hierarchy separator, and `..`), no `/`,
/// no control byte, nothing a file system or IMAP's folder-name encoding
/// would read otherwise.
pub fn folder_of(local: &str) -> Option<String> {
    let (base, detail) = local.split_once('+')?;
    let safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let ok = !base.is_empty()
        && !detail.is_empty()
        && detail.len() <= MAX_FOLDER
        && detail.bytes().all(safe);
    ok.then(|| detail.to_string())
}

/// Is `ip` an address of this box, for an address literal
/// (`root@[127.0.0.1]`): loopback, a `listen` address, or the address the
/// client connected to. IPv4-mapped IPv6 compares as IPv4.
pub fn is_box_ip(tables: &Tables<'_>, local_ip: Option<IpAddr>, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let listen = tables.listen.iter().map(|l| l.addr.ip());
    ip.is_loopback()
        || local_ip
            .into_iter()
            .chain(listen)
            .any(|b| b.to_canonical() == ip)
}

/// A domain as routing compares it: lowercased, without one trailing dot.
pub fn normalize_domain(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_lowercase()
}

/// `root+disk` is looked up as `root`; a local part that starts with `+`
/// has no base to strip to and is kept whole.
pub fn strip_detail(local: &str) -> &str {
    match local.find('+') {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    }
}

/// Follows each alias chain; one that comes back to its start is a loop
/// (SPEC §4: a config error). Returns the first such alias in list order
/// and the loop, from that alias back to itself.
pub fn alias_cycle(aliases: &[(String, String)]) -> Option<(usize, Vec<&str>)> {
    for start in 0..aliases.len() {
        let mut chain = vec![aliases[start].0.as_str()];
        let mut current = start;
        // A chain longer than the alias count has repeated an alias.
        for _ in 0..aliases.len() {
            let Some(next) = find(aliases, &Key::from_name(&aliases[current].1)) else {
                break;
            };
            chain.push(aliases[next].0.as_str());
            if next == start {
                return Some((start, chain));
            }
            current = next;
        }
    }
    None
}

/// A recipient reduced to what `alias` and `mailbox` entries are matched
/// against: the lowercased local part without `+detail`, and with it
/// `local@domain` when the domain is a name.
struct Key {
    local: String,
    full: Option<String>,
}

impl Key {
    fn new(local: &str, domain: Option<&str>) -> Key {
        let local = strip_detail(&local.to_lowercase()).to_string();
        let full = domain.map(|d| format!("{local}@{d}"));
        Key { local, full }
    }

    /// An alias TARGET, as `config.rs` stores it (lowercased, domain
    /// normalized).
    fn from_name(name: &str) -> Key {
        match name.rsplit_once('@') {
            Some((local, domain)) => Key::new(local, Some(domain)),
            None => Key::new(name, None),
        }
    }
}

/// The entry for `key`: one naming the full address wins over one naming
/// the local part alone.
fn find<T>(entries: &[(String, T)], key: &Key) -> Option<usize> {
    let by_full = key
        .full
        .as_ref()
        .and_then(|full| entries.iter().position(|(name, _)| name == full));
    by_full.or_else(|| entries.iter().position(|(name, _)| *name == key.local))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use super::*;
    use crate::config::{Config, Listen, Mode};

    fn maildir(path: &str) -> Route {
        Route::Mailbox(Target::maildir(path))
    }

    fn load(text: &str) -> Config {
        Config::parse(&format!("hostname = box\n{text}"), Path::new("t.conf")).unwrap()
    }

    /// `local@domain`, `local@[ip]` or a bare `local`, built by hand so
    /// that forms the SMTP parser refuses (a trailing dot) still reach
    /// the router.
    fn addr(text: &str) -> Address {
        let (local, domain) = match text.rsplit_once('@') {
            None => (text, None),
            Some((local, d)) => match d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
                Some(ip) => (local, Some(Domain::Literal(ip.parse().unwrap()))),
                None => (local, Some(Domain::Name(d.to_string()))),
            },
        };
        Address {
            local: local.to_string(),
            domain,
        }
    }

    fn aliases(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn routing() {
        let c = load(
            "domain = example.org\ndomain = box.lan\nmaildir = /m/all\n\
             mailbox = alice /m/alice\nmailbox = alice@box.lan /m/alice-lan\n\
             mailbox = ops@example.org /m/ops\nmailbox = other /m/other\n\
             alias = root admin\nalias = admin alice\nalias = abuse@example.org ops@example.org\n\
             alias = bounce other@elsewhere.example\n",
        );
        let mine: IpAddr = "192.0.2.7".parse().unwrap();
        let route = |a: &str| match route(&c.routes(), &addr(a), Some(mine)) {
            Route::Mailbox(target) => target.to_string(),
            other => format!("{other:?}"),
        };
        let cases = [
            // Domains: case-insensitive, one trailing dot ignored.
            ("alice@EXAMPLE.org", "/m/alice"),
            ("alice@example.org.", "/m/alice"),
            ("alice@example.org..", "NotLocal"),
            ("alice@example.com", "NotLocal"),
            ("alice@localhost", "NotLocal"),
            // Local part case-insensitive; +detail stripped; "+x" kept whole.
            ("ALICE+disk@example.org", "/m/alice"),
            ("+alice", "/m/all"),
            // Full-address entries win over local-part entries.
            ("Alice@box.lan", "/m/alice-lan"),
            ("ops@example.org", "/m/ops"),
            ("ops@box.lan", "/m/all"),
            // Aliases, chained, by local part and by address.
            ("root+cron", "/m/alice"),
            ("abuse@example.org", "/m/ops"),
            ("abuse@box.lan", "/m/all"),
            // A target in another domain is still looked up locally.
            ("bounce", "/m/other"),
            // Bare local parts and postmaster go to the default maildir.
            ("postmaster", "/m/all"),
            ("nobody@example.org", "/m/all"),
            // Address literals of the box: loopback and the given IPs.
            ("alice@[127.0.0.1]", "/m/alice"),
            ("x@[::1]", "/m/all"),
            ("x@[192.0.2.7]", "/m/all"),
            ("x@[::ffff:192.0.2.7]", "/m/all"),
            ("x@[198.51.100.1]", "NotLocal"),
        ];
        for (rcpt, want) in cases {
            assert_eq!(route(rcpt), want, "{rcpt}");
        }
    }

    #[test]
    fn routing_without_default_maildir() {
        let mut c =
            load("domain = example.org\nmailbox = alice /m/alice\nalias = postmaster alice\n");
        assert_eq!(
            route(&c.routes(), &addr("bob@example.org"), None),
            Route::NoMailbox
        );
        assert_eq!(
            route(&c.routes(), &addr("Postmaster"), None),
            maildir("/m/alice")
        );
        c.aliases.clear();
        assert_eq!(
            route(&c.routes(), &addr("postmaster"), None),
            Route::NoMailbox
        );
        // A loop slipped in through the public fields cannot spin forever.
        c.aliases = aliases(&[("a", "b"), ("b", "a")]);
        assert_eq!(route(&c.routes(), &addr("a"), None), Route::NoMailbox);
    }

    #[test]
    fn detail_folders_name_a_safe_folder_or_the_inbox() {
        let c = load(
            "domain = example.org\nmaildir = /m/all\nmailbox = ops keep_days=30 /m/ops\n\
             alias = root ops\ndetail_folders = yes\nmaildir_keep = 20000000\n",
        );
        let to = |a: &str| match route(&c.routes(), &addr(a), None) {
            Route::Mailbox(target) => target,
            other => panic!("{other:?}"),
        };
        // Through an alias, lowercased; the budget is the Maildir's.
        let disk = to("root+Disk@example.org");
        assert_eq!(disk.to_string(), "/m/ops/.disk");
        let ops_budget = Budget {
            quota: 0,
            keep: 20_000_000,
            keep_days: 30,
        };
        assert_eq!(
            disk,
            Target::Maildir {
                root: "/m/ops".into(),
                folder: Some("disk".into()),
                budget: ops_budget,
            }
        );
        assert_eq!(to("x+smart_1-a").to_string(), "/m/all/.smart_1-a");
        assert_eq!(
            to("x").to_string(),
            "/m/all",
            "no detail: the inbox, with the global budget"
        );
        let Target::Maildir { budget, .. } = to("x");
        assert_eq!(budget.keep_days, 0);
        // Hostile or unusable details: the inbox, never outside it.
        let long = format!("x+{}", "a".repeat(MAX_FOLDER + 1));
        let at_most = format!("x+{}", "a".repeat(MAX_FOLDER));
        assert_eq!(
            to(&at_most).to_string().len(),
            "/m/all/.".len() + MAX_FOLDER
        );
        for hostile in [
            "x+..", "x+.", "x+a/b", "x+%2e%2e", "x+a.b", "x+", "x+a+b", "x+\u{7f}", "x+a\tb",
            "x+é", &long,
        ] {
            assert_eq!(to(hostile).to_string(), "/m/all", "{hostile:?}");
        }
        // Off: the detail is only dropped.
        let off = load("maildir = /m/all\n");
        assert_eq!(
            route(&off.routes(), &addr("x+disk"), None),
            maildir("/m/all")
        );
    }

    #[test]
    fn detail_is_dropped_before_every_lookup() {
        assert_eq!(strip_detail("root+disk"), "root");
        assert_eq!(strip_detail("root+disk+smart"), "root");
        assert_eq!(strip_detail("root+"), "root");
        assert_eq!(strip_detail("+root"), "+root");
        assert_eq!(strip_detail("root"), "root");
        let c = load(
            "domain = example.org\nmailbox = ops /m/ops\nmailbox = bob@example.org /m/bob\n\
             alias = root ops\n",
        );
        let to = |a: &str| route(&c.routes(), &addr(a), None);
        // By local part, by full address, and through an alias.
        assert_eq!(to("OPS+cron@example.org"), maildir("/m/ops"));
        assert_eq!(to("bob+x+y@Example.org"), maildir("/m/bob"));
        assert_eq!(to("root+smartd"), maildir("/m/ops"));
        // No default maildir: detail does not make an unknown user known.
        assert_eq!(to("alice+ops@example.org"), Route::NoMailbox);
        assert_eq!(to("+ops@example.org"), Route::NoMailbox);
    }

    #[test]
    fn alias_cycles_are_found_with_their_path() {
        assert_eq!(alias_cycle(&[]), None);
        let chain = aliases(&[("a", "b"), ("b", "c"), ("c", "d")]);
        assert_eq!(alias_cycle(&chain), None);
        // The first alias on a loop, in list order, and the loop from it.
        let looped = aliases(&[("x", "a"), ("a", "b"), ("b", "c"), ("c", "a")]);
        assert_eq!(alias_cycle(&looped), Some((1, vec!["a", "b", "c", "a"])));
        // Onto itself, also through +detail.
        let own = aliases(&[("root", "root+x")]);
        assert_eq!(alias_cycle(&own), Some((0, vec!["root", "root"])));
        // By full address: `b` goes back to `a@h.example`, not to `a`.
        let full = aliases(&[("a", "z"), ("a@h.example", "b"), ("b", "a@h.example")]);
        assert_eq!(
            alias_cycle(&full),
            Some((1, vec!["a@h.example", "b", "a@h.example"]))
        );
        // A chain that only ends on the name of an address is no loop.
        let open = aliases(&[("a", "b"), ("b", "c"), ("c@x", "a")]);
        assert_eq!(alias_cycle(&open), None);
    }

    #[test]
    fn box_ips_are_loopback_the_listen_addresses_and_the_local_address() {
        let mut c = load("domain = example.org\nmaildir = /m\n");
        c.listen = vec![Listen {
            addr: SocketAddr::new("192.0.2.1".parse().unwrap(), 25),
            mode: Mode::Smtp,
        }];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for loopback in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_box_ip(&c.routes(), None, ip(loopback)), "{loopback}");
        }
        assert!(is_box_ip(&c.routes(), None, ip("192.0.2.1")));
        assert!(is_box_ip(&c.routes(), None, ip("::ffff:192.0.2.1")));
        assert!(!is_box_ip(&c.routes(), None, ip("192.0.2.2")));
        assert!(is_box_ip(
            &c.routes(),
            Some(ip("192.0.2.2")),
            ip("192.0.2.2")
        ));
        assert!(is_box_ip(
            &c.routes(),
            Some(ip("::ffff:192.0.2.2")),
            ip("192.0.2.2")
        ));
        assert!(!is_box_ip(
            &c.routes(),
            Some(ip("192.0.2.2")),
            ip("198.51.100.1")
        ));
    }
}
