"""The `headway` command: run the server, watch tasks live, list, cancel and delete them."""

import os

# Before anything imports grpc: its core logs a failed TLS handshake on stderr, and
# the command already says what went wrong in one line.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
