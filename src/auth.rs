//! AUTH building blocks (SPEC §3 `users`, §5 AUTH): the password file, the
//! SHA-crypt hashes it holds (`$5$`, `$6$`), and the decoding of SASL PLAIN
//! (RFC 4616) and LOGIN responses (RFC 4954). The session drives the
//! exchange; this module turns client bytes into [`Credentials`] and answers
//! "is this password right" without leaking, by timing, which users exist.
//!
//! Nothing here logs or formats a password or an AUTH payload (SPEC §9).

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ring::digest;

use crate::watched::{self, Contents, Watched};

/// base64("Username:"), the first LOGIN challenge (sent as `334 VXNlcm5hbWU6`).
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// base64("Password:"), the second LOGIN challenge.
pub const LOGIN_PASS_PROMPT: &str = "UGFzc3dvcmQ6";

/// The AUTH password file (SPEC §3 `users`): one `name:hash` per line, the
/// hash as made by `openssl passwd -6`/`-5` or `mkpasswd -m sha-512`.
/// A verification costs what the hash's `rounds=` says (default 5000, a few
/// milliseconds); a line asking for more than 1,000,000 rounds is refused.
pub struct Users {
    entries: HashMap<String, ShaCryptHash>,
    /// Run for unknown users, so a miss costs as much as a wrong password.
    dummy: ShaCryptHash,
}

impl Users {
    /// Reads and parses a users file; errors name the file (and line).
    pub fn load(path: &Path) -> Result<Users, String> {
        let bytes = watched::read(path)?;
        Users::from_file(&[Contents {
            path: path.to_path_buf(),
            bytes,
        }])
    }

    /// Parses the contents of a users file.
    fn from_file(files: &[Contents]) -> Result<Users, String> {
        let [file] = files else {
            return Err("one users file is needed".into());
        };
        let path = file.path.display();
        let text =
            std::str::from_utf8(&file.bytes).map_err(|_| format!("{path}: not valid UTF-8"))?;
        Users::parse(text, &path.to_string())
    }

    /// Parses users-file text; `origin` names it in errors (`origin:line: …`).
    /// Blank lines and `#` comments are skipped; `name:hash:anything` is
    /// accepted as in /etc/shadow.
    pub fn parse(text: &str, origin: &str) -> Result<Users, String> {
        let mut entries = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            let at = |what: String| format!("{origin}:{}: {what}", index + 1);
            if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((name, rest)) = line.split_once(':') else {
                return Err(at("malformed line: expected name:hash".into()));
            };
            let hash = rest.split(':').next().unwrap_or_default();
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(at(format!("malformed user name {name:?}")));
            }
            let hash = ShaCryptHash::parse(hash).map_err(|e| at(format!("user {name}: {e}")))?;
            if hash.rounds.is_some_and(|r| r > USERS_ROUNDS_MAX) {
                return Err(at(format!(
                    "user {name}: rounds over {USERS_ROUNDS_MAX}: every AUTH attempt, even for an unknown user, would cost that much CPU"
                )));
            }
            if entries.insert(name.to_string(), hash).is_some() {
                return Err(at(format!("duplicate user {name}")));
            }
        }
        // The dummy runs with the costliest parameters in the file.
        let dummy = entries
            .values()
            .max_by_key(|h| (h.rounds.unwrap_or(ROUNDS_DEFAULT), h.variant))
            .cloned()
            .unwrap_or(ShaCryptHash {
                variant: Variant::Sha512,
                rounds: None,
                salt: "smtpboxdummy".into(),
                full: String::new(),
            });
        Ok(Users { entries, dummy })
    }

    /// True only when `user` exists and `password` matches its hash. An
    /// unknown user still costs one hash computation (SPEC §5: comparisons
    /// do not leak timing).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.entries.get(user) {
            Some(hash) => hash.matches(password),
            None => {
                black_box(self.dummy.matches(password));
                false
            }
        }
    }

    /// Number of users in the file.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the file names no user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Users {
    /// Names only: hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

/// A users file that is re-read when it changes (see [`Watched`]), so
/// passwords can be changed without a restart.
#[derive(Debug)]
pub struct UsersFile {
    file: Watched<Users>,
}

impl UsersFile {
    /// Loads the file once; a missing or broken file is an error here.
    pub fn open(path: &Path) -> Result<UsersFile, String> {
        // Every AUTH attempt looks at the file: a removed user is refused
        // from the next attempt on.
        let file = Watched::load("users file", &[path], Duration::ZERO, Users::from_file)?;
        Ok(UsersFile { file })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.file.paths()[0]
    }

    /// The current users, re-read only when the file's metadata changed.
    /// A changed file that does not parse is logged once and the previous
    /// users are kept. A file that cannot be read (removed, replaced by a
    /// directory, unreadable) is an error, whose text names the file (fail
    /// closed: a removed users file must not keep old passwords working);
    /// the session then answers `454 4.7.0` (RFC 4954 §6).
    pub fn current(&self) -> Result<Arc<Users>, String> {
        self.file.current().map_err(|unreadable| unreadable.reason)
    }
}

/// Checks `password` against a crypt(3) string in the `$5$` or `$6$` format;
/// false for any other or malformed string.
pub fn sha_crypt_verify(password: &[u8], hash: &str) -> bool {
    ShaCryptHash::parse(hash).is_ok_and(|h| h.matches(password))
}

/// The client gave up on the exchange, or sent something unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The client sent `*` (RFC 4954 §4): reply `501 5.7.0`.
    Cancelled,
    /// Not valid base64 (RFC 4954 §4): reply `501 5.5.2`.
    BadBase64,
    /// Decoded, but not a well-formed PLAIN message or LOGIN user name:
    /// reply `501 5.5.2`.
    Malformed,
    /// PLAIN asked to act as another identity (RFC 4616 §2); smtpbox grants
    /// no such right: reply `535 5.7.8` and count it as a failure.
    AuthzidMismatch,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Cancelled => "authentication cancelled",
            AuthError::BadBase64 => "invalid base64",
            AuthError::Malformed => "malformed SASL response",
            AuthError::AuthzidMismatch => "authorization identity differs from user",
        })
    }
}

/// A user name and password taken from an AUTH exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    /// Never prints the password (SPEC §9).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &format_args!("<redacted>"))
            .finish()
    }
}

/// Decodes a PLAIN response (RFC 4616 §2: `[authzid] NUL authcid NUL passwd`),
/// given as the AUTH command's initial response (`=` is an empty one, RFC
/// 4954 §4) or as the line answering `334 `, without its CRLF. `*` cancels.
pub fn decode_plain(b64: &[u8]) -> Result<Credentials, AuthError> {
    let message = if b64 == b"=" {
        Vec::new()
    } else {
        decode_response(b64)?
    };
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    // RFC 4616 §2: authcid and passwd are 1*SAFE (non-empty).
    if authcid.is_empty() || password.is_empty() {
        return Err(AuthError::Malformed);
    }
    let user = std::str::from_utf8(authcid).map_err(|_| AuthError::Malformed)?;
    if !authzid.is_empty() && authzid != authcid {
        return Err(AuthError::AuthzidMismatch);
    }
    Ok(Credentials {
        user: user.to_string(),
        password: password.to_vec(),
    })
}

/// Decodes one client line of an AUTH exchange (without its CRLF): `*`
/// cancels (RFC 4954 §4), anything else must be strict base64.
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, AuthError> {
    if line == b"*" {
        return Err(AuthError::Cancelled);
    }
    decode_base64(line).ok_or(AuthError::BadBase64)
}

/// Decodes the LOGIN user-name line: a non-empty UTF-8 name without NUL.
pub fn decode_login_user(line: &[u8]) -> Result<String, AuthError> {
    let name = decode_response(line)?;
    if name.is_empty() || name.contains(&0) {
        return Err(AuthError::Malformed);
    }
    String::from_utf8(name).map_err(|_| AuthError::Malformed)
}

/// Strict base64 (RFC 4648 §4): length a multiple of 4, padding only at the
/// end, no whitespace, unused bits zero (§3.5). Empty input is empty output.
pub fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 4 != 0 {
        return None;
    }
    let groups = s.len() / 4;
    let mut out = Vec::with_capacity(groups * 3);
    for (index, quad) in s.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && index + 1 != groups) {
            return None;
        }
        let mut word = 0u32;
        for &c in &quad[..4 - pad] {
            word = word << 6 | u32::from(base64_value(c)?);
        }
        word <<= 6 * pad;
        let bytes = [(word >> 16) as u8, (word >> 8) as u8, word as u8];
        let keep = 3 - pad;
        if bytes[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let word = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(word >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

// SHA-crypt, after Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512".

const ROUNDS_DEFAULT: u32 = 5000;
const ROUNDS_MIN: u32 = 1000;
const ROUNDS_MAX: u32 = 999_999_999;
/// The most `rounds=` a users file may ask for: about 0.3 s of CPU per
/// attempt on a small box already. Any client that may AUTH can make the
/// server pay it (unknown users pay the costliest hash of the file).
const USERS_ROUNDS_MAX: u32 = 1_000_000;
const SALT_MAX: usize = 16;
/// The crypt alphabet (not RFC 4648's).
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `$5$` (SHA-256) or `$6$` (SHA-512); ordered by cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Sha256,
    Sha512,
}

impl Variant {
    fn id(self) -> char {
        match self {
            Variant::Sha256 => '5',
            Variant::Sha512 => '6',
        }
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            Variant::Sha256 => &digest::SHA256,
            Variant::Sha512 => &digest::SHA512,
        }
    }

    /// Length of the encoded digest: 32 bytes → 43 chars, 64 → 86.
    fn encoded_len(self) -> usize {
        match self {
            Variant::Sha256 => 43,
            Variant::Sha512 => 86,
        }
    }
}

/// A parsed `$5$`/`$6$` crypt string, checked to be one crypt could produce.
#[derive(Clone)]
struct ShaCryptHash {
    variant: Variant,
    /// `Some` when the string says `rounds=N$` (then crypt repeats it).
    rounds: Option<u32>,
    salt: String,
    full: String,
}

impl ShaCryptHash {
    fn parse(hash: &str) -> Result<ShaCryptHash, &'static str> {
        let (variant, rest) = if let Some(rest) = hash.strip_prefix("$6$") {
            (Variant::Sha512, rest)
        } else if let Some(rest) = hash.strip_prefix("$5$") {
            (Variant::Sha256, rest)
        } else {
            return Err("unsupported hash scheme (only $6$ and $5$, e.g. `openssl passwd -6`)");
        };
        let (rounds, rest) = match rest.strip_prefix("rounds=") {
            None => (None, rest),
            Some(r) => {
                let (n, rest) = r
                    .split_once('$')
                    .ok_or("malformed hash: rounds without salt")?;
                let rounds: u32 = n.parse().map_err(|_| "malformed hash: bad rounds")?;
                // Canonical and in range, or crypt would print something else.
                if n != rounds.to_string() || !(ROUNDS_MIN..=ROUNDS_MAX).contains(&rounds) {
                    return Err("malformed hash: rounds must be 1000..=999999999");
                }
                (Some(rounds), rest)
            }
        };
        let (salt, encoded) = rest.split_once('$').ok_or("malformed hash: no salt")?;
        if salt.len() > SALT_MAX {
            return Err("malformed hash: salt longer than 16 characters");
        }
        if encoded.len() != variant.encoded_len() || !encoded.bytes().all(|c| CRYPT64.contains(&c))
        {
            return Err("malformed hash: bad digest");
        }
        Ok(ShaCryptHash {
            variant,
            rounds,
            salt: salt.to_string(),
            full: hash.to_string(),
        })
    }

    /// Recomputes the crypt string and compares it in constant time.
    fn matches(&self, password: &[u8]) -> bool {
        let computed = sha_crypt(password, self.salt.as_bytes(), self.rounds, self.variant);
        constant_time_eq(computed.as_bytes(), self.full.as_bytes())
    }
}

/// The crypt(3) string for `password`: `$6$salt$…` or `$6$rounds=N$salt$…`.
/// The salt is cut to 16 bytes and `rounds` clamped to 1000..=999999999.
fn sha_crypt(password: &[u8], salt: &[u8], rounds: Option<u32>, variant: Variant) -> String {
    let alg = variant.algorithm();
    let salt = &salt[..salt.len().min(SALT_MAX)];
    let count = rounds
        .unwrap_or(ROUNDS_DEFAULT)
        .clamp(ROUNDS_MIN, ROUNDS_MAX);

    // Digest B = H(P S P).
    let b = digest_of(alg, &[password, salt, password]);
    // Digest A = H(P S, B repeated to len(P), then per bit of len(P): B or P).
    let mut ctx = digest::Context::new(alg);
    ctx.update(password);
    ctx.update(salt);
    ctx.update(&repeat_to(b.as_ref(), password.len()));
    let mut bits = password.len();
    while bits > 0 {
        ctx.update(if bits & 1 == 1 { b.as_ref() } else { password });
        bits >>= 1;
    }
    let a = ctx.finish();
    // DP = H(P repeated len(P) times) gives the P sequence.
    let dp = digest_of(alg, &vec![password; password.len()]);
    let p = repeat_to(dp.as_ref(), password.len());
    // DS = H(S repeated 16 + A[0] times) gives the S sequence.
    let ds = digest_of(alg, &vec![salt; 16 + usize::from(a.as_ref()[0])]);
    let s = repeat_to(ds.as_ref(), salt.len());

    let mut c = a;
    for i in 0..count {
        let mut ctx = digest::Context::new(alg);
        ctx.update(if i % 2 == 1 { &p } else { c.as_ref() });
        if i % 3 != 0 {
            ctx.update(&s);
        }
        if i % 7 != 0 {
            ctx.update(&p);
        }
        ctx.update(if i % 2 == 1 { c.as_ref() } else { &p });
        c = ctx.finish();
    }

    let mut out = format!("${}$", variant.id());
    if rounds.is_some() {
        let _ = write!(out, "rounds={count}$");
    }
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    encode_crypt64(variant, c.as_ref(), &mut out);
    out
}

/// Appends the digest in the crypt alphabet, bytes permuted as the spec says.
fn encode_crypt64(variant: Variant, d: &[u8], out: &mut String) {
    #[rustfmt::skip]
    const SHA256_ORDER: [[usize; 3]; 10] = [
        [0, 10, 20], [21, 1, 11], [12, 22, 2], [3, 13, 23], [24, 4, 14],
        [15, 25, 5], [6, 16, 26], [27, 7, 17], [18, 28, 8], [9, 19, 29],
    ];
    #[rustfmt::skip]
    const SHA512_ORDER: [[usize; 3]; 21] = [
        [0, 21, 42], [22, 43, 1], [44, 2, 23], [3, 24, 45], [25, 46, 4],
        [47, 5, 26], [6, 27, 48], [28, 49, 7], [50, 8, 29], [9, 30, 51],
        [31, 52, 10], [53, 11, 32], [12, 33, 54], [34, 55, 13], [56, 14, 35],
        [15, 36, 57], [37, 58, 16], [59, 17, 38], [18, 39, 60], [40, 61, 19],
        [62, 20, 41],
    ];
    let mut push = |b2: u8, b1: u8, b0: u8, n: usize| {
        let mut word = u32::from(b2) << 16 | u32::from(b1) << 8 | u32::from(b0);
        for _ in 0..n {
            out.push(char::from(CRYPT64[(word & 63) as usize]));
            word >>= 6;
        }
    };
    let order: &[[usize; 3]] = match variant {
        Variant::Sha256 => &SHA256_ORDER,
        Variant::Sha512 => &SHA512_ORDER,
    };
    for &[i, j, k] in order {
        push(d[i], d[j], d[k], 4);
    }
    match variant {
        Variant::Sha256 => push(0, d[31], d[30], 3),
        Variant::Sha512 => push(0, 0, d[63], 2),
    }
}

fn digest_of(alg: &'static digest::Algorithm, parts: &[&[u8]]) -> digest::Digest {
    let mut ctx = digest::Context::new(alg);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish()
}

/// `block` repeated and cut to `len` bytes.
fn repeat_to(block: &[u8], len: usize) -> Vec<u8> {
    block.iter().copied().cycle().take(len).collect()
}

/// Equal-length comparison whose time does not depend on where bytes differ.
/// (ring's `constant_time` module is deprecated in 0.17.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | black_box(x ^ y));
    black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use AuthError::{AuthzidMismatch, BadBase64, Cancelled, Malformed};

    const HELLO: &[u8] = b"Hello world!";

    /// (password, crypt string): Drepper's spec vectors, then vectors made on
    /// the build machine with `openssl passwd` and Python 3.11 `crypt` (glibc).
    const VECTORS: &[(&str, &str)] = &[
        ("Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
        ("Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
        ("Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
        ("Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
        ("we have a short salt string but not a short password", "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"),
        ("a very much longer text to encrypt.  This one even stretches over morethan one line.", "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
        ("the minimum number is still observed", "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
        ("the minimum number is still observed", "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."),
        // openssl passwd -5 / -6 -salt abc password
        ("password", "$5$abc$6va2Z4O.keO7R84v9g0B9d2NkB7NOyTy0sMeQ5Z3LLA"),
        ("password", "$6$abc$rvqzMBuMVukmply9mZJpW0wJMdDfgUKLDrSNxf9l66h/ytQiKNAdqHSj5YPJpxWJpVjRXibQXRddCl9xYHQnd0"),
        ("pässwörd", "$6$sixteencharsalt!$gtJyaH5fZ7VTh32/gbaH8BSvVyMbBCjcIYbPy3Kys3t5.eI92tU.k7zRQqL.QDTuftFbjjTq5msT05U7b9IKl1"),
        // python3 crypt.crypt(pw, setting)
        ("pw", "$5$rounds=10000$salt$xo/8y5Vwj53t2PS3K5XzsLCJafQdvMtiS/r/K05XkA1"),
        ("pw", "$6$rounds=10000$salt$Y3Y2ieXzYhQrdXsbayIopyP6hKljxR/2eQIHKeuoBJxGpYWc.c/0WJHsoFBoSUdgiczuUVO4VSM/lpYJm6nXj0"),
        ("pw", "$6$rounds=5000$abc$MtSdWSZbhct2oe.SOqOUM2M/GA/uj5.vyVtJgRHgKi9uqXuWuJqOYE7H/YlsYGVg/YYzDV0xt3fEIwYt580.5."),
        ("pw", "$6$$Z7WSO9A8tKGD2oGB9t2ViKdYTIHgnjMZIbdOJElGnO.QoZE5zDsfnF1WHM.IL2KPxhNG4/v/zU9LBcGhxg5Uy."),
        ("", "$6$empty$MWslJBrCvUsbDfvDkNQwBNtJFEGiZ5CHosSR8Ol/yMiSd9JINPGkSH4OfOOVEIp87YcT49Wr.Qp4a8bJCR6y2/"),
        ("0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789", "$5$blocks$WhsLt56Z51kJ9jrJ8P.ns.nO9nD6KbgBLvR5sh/h5ND"),
        ("0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789", "$6$blocks$F2mgeT.Rz/VWYeWiSskvGAvJY5tkIAMaYcSF91tJr.9dR5l42wJKADrla7U6cC7aL.atlpWWdyrkwx02IOo9.."),
    ];

    #[test]
    fn sha_crypt_matches_known_vectors() {
        for (password, hash) in VECTORS {
            assert!(sha_crypt_verify(password.as_bytes(), hash), "{hash}");
            assert!(!sha_crypt_verify(b"wrong", hash), "{hash}");
        }
    }

    #[test]
    fn users_file_refuses_rounds_a_client_could_abuse() {
        let line = "alice:$6$rounds=1000001$salt$Y3Y2ieXzYhQrdXsbayIopyP6hKljxR/2eQIHKeuoBJxGpYWc.c/0WJHsoFBoSUdgiczuUVO4VSM/lpYJm6nXj0\n";
        let err = Users::parse(line, "users").unwrap_err();
        assert!(
            err.starts_with("users:1: user alice: rounds over 1000000"),
            "{err}"
        );
    }

    #[test]
    fn sha_crypt_truncates_salt_and_clamps_rounds() {
        let long = sha_crypt(HELLO, b"saltstringsaltstring", Some(10000), Variant::Sha256);
        assert_eq!(long, VECTORS[2].1);
        let low = b"the minimum number is still observed";
        let clamped = sha_crypt(low, b"roundstoolow", Some(10), Variant::Sha512);
        assert_eq!(clamped, VECTORS[7].1);
        assert_eq!(
            sha_crypt(HELLO, b"saltstring", None, Variant::Sha512),
            VECTORS[1].1
        );
    }

    #[test]
    fn malformed_or_foreign_hashes_never_verify() {
        for hash in [
            "",
            "password",
            "$1$abc$xyz",
            "$2b$10$abcdefghijklmnopqrstuv",
            "$6$abc",
            "$6$abc$short",
            "$6$rounds=10$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
            "$6$rounds=01000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
            "$5$saltstringsaltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc!",
        ] {
            assert!(!sha_crypt_verify(HELLO, hash), "{hash}");
        }
    }

    #[test]
    fn users_verify_known_and_unknown() {
        let text = format!(
            "# smtpbox users\n\nalice:{}\r\nbob:{}:19000:0:99999:7:::  \n",
            VECTORS[9].1, VECTORS[0].1
        );
        let users = Users::parse(&text, "users").unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify("alice", b"password"));
        assert!(!users.verify("alice", b"Password"));
        assert!(!users.verify("Alice", b"password"));
        assert!(users.verify("bob", HELLO));
        assert!(!users.verify("carol", b"password"));
        assert!(!format!("{users:?}").contains('$'));
        let empty = Users::parse("# nobody\n", "users").unwrap();
        assert!(empty.is_empty() && !empty.verify("alice", b"password"));
    }

    #[test]
    fn users_errors_name_file_and_line() {
        let cases = [
            ("# x\nalice\n", "users.txt:2: malformed line"),
            ("alice:\n", "users.txt:1: user alice: unsupported hash scheme"),
            ("alice:$1$abc$def\n", "users.txt:1: user alice: unsupported"),
            ("\n\nbob:$6$abc$xyz\n", "users.txt:3: user bob: malformed hash"),
            (":$6$abc$xyz\n", "users.txt:1: malformed user name"),
            ("alice:$5$abc$6va2Z4O.keO7R84v9g0B9d2NkB7NOyTy0sMeQ5Z3LLA\nalice:$5$abc$6va2Z4O.keO7R84v9g0B9d2NkB7NOyTy0sMeQ5Z3LLA\n", "users.txt:2: duplicate user alice"),
        ];
        for (text, want) in cases {
            let err = Users::parse(text, "users.txt").unwrap_err();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
        let missing = Users::load(Path::new("/nonexistent/users")).unwrap_err();
        assert!(missing.starts_with("/nonexistent/users: "), "{missing}");
    }

    #[test]
    fn users_file_reloads_and_keeps_old_on_error() {
        let dir = std::env::temp_dir().join(format!("smtpbox-auth-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        fs::write(&path, format!("alice:{}\n", VECTORS[8].1)).unwrap();
        let file = UsersFile::open(&path).unwrap();
        assert!(file.current().unwrap().verify("alice", b"password"));

        // A new file (new inode, as `mv` would make it).
        let next = dir.join("users.new");
        fs::write(&next, format!("bob:{}\n", VECTORS[8].1)).unwrap();
        fs::rename(&next, &path).unwrap();
        let users = file.current().unwrap();
        assert!(users.verify("bob", b"password") && !users.verify("alice", b"password"));

        // Broken in place: the previous users stay.
        fs::write(&path, "bob:plaintext-oops\n").unwrap();
        assert!(file.current().unwrap().verify("bob", b"password"));
        assert!(file.current().unwrap().verify("bob", b"password"));

        // Removed, replaced by a directory, a dangling symlink: fail
        // closed, with an error that names the file.
        fs::remove_file(&path).unwrap();
        let gone = file.current().unwrap_err();
        assert!(
            gone.starts_with(&format!("{}: cannot read: ", path.display())),
            "{gone}"
        );
        fs::create_dir(&path).unwrap();
        let err = file.current().unwrap_err();
        assert!(
            err.ends_with("not a regular file: it is a directory"),
            "{err}"
        );
        assert!(file.current().is_err(), "a directory still");
        fs::remove_dir(&path).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), &path).unwrap();
        assert!(file.current().is_err());
        // Back in place: served again.
        fs::remove_file(&path).unwrap();
        fs::write(&path, format!("carol:{}\n", VECTORS[8].1)).unwrap();
        assert!(file.current().unwrap().verify("carol", b"password"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let text = encode_base64(&bytes);
            assert_eq!(decode_base64(text.as_bytes()), Some(bytes));
        }
        assert_eq!(encode_base64(b"Username:"), LOGIN_USER_PROMPT);
        assert_eq!(encode_base64(b"Password:"), LOGIN_PASS_PROMPT);
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(decode_base64(b"Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(decode_base64(b""), Some(Vec::new()));
    }

    #[test]
    fn base64_rejects_non_canonical_input() {
        let bad = "Zm9 Zm9vY Zm9v==== Zg=a Z=== ==== Zm==Zm9v Zh== Zm9= Zm9v-_== =Zm9 Zm9v\r\n";
        for bad in bad.split(' ').chain(["Zm 9v", "Zm9v\n"]) {
            assert_eq!(decode_base64(bad.as_bytes()), None, "{bad:?}");
        }
    }

    fn plain(message: &[u8]) -> Result<Credentials, AuthError> {
        decode_plain(encode_base64(message).as_bytes())
    }

    #[test]
    fn plain_with_and_without_authzid() {
        let want = Credentials {
            user: "alice".into(),
            password: b"s3cret".to_vec(),
        };
        assert_eq!(plain(b"\0alice\0s3cret"), Ok(want.clone()));
        assert_eq!(plain(b"alice\0alice\0s3cret"), Ok(want));
        assert_eq!(
            decode_plain(b"AGFsaWNlAHMzY3JldA=="),
            plain(b"\0alice\0s3cret")
        );
    }

    #[test]
    fn plain_rejects_bad_messages() {
        assert_eq!(plain(b"bob\0alice\0s3cret"), Err(AuthzidMismatch));
        let bad = "alice\0s3cret|alice|\0alice\0s3\0cret|\0\0s3cret|\0alice\0|";
        for bad in bad.split('|') {
            assert_eq!(plain(bad.as_bytes()), Err(Malformed), "{bad:?}");
        }
        assert_eq!(plain(b"\0\xffalice\0s3cret"), Err(Malformed));
        assert_eq!(decode_plain(b"="), Err(Malformed));
        assert_eq!(decode_plain(b"AGFsaWNlAHMzY3JldA"), Err(BadBase64));
        assert_eq!(decode_plain(b"*"), Err(Cancelled));
    }

    #[test]
    fn responses_and_login_user() {
        assert_eq!(decode_response(b"*"), Err(Cancelled));
        assert_eq!(decode_response(b"**"), Err(BadBase64));
        assert_eq!(decode_response(b""), Ok(Vec::new()));
        assert_eq!(decode_response(b"czNjcmV0"), Ok(b"s3cret".to_vec()));
        assert_eq!(decode_login_user(b"YWxpY2U="), Ok("alice".to_string()));
        assert_eq!(decode_login_user(b""), Err(Malformed));
        assert_eq!(decode_login_user(b"/w=="), Err(Malformed));
        assert_eq!(decode_login_user(b"*"), Err(Cancelled));
    }

    #[test]
    fn credentials_debug_hides_password() {
        let creds = plain(b"\0alice\0hunter2").unwrap();
        let shown = format!("{creds:?} {creds:#?}");
        assert!(shown.contains("alice") && shown.contains("<redacted>"));
        assert!(
            !shown.contains("hunter2") && !shown.contains("104"),
            "{shown}"
        );
    }
}
