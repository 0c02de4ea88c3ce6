"""An OTLP/HTTP endpoint in a process of its own, for benchmarks/export.py: it decodes each
request with opentelemetry-proto, counts the LogRecords, and writes the running total to
the file named on its command line (rewritten after each request); its port on stdout.
"""

from __future__ import annotations

import gzip
import http.server
import os
import sys

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

TOTAL = [0]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = logs_service_pb2.ExportLogsServiceRequest()
        request.ParseFromString(gzip.decompress(body))
        TOTAL[0] += sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        tmp = sys.argv[1] + ".tmp"
        with open(tmp, "w") as stream:
            stream.write(str(TOTAL[0]))
        os.replace(tmp, sys.argv[1])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - its name
        """Quiet."""


if __name__ == "__main__":
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
