"""The web server: Daphne, with a cap on request bodies applied while they arrive.

Daphne receives a whole request body before the application sees the
request, then queues all of it for the application at once; an upload of
hundreds of megabytes, which needs no login, would sit in the server's memory
whatever the application answers. Here a body over OMOI_MAX_REQUEST_BYTES is
refused from its declared length, or as soon as a chunked one passes it: 413,
and the connection is closed, so the rest is never read.

    python -m omoi_site.server --bind 127.0.0.1 --port 8000 omoi_site.asgi:application

takes every option of the `daphne` command. In production a reverse proxy
applies the same limits first (deploy/nginx.conf).
"""

import json
import sys

from daphne import server as daphne_server
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest


def body_limit():
    # Read when a request arrives: by then the application, and so Django's settings, are loaded.
    from django.conf import settings

    return settings.OMOI_MAX_REQUEST_BYTES


class CappedRequest(WebRequest):
    """A request whose body may not pass the limit; twisted calls these hooks as the body arrives."""

    refused = False
    received = 0

    def gotLength(self, length):
        super().gotLength(0 if length is not None and length > body_limit() else length)
        if length is not None and length > body_limit():
            self.refuse(f"The request body is {length} bytes; the limit is {body_limit()} bytes.")

    def handleContentChunk(self, data):
        if self.refused:
            return
        self.received += len(data)
        if self.received > body_limit():
            self.refuse(f"The request body is over the limit of {body_limit()} bytes.")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self.refused:
            super().requestReceived(command, path, version)

    def refuse(self, message):
        self.refused = True
        # A client waiting for "100 Continue" gets the refusal instead, and never sends the body.
        self.requestHeaders.removeHeader(b"expect")
        body = json.dumps({"detail": message}).encode()
        head = (
            b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)
        )
        self.channel.transport.write(head + body)
        self.channel.transport.loseConnection()


class CappedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = CappedRequest
        return protocol


def main(argv=None):
    # Daphne's Server builds its HTTP factory inside run(), from its module's name for it.
    daphne_server.HTTPFactory = CappedHTTPFactory
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
