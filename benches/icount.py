#!/usr/bin/env python3
"""Instructions per request of otpd under callgrind (BENCHMARKS.md, History: "Per-request CPU"):
N sends, then N verifies of their codes, each phase between `callgrind_control -z` and
`-d`, against a mock Twilio in this process. Instruction counts do not depend on what
else the machine runs, so two builds can be compared on a busy one.
Usage: icount.py OTPD_BIN [N] [CONNS]"""
import argparse, http.client, http.server, json, os, re, socket, subprocess, sys, tempfile, threading, time, glob
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

args = argparse.ArgumentParser()
args.add_argument("bin")
args.add_argument("n", nargs="?", type=int, default=2000)
args.add_argument("conns", nargs="?", type=int, default=16)
args = args.parse_args()
BIN, N, CONNS = os.path.abspath(args.bin), args.n, args.conns
SID = "AC0123456789abcdef0123456789abcdef"
codes = {}
lock = threading.Lock()
counter = [0]


class Mock(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        form = urllib.parse.parse_qs(body)
        to, text = form["To"][0], form["Body"][0]
        code = re.search(r"\d{4,}", text).group(0)
        with lock:
            codes[to] = code
            counter[0] += 1
            n = counter[0]
        out = json.dumps({"sid": "SM%032x" % n, "status": "queued", "to": to,
                          "from": "+15005550006", "account_sid": SID, "num_segments": "1",
                          "direction": "outbound-api"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


mock = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mock)
threading.Thread(target=mock.serve_forever, daemon=True).start()
port = mock.server_address[1]

d = tempfile.mkdtemp(prefix="icount-")
open(f"{d}/config.toml", "w").write(f"""[server]
socket_path = "{d}/otpd.sock"
max_connections = 1024
log_level = "info"

[store]
path = "{d}/otpd.db"

[otp]
ttl = "1h"

[limits]
send_per_phone = "1000000/1s"
send_per_user = "1000000/1s"
verify_per_phone = "1000000/1s"
send_global = "1000000/1s"

[twilio]
account_sid = "{SID}"
auth_token = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
from_number = "+15005550006"
api_base = "http://127.0.0.1:{port}"
timeout = "10s"
""")
env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO", "OTPD", "RUST_LOG", "LISTEN", "NOTIFY", "JOURNAL"))}


class UConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=600)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def start(name, argv, cwd):
    """otpd under callgrind, answering /healthz; its dumps are {d}/{name}.cg.*"""
    log = open(f"{d}/{name}.log", "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/{name}.cg",
                          BIN, "serve", *argv], cwd=cwd, env=env, stdout=log, stderr=log)
    sock = os.path.join(cwd, "otpd.sock")
    for _ in range(600):
        try:
            c = UConn(sock); c.request("GET", "/healthz"); c.getresponse().read(); return p, sock
        except Exception:
            time.sleep(0.2)
    sys.exit("otpd did not start: " + open(f"{d}/{name}.log").read()[-2000:])


def ctl(p, flag):
    subprocess.run(["callgrind_control", flag, str(p.pid)], check=True, capture_output=True)


def last_dump(name):
    time.sleep(0.5)
    return open(sorted(glob.glob(f"{d}/{name}.cg.*"), key=os.path.getmtime)[-1]).read()


proc, sock = start("otpd", ["--config", f"{d}/config.toml"], d)

local = threading.local()


def post(path, body, want):
    c = getattr(local, "c", None)
    if c is None:
        c = local.c = UConn(sock)
    c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    if r.status != 200 or want not in data:
        raise SystemExit(f"{path}: {r.status} {data[:200]}")


def phone(i):
    return "+346%08d" % i


def send(i):
    p = phone(i)
    post("/api/v1/messaging/send-otp/", {"phone_number": p, "purpose": "login", "user_id": p[-8:]}, b"otp_id")


def verify(i):
    p = phone(i)
    post("/api/v1/messaging/verify-otp/", {"phone_number": p, "purpose": "login", "user_id": p[-8:],
                                            "otp_code": codes[p]}, b'"verified":true')


def phase(fn, lo, hi):
    with ThreadPoolExecutor(CONNS) as ex:
        list(ex.map(fn, range(lo, hi)))


def total(dump):
    return int(re.search(r"^(?:summary|totals): (\d+)", dump, re.M).group(1))


W = 300
phase(send, 1, W + 1); phase(verify, 1, W + 1)  # warm-up
res = {}
for name, fn, base in (("send", send, 10_000), ("verify", verify, 10_000)):
    time.sleep(0.5)
    ctl(proc, "-z")
    t = time.time()
    phase(fn, base, base + N)
    ctl(proc, "-d")
    dump = last_dump("otpd")
    res[name] = total(dump) / N
    print(f"{name}: {res[name]:,.0f} instructions/request ({N} requests, {time.time()-t:.1f}s)", flush=True)
proc.terminate(); proc.wait()
print(json.dumps(res))

