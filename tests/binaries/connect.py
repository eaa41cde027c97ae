"""Connect to 127.0.0.1:<argv[1]> and wait for the peer to close (a test agent)."""

import socket
import sys

sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.recv(1)
