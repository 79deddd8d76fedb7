#!/usr/bin/python3
"""A small HTTP/1.1 object server for npyfs's unit tests, for what nginx and
s3rver do not do: injected faults, servers that break the Range rules,
If-Match ignored, captured requests, and SigV4 signatures checked against
botocore's own computation.

    testserver.py --root DIR [--port P] [--sigv4 AK:SECRET:REGION] [--token T]

Serves DIR/NAME at /NAME (the path is percent-decoded; with --sigv4 the first
component is the bucket, DIR/BUCKET/KEY, and GET /BUCKET?list-type=2 lists
keys like ListObjectsV2). Prints "PORT n" once listening, then reads one
command a line on stdin and answers one line on stdout:

    fault KIND [ARG] [COUNT]  queue COUNT (default 1) faults, each spoiling the
                              next request: status CODE | retry-after CODE |
                              cut BYTES | reset - | stall SECONDS
    mode NAME 0|1             norange (200 + whole body), badrange (Content-
                              Range shifted by one), long (206 chunked with
                              extra bytes), ifmatch (honour If-Match, default 1),
                              noetag (send no ETag)
    delay MS                  sleep before every reply (shows overlap)
    stats                     JSON: requests, max_concurrent, log of
                              [method, path, range, if-match] per request
    clear                     forget stats
    last                      JSON of the last request: method, path, headers,
                              and for --sigv4 the Authorization expected
    quit

ETag (MD5, as S3's for simple uploads) and Last-Modified come from the file at
each request, so a test replaces an object by rewriting the file.
"""
import argparse
import base64
import email.utils
import hashlib
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

LOCK = threading.Lock()
STATE = {
    "faults": [],
    "modes": {"norange": 0, "badrange": 0, "long": 0, "ifmatch": 1, "noetag": 0},
    "delay": 0.0,
    "requests": 0,
    "inflight": 0,
    "max_concurrent": 0,
    "log": [],
    "last": None,
}
ARGS = None


def s3_quote(s, keep_slash):
    """URI-encode the way S3 canonicalizes: only A-Za-z0-9-_.~ raw (and /)."""
    return urllib.parse.quote(s, safe="-_.~/" if keep_slash else "-_.~")


def expected_authorization(method, path, query, headers, auth_header):
    """The Authorization botocore computes for this request, as real S3 would
    check it: path and query decoded and encoded again canonically, only the
    headers the client listed in SignedHeaders."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    ak, sk, region = ARGS.sigv4.split(":", 2)
    try:
        signed = auth_header.split("SignedHeaders=", 1)[1].split(",", 1)[0].strip()
    except IndexError:
        return None
    names = signed.split(";")
    hdrs = {}
    for n in names:
        vals = headers.get_all(n) or []
        hdrs[n] = ",".join(vals)
    canon_path = s3_quote(urllib.parse.unquote(path), True)
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    canon_query = "&".join(
        sorted(f"{s3_quote(k, False)}={s3_quote(v, False)}" for k, v in pairs))
    url = f"http://{headers.get('host', '')}{canon_path}"
    if canon_query:
        url += "?" + canon_query
    req = AWSRequest(method=method, url=url, headers=hdrs)
    req.context["timestamp"] = headers.get("x-amz-date", "")
    auth = S3SigV4Auth(Credentials(ak, sk, ARGS.token), "s3", region)
    cr = auth.canonical_request(req)
    sts = auth.string_to_sign(req, cr)
    sig = auth.signature(sts, req)
    return (f"AWS4-HMAC-SHA256 Credential={ak}/{auth.credential_scope(req)}, "
            f"SignedHeaders={signed}, Signature={sig}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- helpers --
    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def s3_error(self, code, s3code, msg=""):
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{s3code}</Code>'
                f"<Message>{msg}</Message></Error>").encode()
        self.reply(code, body, [("Content-Type", "application/xml")])

    def reset(self):
        # A status line first: libcurl silently resends a request whose
        # reused connection closed before any byte of a reply, so a reset
        # with nothing sent would not reach the client's own retry logic.
        self.wfile.write(b"HTTP/1.1 206 Partial Content\r\n")
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # linger 0: an RST, not a FIN
        self.close_connection = True

    def do_GET(self):
        self.handle_any()

    def do_HEAD(self):
        self.handle_any()

    def handle_any(self):
        with LOCK:
            STATE["requests"] += 1
            STATE["inflight"] += 1
            STATE["max_concurrent"] = max(STATE["max_concurrent"], STATE["inflight"])
            fault = STATE["faults"].pop(0) if STATE["faults"] else None
            modes = dict(STATE["modes"])
            delay = STATE["delay"]
            STATE["log"].append([self.command, self.path, self.headers.get("Range", ""),
                                 self.headers.get("If-Match", "")])
        try:
            if delay:
                time.sleep(delay)
            self.serve(fault, modes)
        finally:
            with LOCK:
                STATE["inflight"] -= 1

    def serve(self, fault, modes):
        raw_path, _, query = self.path.partition("?")
        last = {"method": self.command, "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()]}
        if ARGS.sigv4:
            got = self.headers.get("Authorization", "")
            want = expected_authorization(self.command, raw_path, query, self.headers, got)
            last["authorization"] = got
            last["expected"] = want
        with LOCK:
            STATE["last"] = last
        if fault:
            kind, arg = fault
            if kind == "status":
                return self.s3_error(int(arg), "SlowDown" if int(arg) == 503 else "Fault")
            if kind == "retry-after":
                return self.reply(int(arg), b"slow down", [("Retry-After", "0")])
            if kind == "reset":
                return self.reset()
            if kind == "stall":
                time.sleep(float(arg))
        if ARGS.sigv4:
            if "x-amz-content-sha256" not in self.headers:
                return self.s3_error(400, "InvalidRequest", "x-amz-content-sha256 missing")
            if ARGS.token and self.headers.get("x-amz-security-token") != ARGS.token:
                return self.s3_error(403, "InvalidToken")
            if last["expected"] is None or last["authorization"] != last["expected"]:
                return self.s3_error(403, "SignatureDoesNotMatch")
        parts = raw_path.lstrip("/").split("/", 1)
        if ARGS.sigv4 and (len(parts) == 1 or parts[1] == "") and "list-type=2" in query:
            return self.list_objects(urllib.parse.unquote(parts[0]), query)
        name = urllib.parse.unquote(raw_path.lstrip("/"))
        path = os.path.join(ARGS.root, name)
        if ".." in name.split("/") or not os.path.isfile(path):
            return self.s3_error(404, "NoSuchKey")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        hdrs = [("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))]
        if not modes["noetag"]:
            hdrs.append(("ETag", etag))
        im = self.headers.get("If-Match")
        if im and modes["ifmatch"] and im != etag and im != "*":
            return self.reply(412, b"", hdrs)
        rng = self.headers.get("Range")
        if self.command == "HEAD" or not rng or modes["norange"]:
            return self.send_body(200, data, hdrs, fault)
        a, b = self.parse_range(rng, len(data))
        if a is None:
            return self.reply(416, b"", hdrs + [("Content-Range", f"bytes */{len(data)}")])
        shift = 1 if modes["badrange"] else 0
        hdrs.append(("Content-Range", f"bytes {a + shift}-{b + shift}/{len(data)}"))
        if modes["long"]:
            return self.send_chunked(206, data[a:b + 1] + b"X" * 4096, hdrs)
        return self.send_body(206, data[a:b + 1], hdrs, fault)

    @staticmethod
    def parse_range(rng, size):
        spec = rng.split("=", 1)[1]
        first, _, last = spec.partition("-")
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if size and n else (None, None)
        a = int(first)
        b = min(int(last), size - 1) if last else size - 1
        return (a, b) if a < size else (None, None)

    def send_body(self, code, body, hdrs, fault):
        if fault and fault[0] == "cut":
            n = int(fault[1])
            self.send_response(code)
            for k, v in hdrs:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.close_connection = True
            return
        self.reply(code, body, hdrs)

    def send_chunked(self, code, body, hdrs):
        self.send_response(code)
        for k, v in hdrs:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 8192):
            c = body[i:i + 8192]
            self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def list_objects(self, bucket, query):
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        base = os.path.join(ARGS.root, bucket)
        if not os.path.isdir(base):
            return self.s3_error(404, "NoSuchBucket")
        keys = []
        for dp, _, fns in os.walk(base):
            for fn in fns:
                keys.append(os.path.relpath(os.path.join(dp, fn), base))
        prefix = q.get("prefix", "")
        keys = sorted(k for k in keys if k.startswith(prefix))
        after = ""
        if "continuation-token" in q:
            # the token holds characters a query must encode: + / = and a space
            after = base64.b64decode(q["continuation-token"].split(" ", 1)[1]).decode()
            keys = [k for k in keys if k > after]
        maxk = int(q.get("max-keys", "1000"))
        page, more = keys[:maxk], len(keys) > maxk
        out = ['<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>',
               f"<Name>{bucket}</Name><KeyCount>{len(page)}</KeyCount>",
               f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"]
        if more:
            tok = "a+b/c=d " + base64.b64encode(page[-1].encode()).decode()
            out.append(f"<NextContinuationToken>{tok}</NextContinuationToken>")
        for k in page:
            with open(os.path.join(base, k), "rb") as f:
                data = f.read()
            esc = k.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            out.append(f"<Contents><Key>{esc}</Key><Size>{len(data)}</Size>"
                       f"<ETag>&quot;{hashlib.md5(data).hexdigest()}&quot;</ETag>"
                       "<LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>")
        out.append("</ListBucketResult>")
        self.reply(200, "".join(out).encode(), [("Content-Type", "application/xml")])


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128  # the default 5 stalls parallel connects

    def handle_error(self, request, client_address):
        # Clients hang up on purpose (a reply refused after its headers).
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def control():
    out = sys.stdout
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        reply = "ok"
        with LOCK:
            if w[0] == "fault":
                count = int(w[3]) if len(w) > 3 else 1
                STATE["faults"].extend([(w[1], w[2] if len(w) > 2 else "")] * count)
            elif w[0] == "mode":
                STATE["modes"][w[1]] = int(w[2])
            elif w[0] == "delay":
                STATE["delay"] = int(w[1]) / 1000.0
            elif w[0] == "stats":
                reply = json.dumps({"requests": STATE["requests"],
                                    "max_concurrent": STATE["max_concurrent"],
                                    "log": STATE["log"]})
            elif w[0] == "clear":
                STATE.update(requests=0, max_concurrent=0, log=[], faults=[])
            elif w[0] == "last":
                reply = json.dumps(STATE["last"])
            elif w[0] == "quit":
                break
            else:
                reply = "error"
        out.write(reply + "\n")
        out.flush()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--sigv4")
    p.add_argument("--token")
    ARGS = p.parse_args()
    if ARGS.sigv4:
        import botocore.auth  # noqa: F401  (fail now, not at the first request)
    srv = Server(("127.0.0.1", ARGS.port), Handler)
    sys.stdout.write(f"PORT {srv.server_address[1]}\n")
    sys.stdout.flush()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    control()
    srv.shutdown()


if __name__ == "__main__":
    main()
