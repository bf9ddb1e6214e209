"""A NOTIFY_SOCKET for tests: binds a Unix datagram socket (Node has none) at argv[1] and
prints "LISTENING", then each datagram received as one JSON string a line, until stdin closes."""
import json
import os
import socket
import sys
import threading

path = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path if not path.startswith("@") else "\0" + path[1:])
print("LISTENING", flush=True)


def stop_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
while True:
    data = sock.recv(4096)
    print(json.dumps(data.decode("utf-8")), flush=True)
