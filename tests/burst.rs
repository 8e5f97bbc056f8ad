//! Bursts of connections (SPEC §8): the listen backlog absorbs them, so a
//! client over the limits reads `421 4.3.2` at once instead of waiting in
//! the kernel's queue for a SYN-ACK retransmission.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;

/// The backlog of the listening socket on `port`, as `ss` shows it
/// (Send-Q of a listener).
fn backlog(port: u16) -> Option<u32> {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn listener_backlog_is_somaxconn_or_more() {
    let server = Server::start("max_connections = 2\n");
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // max(SOMAXCONN, 4096, limits), which the kernel caps at SOMAXCONN;
    // std alone would give 128.
    assert_eq!(backlog(server.addr.port()), Some(somaxconn));
}

#[test]
fn burst_of_2000_connects_over_the_limit_all_read_421_promptly() {
    let server = Server::start("max_connections = 2\nmax_connections_per_ip = 2\n");
    // Two sessions hold the whole limit: every other client is refused.
    let mut holders: Vec<_> = (0..2).map(|_| server.connect()).collect();
    for h in &mut holders {
        assert!(h.reply().starts_with("220 "));
    }
    let addr = server.addr;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                // All of this thread's connects first, then the replies:
                // 2000 connections in flight at once.
                let mut open = Vec::new();
                for _ in 0..250 {
                    let start = Instant::now();
                    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
                        .expect("connect");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    open.push((start, stream));
                }
                open.into_iter()
                    .map(|(start, mut stream)| {
                        let mut reply = Vec::new();
                        let _ = stream.read_to_end(&mut reply);
                        (
                            start.elapsed(),
                            String::from_utf8_lossy(&reply).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in threads {
        results.extend(t.join().unwrap());
    }
    assert_eq!(results.len(), 2000);
    let refused = results
        .iter()
        .filter(|(_, r)| r == "421 4.3.2 Too many connections, try again later\r\n")
        .count();
    let odd: Vec<_> = results
        .iter()
        .filter(|(_, r)| !r.starts_with("421 4.3.2 "))
        .take(5)
        .collect();
    assert_eq!(refused, 2000, "not refused with 421 4.3.2: {odd:?}");
    let slowest = results.iter().map(|(t, _)| *t).max().unwrap();
    // A client left in an overflowing queue waits for the server's SYN-ACK
    // retransmissions: seconds, then tens of seconds.
    assert!(
        slowest < Duration::from_secs(5),
        "slowest client read its reply after {slowest:?}"
    );
    eprintln!("slowest of 2000 refused clients: {slowest:?}");
    for h in &mut holders {
        h.expect("QUIT", "221 2.0.0");
    }
}
