"""A cartflow HTTP provider in Python's standard library, for tests/http_providers.rs.

Usage: provider_service.py SECRET. Listens on a free loopback port and prints
"listening on PORT". It checks every request's signature and answers:

  /inventory  Failed for a line of SKU STOVE-X, else Passed
  /tax        Updated: 10 % tax on every product line, named "Python tax"
  /slow       after 5 seconds, Passed
  /broken     HTTP 500
  /garbage    HTTP 200 with a body that is not JSON
A request whose signature does not match answers 401.
"""

import hashlib
import hmac
import json
import sys
import time
from decimal import Decimal, ROUND_HALF_UP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = sys.argv[1].encode()
RATE = Decimal("0.10")


def signed(timestamp, body, signature):
    expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + expected, signature)


def inventory(request):
    short = [line for line in request["items"] if line.get("Sku") == "STOVE-X"]
    if not short:
        return {"verdict": "Passed"}
    return {
        "verdict": "Failed",
        "messages": [
            {"message": "Python has no " + line["Sku"], "relatedEntityId": line["Id"]}
            for line in short
        ],
    }


def tax(request):
    items = []
    for line in request["items"]:
        if line.get("Type") != "Product":
            continue
        total = Decimal(line["TotalPrice"]) + Decimal(line.get("AdjustmentAmount") or "0")
        amount = (total * RATE).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        items.append(
            {
                "itemId": line["Id"],
                "taxAmount": str(amount),
                "taxRate": str(RATE),
                "taxName": "Python tax",
            }
        )
    return {"verdict": "Updated", "items": items}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        timestamp = self.headers.get("X-Cartflow-Timestamp", "")
        signature = self.headers.get("X-Cartflow-Signature", "")
        if not signed(timestamp, body, signature):
            return self.answer(401, b'{"error": "bad signature"}')
        request = json.loads(body)
        if self.path == "/inventory":
            return self.answer(200, json.dumps(inventory(request)).encode())
        if self.path == "/tax":
            return self.answer(200, json.dumps(tax(request)).encode())
        if self.path == "/slow":
            time.sleep(5)
            return self.answer(200, b'{"verdict": "Passed"}')
        if self.path == "/broken":
            return self.answer(500, b"{}")
        if self.path == "/garbage":
            return self.answer(200, b"this is not json")
        return self.answer(404, b"{}")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening on", server.server_address[1], flush=True)
server.serve_forever()
