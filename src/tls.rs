//! TLS for STARTTLS (RFC 3207) and implicit-TLS listeners (RFC 8314): the
//! certificate files, re-read when they change (ACME renewals, through
//! [`Watched`]), and a [`Transport`] that runs rustls over another
//! transport. Everything rustls lives here; the rest of smtpbox sees only a
//! `Transport`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use rustls::{InconsistentKeys, ProtocolVersion, ServerConfig, ServerConnection, StreamOwned};

use crate::transport::{Handshake, Transport};
use crate::watched::{self, Contents, Watched};

/// How often [`TlsFiles::current`] looks at the files' metadata.
const RECHECK: Duration = Duration::from_secs(1);

/// The certificate chain and private key files, and the server configuration
/// built from them. Shared by every session (it is `Sync`).
pub struct TlsFiles {
    pair: Watched<ServerConfig>,
}

impl TlsFiles {
    /// Reads and checks the pair; the error names the file at fault and
    /// what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, String> {
        let pair = Watched::load("TLS", &[cert, key], RECHECK, build_config)?;
        Ok(TlsFiles { pair })
    }

    /// The configuration for a new connection. At most once per second it
    /// checks whether either file changed (mtime, ctime, size, inode) and
    /// then reloads; a new pair that does not load, or a file that cannot
    /// be read, is logged and the old configuration kept until the files
    /// change again.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.pair
            .current()
            .unwrap_or_else(|unreadable| unreadable.last)
    }
}

impl Handshake for TlsFiles {
    fn accept(&self, plain: Box<dyn Transport>) -> Result<(Box<dyn Transport>, String), String> {
        let tls = accept(self.current(), plain)?;
        let description = tls.describe();
        Ok((Box::new(tls), description))
    }
}

/// `--check`: the pair loads and the key matches the certificate.
pub fn check(cert: &Path, key: &Path) -> Result<(), String> {
    let read = |path: &Path| {
        watched::read(path).map(|bytes| Contents {
            path: path.to_path_buf(),
            bytes,
        })
    };
    build_config(&[read(cert)?, read(key)?]).map(drop)
}

/// Runs the server side of a TLS handshake over `inner` to completion, so
/// the caller greets only an established session. The inner transport's
/// timeout applies to each read and write of the handshake. The error is a
/// reason for the log.
pub fn accept(
    config: Arc<ServerConfig>,
    inner: Box<dyn Transport>,
) -> Result<TlsTransport, String> {
    let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(conn, inner);
    while stream.conn.is_handshaking() {
        match stream.conn.complete_io(&mut stream.sock) {
            // No progress and still handshaking: never spin.
            Ok((0, 0)) => return Err("handshake stalled".into()),
            Ok(_) => {}
            Err(e) => return Err(handshake_failure(&e)),
        }
    }
    Ok(TlsTransport { stream })
}

/// A TLS session over another transport.
pub struct TlsTransport {
    stream: StreamOwned<ServerConnection, Box<dyn Transport>>,
}

impl TlsTransport {
    /// The negotiated version and cipher suite by its IANA name, e.g.
    /// `TLSv1.3 TLS_AES_256_GCM_SHA384`, for logs and Received headers.
    pub fn describe(&self) -> String {
        let version = match self.stream.conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_string(),
        };
        match self.stream.conn.negotiated_cipher_suite() {
            Some(suite) => format!("{version} {}", iana_name(suite.suite())),
            None => version,
        }
    }
}

/// A cipher suite's name in the IANA TLS registry, as OpenSSL-based
/// servers write it in Received headers. rustls names TLS 1.2 suites that
/// way already (`TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`) but prefixes its
/// TLS 1.3 ones `TLS13_` where IANA has `TLS_` (RFC 8446 B.4).
pub fn iana_name(suite: rustls::CipherSuite) -> String {
    let name = format!("{suite:?}");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

impl Read for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf) {
            // A TCP close without close_notify (RFC 8446 6.1) ends the
            // session like a clean one: SMTP finds truncation by itself (a
            // message ends only with CRLF.CRLF or BDAT LAST).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for TlsTransport {
    /// Encrypts `buf` and writes it through to the inner transport.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // rustls would wait for input when there is nothing to write.
        if buf.is_empty() {
            return Ok(0);
        }
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Transport for TlsTransport {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.sock.set_timeout(timeout)
    }

    fn input_pending(&mut self) -> bool {
        // Decrypted bytes rustls holds, or records not read yet. A broken
        // session reports false: the next read returns its error.
        let buffered = match self.stream.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0,
            Err(_) => false,
        };
        buffered || self.stream.sock.input_pending()
    }
}

impl Drop for TlsTransport {
    /// Best effort close_notify (RFC 8446 6.1), bounded by the write timeout.
    fn drop(&mut self) {
        self.stream.conn.send_close_notify();
        while self.stream.conn.wants_write() {
            match self.stream.conn.write_tls(&mut self.stream.sock) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = self.stream.sock.flush();
    }
}

/// Parses and checks the pair (the certificate file's contents, then the
/// key's), then builds the server configuration: ring, TLS 1.2 and 1.3, no
/// client certificates.
fn build_config(files: &[Contents]) -> Result<ServerConfig, String> {
    let [cert, key] = files else {
        return Err("TLS setup: a certificate and a key file are needed".into());
    };
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let (cert, key) = (cert.path.as_path(), key.path.as_path());
    // ring's suites, groups and key types, but no signature verification:
    // rustls uses it only to check client certificates, which are never
    // asked for, and leaving it out drops the verifiers from the binary
    // (14 KB).
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        signature_verification_algorithms: rustls::crypto::WebPkiSupportedAlgorithms {
            all: &[],
            mapping: &[],
        },
        ..ring::default_provider()
    });

    // The key is loaded and matched here, once, rather than by
    // `with_single_cert`, so that each error names the right file.
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: unusable private key: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key cannot tell its public half; rustls accepts that.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "{}: private key does not match the certificate in {}",
                key.display(),
                cert.display()
            ))
        }
        Err(e) => return Err(format!("{}: bad certificate: {e}", cert.display())),
    }

    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS12, &TLS13])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok(config)
}

/// Every certificate in the file, end-entity first.
fn read_chain(file: &Contents) -> Result<Vec<CertificateDer<'static>>, String> {
    let path = &file.path;
    let chain = CertificateDer::pem_slice_iter(&file.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_failure(path, &e, true))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in file", path.display()));
    }
    Ok(chain)
}

/// The first private key in the file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn read_key(file: &Contents) -> Result<PrivateKeyDer<'static>, String> {
    let path = &file.path;
    PrivateKeyDer::from_pem_slice(&file.bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!("{}: no private key in file", path.display()),
        e => pem_failure(path, &e, false),
    })
}

/// Describes a PEM reading error; details of a key file's content are not
/// repeated (they may be secret).
fn pem_failure(path: &Path, e: &pem::Error, show_details: bool) -> String {
    match e {
        pem::Error::Io(e) => format!("{}: cannot read: {e}", path.display()),
        e if show_details => format!("{}: malformed PEM: {e}", path.display()),
        _ => format!("{}: malformed PEM", path.display()),
    }
}

/// A handshake error as a log reason.
fn handshake_failure(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::UnexpectedEof => "client closed the connection".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};
    use std::fs;
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{self, Command};
    use std::thread;

    /// A temp directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("smtpbox-tls-{}-{name}", process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            fs::write(self.path(name), text).unwrap();
            self.path(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Runs openssl in `dir`, so that file names are plain words; killed
    /// by coreutils `timeout` (exit 124) when it takes over 30 s.
    fn openssl(dir: &TempDir, args: &str) {
        let mut cmd = Command::new("timeout");
        let out = cmd
            .current_dir(&dir.0)
            .args(["30", "openssl"])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args}: {stderr}");
    }

    /// NAME.crt, self-signed for localhost (an end-entity: webpki refuses a
    /// CA as one), for NAME.key: a new key made with `new_key` (`-newkey`
    /// arguments), or the existing one when `new_key` is empty.
    fn make_cert(dir: &TempDir, name: &str, new_key: &str) -> (PathBuf, PathBuf) {
        let key = match new_key {
            "" => format!("-key {name}.key"),
            args => format!("-newkey {args} -keyout {name}.key"),
        };
        openssl(
            dir,
            &format!(
                "req -x509 -nodes -days 36500 -subj /CN=localhost -out {name}.crt {key} \
                 -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE"
            ),
        );
        (
            dir.path(&format!("{name}.crt")),
            dir.path(&format!("{name}.key")),
        )
    }

    /// A fresh ECDSA P-256 pair (fast to make).
    fn ec_pair(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
        make_cert(dir, name, "ec -pkeyopt ec_paramgen_curve:P-256")
    }

    fn pem(label: &str, body: &str) -> String {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    #[test]
    fn loads_every_key_type_and_encoding() {
        let dir = TempDir::new("types");
        make_cert(&dir, "rsa", "rsa:2048");
        openssl(&dir, "rsa -in rsa.key -traditional -out rsa1.key");
        openssl(&dir, "ecparam -name prime256v1 -genkey -noout -out ec.key");
        make_cert(&dir, "ec", "");
        openssl(&dir, "pkcs8 -topk8 -nocrypt -in ec.key -out ec8.key");
        make_cert(&dir, "ed", "ed25519");

        let cases = [
            ("rsa.crt", "rsa.key", "PRIVATE KEY"),
            ("rsa.crt", "rsa1.key", "RSA PRIVATE KEY"),
            ("ec.crt", "ec.key", "EC PRIVATE KEY"),
            ("ec.crt", "ec8.key", "PRIVATE KEY"),
            ("ed.crt", "ed.key", "PRIVATE KEY"),
        ];
        for (cert, key, label) in cases {
            let text = fs::read_to_string(dir.path(key)).unwrap();
            assert!(
                text.starts_with(&format!("-----BEGIN {label}-----")),
                "{key}"
            );
            let (cert, key) = (dir.path(cert), dir.path(key));
            let files = TlsFiles::load(&cert, &key);
            assert!(files.is_ok(), "{cert:?} {key:?}: {:?}", files.err());
            assert_eq!(check(&cert, &key), Ok(()));
        }
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = TempDir::new("mismatch");
        let (cert_a, _) = ec_pair(&dir, "a");
        let (_, key_b) = ec_pair(&dir, "b");
        let err = TlsFiles::load(&cert_a, &key_b).err().unwrap();
        assert!(err.starts_with(&format!("{}: ", key_b.display())), "{err}");
        assert!(err.contains("does not match"), "{err}");
        assert_eq!(check(&cert_a, &key_b), Err(err));
    }

    #[test]
    fn unreadable_and_garbage_files_are_named() {
        let dir = TempDir::new("bad");
        let (cert, key) = ec_pair(&dir, "good");
        let missing = dir.path("missing.pem");
        let garbage = dir.write("garbage.pem", "hello, world\n");
        let bad_b64 = dir.write("bad64.pem", &pem("CERTIFICATE", "!!!!"));
        let bad_der = dir.write("badder.pem", &pem("CERTIFICATE", "AAAA"));
        let bad_key = dir.write("bad.key", &pem("PRIVATE KEY", "AAAA"));
        let fails = |c: &Path, k: &Path, at: &Path, what: &str| {
            let err = TlsFiles::load(c, k).err().unwrap();
            assert!(
                err.starts_with(&format!("{}: {what}", at.display())),
                "{err}"
            );
        };
        fails(&missing, &key, &missing, "cannot read: ");
        fails(&cert, &missing, &missing, "cannot read: ");
        fails(&dir.0, &key, &dir.0, "cannot read: ");
        // Issue 13: a device is refused, not read until memory runs out.
        let zero = Path::new("/dev/zero");
        fails(zero, &key, zero, "cannot read: not a regular file");
        fails(&cert, zero, zero, "cannot read: not a regular file");
        assert!(check(zero, &key).is_err_and(|e| e.starts_with("/dev/zero: cannot read: ")));
        fails(&garbage, &key, &garbage, "no certificate in file");
        fails(&cert, &garbage, &garbage, "no private key in file");
        // A key file is no certificate file, and the other way round.
        fails(&key, &key, &key, "no certificate in file");
        fails(&cert, &cert, &cert, "no private key in file");
        fails(&bad_b64, &key, &bad_b64, "malformed PEM");
        fails(&bad_der, &key, &bad_der, "bad certificate");
        fails(&cert, &bad_key, &bad_key, "unusable private key");
    }

    #[test]
    fn reload_follows_the_files_and_keeps_the_old_pair_when_broken() {
        let dir = TempDir::new("reload");
        let (cert, key) = ec_pair(&dir, "live");
        let mut files = TlsFiles::load(&cert, &key).unwrap();
        assert_eq!(
            files.pair.recheck,
            Duration::from_secs(1),
            "SPEC: once a second"
        );
        // Within the throttle nothing is looked at. A throttle of an hour:
        // on a loaded machine, making a pair may take longer than the real
        // second.
        files.pair.recheck = Duration::from_secs(3600);
        let first = files.current();
        let (new_cert, new_key) = ec_pair(&dir, "new");
        fs::copy(&new_cert, &cert).unwrap();
        fs::copy(&new_key, &key).unwrap();
        assert!(Arc::ptr_eq(&first, &files.current()));

        files.pair.recheck = Duration::ZERO;
        let second = files.current();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(
            Arc::ptr_eq(&second, &files.current()),
            "reloaded unchanged files"
        );
        // The new certificate is the one served.
        handshake(Arc::clone(&second), &new_cert, &TLS13, true);

        // Half a renewal: a new certificate with the old key, then no key.
        let (other_cert, _) = ec_pair(&dir, "other");
        fs::copy(&other_cert, &cert).unwrap();
        assert!(Arc::ptr_eq(&second, &files.current()));
        fs::remove_file(&key).unwrap();
        assert!(Arc::ptr_eq(&second, &files.current()));
        // The renewal completes.
        fs::copy(&new_cert, &cert).unwrap();
        fs::copy(&new_key, &key).unwrap();
        let third = files.current();
        assert!(!Arc::ptr_eq(&second, &third));
        handshake(third, &new_cert, &TLS12, true);
    }

    #[test]
    fn tls12_session_both_ways_then_close_notify() {
        let dir = TempDir::new("tls12");
        let (cert, key) = ec_pair(&dir, "a");
        let config = TlsFiles::load(&cert, &key).unwrap().current();
        let desc = handshake(config, &cert, &TLS12, true);
        assert!(desc.starts_with("TLSv1.2 TLS_ECDHE_ECDSA_WITH_"), "{desc}");
    }

    #[test]
    fn tls13_session_both_ways_then_abrupt_close() {
        let dir = TempDir::new("tls13");
        let (cert, key) = ec_pair(&dir, "a");
        let config = TlsFiles::load(&cert, &key).unwrap().current();
        let desc = handshake(config, &cert, &TLS13, false);
        assert!(desc.starts_with("TLSv1.3 TLS_AES_"), "{desc}");
    }

    #[test]
    fn cipher_suites_by_iana_name() {
        use rustls::CipherSuite as S;
        let names = [
            (S::TLS13_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384"),
            (S::TLS13_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256"),
            (
                S::TLS13_CHACHA20_POLY1305_SHA256,
                "TLS_CHACHA20_POLY1305_SHA256",
            ),
            (
                S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ),
            (
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ),
        ];
        for (suite, name) in names {
            assert_eq!(iana_name(suite), name);
        }
    }

    #[test]
    fn plaintext_client_fails_the_handshake_with_a_reason() {
        let dir = TempDir::new("plain");
        let (cert, key) = ec_pair(&dir, "a");
        let config = TlsFiles::load(&cert, &key).unwrap().current();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = thread::spawn(move || {
            let mut sock = TcpStream::connect(addr).unwrap();
            sock.write_all(b"EHLO client.example\r\n").unwrap();
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
        });
        let (sock, _) = listener.accept().unwrap();
        let mut sock: Box<dyn Transport> = Box::new(sock);
        sock.set_timeout(Duration::from_secs(5)).unwrap();
        let err = accept(config, sock).err().unwrap();
        assert!(!err.is_empty() && err != "timed out", "{err}");
        client.join().unwrap();
    }

    /// Runs a session on loopback with a client that trusts only
    /// `trusted`: a pipelined pair of lines in, a line out, then a close.
    /// Returns the server's `describe()`.
    fn handshake(
        config: Arc<ServerConfig>,
        trusted: &Path,
        version: &'static SupportedProtocolVersion,
        clean_close: bool,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client_config = client_config(trusted, version);
        let client = thread::spawn(move || {
            let name = ServerName::try_from("localhost").unwrap();
            let conn = ClientConnection::new(client_config, name).unwrap();
            let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
            tls.write_all(b"EHLO client.example\r\nNOOP\r\n").unwrap();
            tls.flush().unwrap();
            let reply = read_line(&mut tls);
            if clean_close {
                tls.conn.send_close_notify();
                tls.flush().unwrap();
            }
            // Dropping the socket closes TCP (abruptly when no close_notify).
            reply
        });

        let (sock, _) = listener.accept().unwrap();
        let mut sock: Box<dyn Transport> = Box::new(sock);
        sock.set_timeout(Duration::from_secs(5)).unwrap();
        let mut tls = accept(config, sock).unwrap();
        // Small reads leave the rest of the pipelined group buffered.
        let mut first = [0u8; 4];
        tls.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"EHLO");
        assert!(tls.input_pending());
        assert_eq!(read_line(&mut tls), " client.example\r\n");
        assert_eq!(read_line(&mut tls), "NOOP\r\n");
        assert!(!tls.input_pending());
        tls.write_all(b"250 localhost\r\n").unwrap();
        tls.flush().unwrap();
        assert_eq!(client.join().unwrap(), "250 localhost\r\n");
        let mut rest = [0u8; 16];
        assert_eq!(tls.read(&mut rest).unwrap(), 0, "close is end of file");
        tls.describe()
    }

    fn client_config(
        trusted: &Path,
        version: &'static SupportedProtocolVersion,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(trusted).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Reads up to and including LF, byte by byte.
    fn read_line(r: &mut impl Read) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            assert_eq!(r.read(&mut byte).unwrap(), 1, "early end: {line:?}");
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    }
}
