# bot-bottle demo: the stand-in for every outside host the demo agent calls.
# HTTPS on 443 with a certificate from the run's own CA; it says what it received,
# and whether the Authorization header carried the real credential (no character of
# either ever leaves this server: it says yes or no, and a length).
import hmac
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIR = sys.argv[1]
with open(f"{DIR}/credential") as f:
    REAL = f.read().strip()


class Handler(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        sent = self.headers.get("authorization", "")
        token = sent[len("Bearer "):] if sent.startswith("Bearer ") else sent
        if not token:
            credential = "none"
        elif hmac.compare_digest(token, REAL):
            credential = "the real one"
        else:
            credential = f"NOT the real one ({len(token)} characters)"
        body = json.dumps(
            {
                "upstream": self.headers.get("host", "?"),
                "saw": f"{self.command} {self.path}",
                "credential": credential,
            }
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("0.0.0.0", 443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(f"{DIR}/server.crt", f"{DIR}/server.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
