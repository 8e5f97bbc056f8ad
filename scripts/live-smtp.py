#!/usr/bin/env python3
"""SMTP client for scripts/live-systemd.sh, run inside the container.

  live-smtp.py send PORT TAG [--tls] [--auth USER:PASS] [--to RCPT]
  live-smtp.py parallel PORT N TAG     hold N sessions open at once, then
                                       deliver on each one that was greeted
  live-smtp.py middata PORT READYFILE  stop in the middle of DATA and wait
                                       for the server to go away

Every socket operation has a timeout; the exit status says whether it
worked, the last line of output says what happened.
"""
import smtplib
import socket
import ssl
import sys
import threading
import time

TIMEOUT = 20


def message(tag):
    return (
        "From: live@test\r\nTo: root\r\nSubject: {0}\r\n"
        "Message-ID: <{0}@live.test>\r\n\r\nlive-systemd {0}\r\n".format(tag)
    )


def send(port, tag, tls=False, auth=None, to="root"):
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
        s.ehlo("live.test")
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)
            s.ehlo("live.test")
            print("tls:", s.sock.version(), s.sock.cipher()[0])
        if auth:
            user, password = auth.split(":", 1)
            s.login(user, password)
            print("auth: ok")
        refused = s.sendmail("live@test", [to], message(tag))
        if refused:
            print("refused:", refused)
            return 1
    print("sent", tag)
    return 0


def greeting(sock):
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1").strip()


def parallel(port, n, tag):
    socks, greeted, refused = [], [], []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        socks.append(s)
    for i, s in enumerate(socks):
        try:
            g = greeting(s)
        except OSError as e:
            g = "error " + str(e)
        if g.startswith("220 "):
            greeted.append((i, s))
        elif g.startswith("421 4.3.2"):
            refused.append(i)
        else:
            print("unexpected greeting:", repr(g))
            return 1
    print("greeted", len(greeted), "refused with 421 4.3.2:", len(refused))
    done = []

    def deliver(i, s):
        f = s.makefile("rb")
        def cmd(line, want):
            s.sendall(line.encode() + b"\r\n")
            while True:
                r = f.readline().decode("latin-1")
                if r[3:4] != "-":
                    break
            if not r.startswith(want):
                raise RuntimeError("{!r} -> {!r}".format(line, r))
        cmd("EHLO live.test", "250")
        cmd("MAIL FROM:<live@test>", "250")
        cmd("RCPT TO:<root>", "250")
        cmd("DATA", "354")
        body = message("{}-{}".format(tag, i)).replace("\r\n.", "\r\n..")
        cmd(body + ".", "250")
        cmd("QUIT", "221")
        done.append(i)

    threads = [threading.Thread(target=deliver, args=gs) for gs in greeted]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for s in socks:
        s.close()
    print("delivered", len(done), "of", len(greeted))
    return 0 if len(done) == len(greeted) else 1


def middata(port, readyfile):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    f = s.makefile("rb")
    def line():
        while True:
            r = f.readline().decode("latin-1")
            if r[3:4] != "-":
                return r
    line()
    for cmd in ["EHLO live.test", "MAIL FROM:<live@test>", "RCPT TO:<root>", "DATA"]:
        s.sendall(cmd.encode() + b"\r\n")
        r = line()
        if not r[:1] in "23":
            print("unexpected:", cmd, r)
            return 1
    s.sendall(b"Subject: cut off\r\n\r\nthe first half of a message\r\n")
    open(readyfile, "w").write("ready\n")
    end = time.time() + TIMEOUT
    while time.time() < end:
        try:
            if s.recv(512) == b"":
                print("server closed the connection mid-DATA")
                return 0
        except socket.timeout:
            pass
        except OSError as e:
            print("connection ended mid-DATA:", e)
            return 0
    print("server still there after", TIMEOUT, "s")
    return 1


def main(argv):
    op = argv[1]
    if op == "send":
        port, tag, rest = int(argv[2]), argv[3], argv[4:]
        opts = {"tls": "--tls" in rest}
        if "--auth" in rest:
            opts["auth"] = rest[rest.index("--auth") + 1]
        if "--to" in rest:
            opts["to"] = rest[rest.index("--to") + 1]
        return send(port, tag, **opts)
    if op == "parallel":
        return parallel(int(argv[2]), int(argv[3]), argv[4])
    if op == "middata":
        return middata(int(argv[2]), argv[3])
    print("unknown operation", op)
    return 64


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # One line saying what failed, for the FAIL line.
        print("error:", type(e).__name__, e)
        sys.exit(1)
