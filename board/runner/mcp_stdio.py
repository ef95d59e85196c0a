"""The stdio bridge to Omoi's MCP endpoint, for agent CLIs that start their MCP servers as commands.

    OMOI_URL=http://127.0.0.1:8000 OMOI_TOKEN=omoi_... python -m board.runner.mcp_stdio
    (or: manage.py mcp_stdio)

It reads JSON-RPC messages from standard input, one a line, posts each to
$OMOI_URL/mcp with the agent's token, and writes each answer to standard
output, one a line. It keeps no state of the protocol beyond the version the
handshake agreed: the server is stateless, and the headers streamable HTTP
wants (MCP-Protocol-Version, Mcp-Method, Mcp-Name) are read from each message.
Standard library only, like the rest of the runner: no Django on the agent's
machine. What it has to say itself goes to standard error.
"""

import argparse
import base64
import json
import os
import sys

from .client import CONNECTION_ERRORS, KeepAliveTransport

MCP_PATH = "/mcp"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
# JSON-RPC's "internal error": the bridge could not get an answer from the server.
INTERNAL_ERROR = -32603


def header_value(value):
    """An MCP header's value: as it is when it is plain printable ASCII, else in the transport's Base64 form."""
    plain = all("\x21" <= char <= "\x7e" or char in " \t" for char in value)
    if plain and value == value.strip(" \t") and not value.startswith("=?base64?"):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


class Bridge:
    """Forwards one message at a time to `url` + /mcp as the holder of `token`."""

    def __init__(self, url, token, *, transport=None):
        self.endpoint = url.rstrip("/") + MCP_PATH
        self.token = token
        self.transport = transport or KeepAliveTransport(timeout=300)
        self.version = None  # the version an initialize handshake agreed, sent on every later request

    def headers(self, message):
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if not isinstance(message, dict):
            return headers
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        version = meta.get(META_VERSION) or self.version
        if isinstance(version, str):
            headers["MCP-Protocol-Version"] = header_value(version)
        if isinstance(message.get("method"), str):
            headers["Mcp-Method"] = header_value(message["method"])
            if message["method"] == "tools/call" and isinstance(params.get("name"), str):
                headers["Mcp-Name"] = header_value(params["name"])
        return headers

    def forward(self, line):
        """The answer to one line of input, as a line of output; None when there is nothing to answer."""
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        request_id = message.get("id") if isinstance(message, dict) else None
        try:
            status, body = self.transport("POST", self.endpoint, self.headers(message), line.encode())
        except CONNECTION_ERRORS as error:
            return self._error(request_id, f"Could not reach Omoi at {self.endpoint}: {error}")
        if status == 202 or not body.strip():
            return None
        try:
            answer = json.loads(body)
        except ValueError:
            return self._error(request_id, f"Omoi answered {status} without JSON.")
        if isinstance(answer, dict) and answer.get("jsonrpc") == "2.0":
            if request_id is None and "error" in answer:
                # A notification gets no answer, not even an error: say it where a person may read it.
                return self._error(None, f"Omoi refused a notification: {answer['error'].get('message')}")
            if answer.get("id") is None and request_id is not None:
                answer["id"] = request_id  # refused before the server read the message: it is the answer to this one
            self._remember_version(message, answer)
            return json.dumps(answer, ensure_ascii=False)
        return self._error(request_id, f"Omoi answered {status}: {json.dumps(answer)[:500]}")

    def _remember_version(self, message, answer):
        if isinstance(message, dict) and message.get("method") == "initialize":
            result = answer.get("result")
            if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                self.version = result["protocolVersion"]

    def _error(self, request_id, text):
        if request_id is None:
            print(text, file=sys.stderr, flush=True)
            return None
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": INTERNAL_ERROR, "message": text}})

    def serve(self, lines, write):
        for line in lines:
            if line.strip():
                answer = self.forward(line.strip())
                if answer is not None:
                    write(answer)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="mcp_stdio", description="Bridge an agent CLI's stdio MCP connection to Omoi's /mcp endpoint."
    )
    parser.add_argument("--url", default=os.environ.get("OMOI_URL"), help="The Omoi server (default: $OMOI_URL).")
    parser.add_argument("--token", default=os.environ.get("OMOI_TOKEN"), help="The agent's token ($OMOI_TOKEN).")
    options = parser.parse_args(argv)
    if not options.url or not options.token:
        parser.error(MISSING)
    serve(options.url, options.token)
    return 0


MISSING = "the server and the agent's token are needed: --url and --token, or OMOI_URL and OMOI_TOKEN"


def serve(url, token, *, stdin=None, stdout=None):
    """Bridge standard input and output to the server until standard input ends."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    bridge = Bridge(url, token)

    def write(line):
        stdout.write(line + "\n")
        stdout.flush()

    try:
        bridge.serve(stdin, write)
    except KeyboardInterrupt:
        pass
    finally:
        bridge.transport.close()


if __name__ == "__main__":
    sys.exit(main())
