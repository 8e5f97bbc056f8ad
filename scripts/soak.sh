#!/usr/bin/env bash
# Soak test for smtpbox (issue #6): runs the release binary on loopback for a
# while under moderate mixed load and fails when memory, fds or threads keep
# growing, or when a message the server acknowledged is not in the Maildir.
# Not part of `cargo test`.
#
# Usage:
#   scripts/soak.sh                        # 10 minutes
#   SOAK_SECONDS=1800 scripts/soak.sh      # 30 minutes
#
# Environment (all optional):
#   SOAK_SECONDS   how long the load runs (600)
#   SOAK_WORKERS   parallel client threads (4)
#   SOAK_INTERVAL  seconds between samples of the server (5)
#   SOAK_DIR       work directory (default: a fresh mktemp -d, removed on
#                  success, kept on failure)
#   SMTPBOX_BIN    the binary (default target/release/smtpbox, built with
#                  `cargo build --release` when missing)
#   SOAK_SEED      seed of the clients' random choices (default: the clock)
#
# Needs python3 (standard library only: smtplib, ssl, socket) and the
# openssl CLI (certificate, users file hash).
#
# The load, from SOAK_WORKERS threads, each picking at random: plain
# smtplib; STARTTLS; AUTH PLAIN/LOGIN (plain loopback and implicit TLS);
# two messages pipelined on a raw socket; BDAT chunks; oversize messages
# (552 at MAIL from SIZE=, and 552 after the data without it); aborted
# sessions (closed mid-DATA, mid-command, or reset). Each message has a
# unique token; every token acknowledged with 250 is logged. A janitor
# checks the files in new/ byte for byte against their token's content and
# deletes them as it goes (so the disk does not fill).
#
# Output in SOAK_DIR: samples.csv (elapsed_s,rss_kb,fds,threads,acked),
# acked.log, server.log. The summary goes to stdout.
#
# Exit status: 0 pass; 1 when the last-third average of RSS, fds or threads
# exceeds the first-third average x 1.5 + slack (RSS 2048 kB, fds and
# threads SOAK_WORKERS + 4), an acknowledged message is missing or
# corrupted, a rejected or aborted message was stored, tmp/ is not empty at
# the end, the idle fd/thread counts grew, a session panicked, or a client
# got a reply it should not have; 2 on a set-up error.

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
: "${SOAK_SECONDS:=600}"
: "${SOAK_WORKERS:=4}"
: "${SOAK_INTERVAL:=5}"
: "${SMTPBOX_BIN:=$repo/target/release/smtpbox}"

if [ ! -x "$SMTPBOX_BIN" ]; then
    (cd "$repo" && cargo build --release) || exit 2
fi
command -v python3 >/dev/null || { echo "soak: python3 missing" >&2; exit 2; }
command -v openssl >/dev/null || { echo "soak: openssl missing" >&2; exit 2; }

made_dir=
if [ -z "${SOAK_DIR:-}" ]; then
    SOAK_DIR=$(mktemp -d /tmp/smtpbox-soak.XXXXXX)
    made_dir=1
fi
mkdir -p "$SOAK_DIR"

openssl req -x509 -nodes -days 30 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -subj /CN=localhost -keyout "$SOAK_DIR/cert.key" -out "$SOAK_DIR/cert.crt" \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null || exit 2
echo "alice:$(openssl passwd -6 secret)" >"$SOAK_DIR/users"

cat >"$SOAK_DIR/smtpbox.conf" <<EOF
listen = 127.0.0.1:0
listen = 127.0.0.1:0/tls
hostname = mx.test
domain = example.com
maildir = $SOAK_DIR/Maildir
tls_cert = $SOAK_DIR/cert.crt
tls_key = $SOAK_DIR/cert.key
users = $SOAK_DIR/users
max_message_size = 262144
max_connections_per_ip = 64
timeout = 30
EOF

status=0
SOAK_DIR=$SOAK_DIR SOAK_SECONDS=$SOAK_SECONDS SOAK_WORKERS=$SOAK_WORKERS \
SOAK_INTERVAL=$SOAK_INTERVAL SMTPBOX_BIN=$SMTPBOX_BIN \
    python3 - <<'PY' || status=$?
import os, random, re, socket, smtplib, ssl, subprocess, sys, threading, time

DIR = os.environ["SOAK_DIR"]
SECONDS = float(os.environ["SOAK_SECONDS"])
WORKERS = int(os.environ["SOAK_WORKERS"])
INTERVAL = float(os.environ["SOAK_INTERVAL"])
BIN = os.environ["SMTPBOX_BIN"]
SEED = int(os.environ.get("SOAK_SEED") or time.time_ns() % 2**32)
MAILDIR = os.path.join(DIR, "Maildir")
MAX_SIZE = 262144
print(f"soak: {SECONDS:.0f} s, {WORKERS} workers, seed {SEED}, dir {DIR}", flush=True)

# --- the server -------------------------------------------------------------
log = open(os.path.join(DIR, "server.log"), "wb")
server = subprocess.Popen([BIN, "-c", os.path.join(DIR, "smtpbox.conf")],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=log, env={**os.environ, "RUST_LOG": "info"})
PID = server.pid

def server_log():
    with open(os.path.join(DIR, "server.log"), "rb") as f:
        return f.read().decode("utf-8", "replace")

ports = {}
deadline = time.time() + 10
while len(ports) < 2 and time.time() < deadline:
    for m in re.finditer(r"listening on 127\.0\.0\.1:(\d+) \((\w+)\)", server_log()):
        ports[m.group(2)] = int(m.group(1))
    time.sleep(0.05)
if len(ports) < 2:
    print("soak: server did not start:\n" + server_log(), file=sys.stderr)
    server.kill()
    sys.exit(2)
PLAIN, TLS = ports["smtp"], ports["tls"]

CTX = ssl.create_default_context(cafile=os.path.join(DIR, "cert.crt"))

# --- messages ---------------------------------------------------------------
def content(token):
    """The content of message `token`; its size and lines follow from it."""
    rnd = random.Random(token)
    size = rnd.choice([300, 1000, 3000, 8000, 30000])
    out = [f"Subject: {token}\r\nX-Token: {token}\r\n\r\n".encode()]
    n, total = 0, 0
    while total < size:
        line = f"{token} line {n} {rnd.getrandbits(64):016x}\r\n".encode()
        out.append(line)
        total += len(line)
        n += 1
    out.append(f"END {token}\r\n".encode())
    return b"".join(out)

acked_lock = threading.Lock()
acked, rejected, aborted = set(), set(), set()
acked_log = open(os.path.join(DIR, "acked.log"), "a")
counts = {}
errors = []

def ack(token, kind):
    with acked_lock:
        acked.add(token)
        acked_log.write(token + "\n")
        acked_log.flush()
        counts[kind] = counts.get(kind, 0) + 1

def note(kind):
    with acked_lock:
        counts[kind] = counts.get(kind, 0) + 1

class Raw:
    """A plain socket client that checks every reply code."""
    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", PLAIN), timeout=60)
        self.f = self.sock.makefile("rb")
        self.expect("220")

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("server closed: " + repr(lines))
            lines.append(line.decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return "".join(lines)

    def expect(self, prefix):
        r = self.reply()
        if not r.startswith(prefix):
            raise AssertionError(f"expected {prefix}, got {r!r}")
        return r

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.f.close()
        self.sock.close()

TX = b"MAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n"

def run_plain(token):
    with smtplib.SMTP("127.0.0.1", PLAIN, timeout=60) as s:
        s.sendmail("a@b.org", ["root@example.com"], content(token))
    ack(token, "plain")

def run_starttls(token):
    with smtplib.SMTP("127.0.0.1", PLAIN, timeout=60) as s:
        s.starttls(context=CTX)
        s.sendmail("a@b.org", ["root@example.com"], content(token))
    ack(token, "starttls")

def run_auth(token):
    if random.random() < 0.5:
        s = smtplib.SMTP("127.0.0.1", PLAIN, timeout=60)
    else:
        s = smtplib.SMTP_SSL("127.0.0.1", TLS, timeout=60, context=CTX)
    with s:
        s.ehlo()
        s.user, s.password = "alice", "secret"
        if random.random() < 0.5:
            s.auth("PLAIN", s.auth_plain)
        else:
            s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        s.sendmail("alice@example.com", ["root@example.com"], content(token))
    ack(token, "auth")

def run_pipelined(token):
    t1, t2 = token + "-1", token + "-2"
    c = Raw()
    c.send(b"EHLO soak\r\n")
    c.expect("250")
    c.send(TX)
    c.expect("250 2.1.0"); c.expect("250 2.1.5"); c.expect("354")
    c.send(content(t1) + b".\r\n" + TX)
    c.expect("250 2.0.0"); ack(t1, "pipelined")
    c.expect("250 2.1.0"); c.expect("250 2.1.5"); c.expect("354")
    c.send(content(t2) + b".\r\nQUIT\r\n")
    c.expect("250 2.0.0"); ack(t2, "pipelined")
    c.expect("221")
    c.close()

def run_bdat(token):
    body = content(token)
    cut = len(body) // 2
    c = Raw()
    c.send(b"EHLO soak\r\n")
    c.expect("250")
    c.send(b"MAIL FROM:<a@b.org> BODY=BINARYMIME\r\nRCPT TO:<root@example.com>\r\n")
    c.expect("250 2.1.0"); c.expect("250 2.1.5")
    c.send(f"BDAT {cut}\r\n".encode() + body[:cut])
    c.expect("250 2.0.0")
    c.send(f"BDAT {len(body) - cut} LAST\r\n".encode() + body[cut:])
    c.expect("250 2.0.0")
    ack(token, "bdat")
    c.send(b"QUIT\r\n")
    c.expect("221")
    c.close()

def run_oversize(token):
    with acked_lock:
        rejected.add(token)
    big = content(token) + b"x" * 80 + b"\r\n"
    big = big + (b"filler " * 11 + b"\r\n") * (MAX_SIZE // 79 + 10)
    if random.random() < 0.5:
        # Declared with SIZE=: refused at MAIL.
        with smtplib.SMTP("127.0.0.1", PLAIN, timeout=60) as s:
            try:
                s.sendmail("a@b.org", ["root@example.com"], big)
                raise AssertionError("oversize message accepted")
            except smtplib.SMTPSenderRefused as e:
                if e.smtp_code != 552:
                    raise
        note("oversize-size")
    else:
        c = Raw()
        c.send(b"EHLO soak\r\n")
        c.expect("250")
        c.send(TX)
        c.expect("250 2.1.0"); c.expect("250 2.1.5"); c.expect("354")
        c.send(big + b".\r\n")
        c.expect("552 5.3.4")
        c.send(b"QUIT\r\n")
        c.expect("221")
        c.close()
        note("oversize-data")

def run_aborted(token):
    with acked_lock:
        aborted.add(token)
    c = Raw()
    how = random.choice(["mid-data", "mid-command", "reset"])
    c.send(b"EHLO soak\r\n")
    c.expect("250")
    if how == "mid-command":
        c.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<root@exa")
    else:
        c.send(TX)
        c.expect("250 2.1.0"); c.expect("250 2.1.5"); c.expect("354")
        body = content(token)
        c.send(body[: len(body) // 2])
        if how == "reset":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    c.close()
    note("aborted-" + how)

KINDS = [(run_plain, 25), (run_starttls, 15), (run_auth, 15), (run_pipelined, 15),
         (run_bdat, 10), (run_oversize, 5), (run_aborted, 15)]

stop = threading.Event()

def worker(n):
    rnd = random.Random(SEED * 100 + n)
    i = 0
    while not stop.is_set():
        run = rnd.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        token = f"soak-w{n}-{i}"
        i += 1
        try:
            run(token)
        except Exception as e:  # a wrong reply, a timeout, a closed socket
            with acked_lock:
                errors.append(f"{token} {run.__name__}: {type(e).__name__}: {e}")
        time.sleep(rnd.uniform(0.02, 0.1))

# --- the janitor: checks new/ byte for byte and empties it -------------------
seen, bad = set(), []

def body_of(data):
    """The message after Return-Path: and the (maybe folded) Received:."""
    rest = data
    for name in (b"Return-Path:", b"Received:"):
        if not rest.startswith(name):
            return None
        while True:
            i = rest.find(b"\r\n")
            if i < 0:
                return None
            rest = rest[i + 2:]
            if not rest.startswith((b" ", b"\t")):
                break
    return rest

def sweep():
    new = os.path.join(MAILDIR, "new")
    try:
        names = os.listdir(new)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(new, name)
        with open(path, "rb") as f:
            data = f.read()
        body = body_of(data)
        m = re.match(rb"Subject: (\S+)\r\n", body or b"")
        token = m.group(1).decode() if m else None
        if token is None or body != content(token):
            bad.append(f"{name}: corrupted or unknown ({len(data)} bytes)")
        elif token in seen:
            bad.append(f"{name}: {token} stored twice")
        else:
            seen.add(token)
        os.unlink(path)

def janitor():
    while not stop.wait(10):
        sweep()

# --- samples ----------------------------------------------------------------
def sample():
    rss = threads = 0
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{PID}/fd")), threads

def sessions():
    """Session threads (named `session`) of the server."""
    n = 0
    for task in os.listdir(f"/proc/{PID}/task"):
        try:
            with open(f"/proc/{PID}/task/{task}/comm") as f:
                n += f.read().strip() == "session"
        except FileNotFoundError:
            pass
    return n

def idle_counts():
    """fds and threads once every session has ended (waits up to 10 s)."""
    end = time.time() + 10
    while sessions() > 0 and time.time() < end:
        time.sleep(0.1)
    _, fds, threads = sample()
    return fds, threads

idle_before = idle_counts()
threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
threads.append(threading.Thread(target=janitor))
start = time.time()
for t in threads:
    t.start()
samples = []
csv = open(os.path.join(DIR, "samples.csv"), "w")
csv.write("elapsed_s,rss_kb,fds,threads,acked\n")
while time.time() - start < SECONDS:
    time.sleep(min(INTERVAL, max(0.0, SECONDS - (time.time() - start))))
    if server.poll() is not None:
        errors.append(f"server exited with {server.returncode}")
        break
    s = sample()
    samples.append(s)
    csv.write(f"{time.time() - start:.1f},{s[0]},{s[1]},{s[2]},{len(acked)}\n")
    csv.flush()
stop.set()
for t in threads:
    t.join()
elapsed = time.time() - start
alive = server.poll() is None
idle_after = idle_counts() if alive else (0, 0)
time.sleep(0.5)
sweep()
tmp_left = len(os.listdir(os.path.join(MAILDIR, "tmp"))) if os.path.isdir(MAILDIR) else 0
server.kill()
server.wait()

# --- verdict ----------------------------------------------------------------
failures = []
if not alive:
    failures.append("the server died")
third = max(1, len(samples) // 3)
names = ["rss_kb", "fds", "threads"]
slack = [2048, WORKERS + 4, WORKERS + 4]
print(f"{len(samples)} samples over {elapsed:.0f} s")
for i, name in enumerate(names):
    values = [s[i] for s in samples] or [0]
    first = sum(values[:third]) / len(values[:third])
    last = sum(values[-third:]) / len(values[-third:])
    verdict = "ok"
    if last > first * 1.5 + slack[i]:
        verdict = "GROWING"
        failures.append(f"{name} keeps growing: {first:.0f} -> {last:.0f}")
    print(f"  {name:8} min {min(values)} max {max(values)} "
          f"first-third avg {first:.1f} last-third avg {last:.1f}  {verdict}")
print(f"  idle fds/threads before {idle_before}, after {idle_after}")
if alive and (idle_after[0] > idle_before[0] or idle_after[1] > idle_before[1]):
    failures.append(f"idle fds/threads grew: {idle_before} -> {idle_after}")
total = sum(counts.values())
print(f"outcomes by kind ({total}, {total / max(elapsed, 1):.1f}/s):")
for kind in sorted(counts):
    print(f"  {kind:16} {counts[kind]}")
missing = sorted(acked - seen)
print(f"acknowledged {len(acked)}, verified in new/ {len(seen)}, missing {len(missing)}")
if missing:
    failures.append(f"{len(missing)} acknowledged messages missing, e.g. {missing[:5]}")
wrongly = sorted(seen & (rejected | aborted))
if wrongly:
    failures.append(f"rejected or aborted messages stored: {wrongly[:5]}")
if bad:
    failures.append(f"{len(bad)} bad files in new/: {bad[:5]}")
if tmp_left:
    failures.append(f"{tmp_left} files left in tmp/")
if errors:
    failures.append(f"{len(errors)} client errors, e.g. {errors[:5]}")
if "panicked" in server_log():
    failures.append("a session panicked (see server.log)")
if failures:
    print("FAIL")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("PASS")
PY

if [ "$status" -eq 0 ] && [ -n "$made_dir" ]; then
    rm -rf "$SOAK_DIR"
else
    echo "soak: files kept in $SOAK_DIR"
fi
exit "$status"
