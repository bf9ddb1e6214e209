"""A deliberately naive kmsgw protocol v1 server: the baseline `npm run bench` compares against.

One file, asyncio streams, `cryptography`'s AESGCM made per request, no caching tricks, the
style of a first Python implementation. It speaks GET, ENC and DEC with the same envelope
format as kmsgw (docs/protocol.md), each key's DEK random and held in a dict.

Usage: python3 server.py SOCKET_PATH   (prints "ready" on stdout once listening)
"""

import asyncio
import base64
import os
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DEKS = {}


def dek_for(key_id):
    if key_id not in DEKS:
        DEKS[key_id] = os.urandom(32)
    return DEKS[key_id]


def aad_for(key_id, version, caller):
    base = f"kmsgw/v1 {key_id} {version}".encode()
    return base if caller is None else base + b"\x00" + caller


def handle(line):
    parts = line.split(" ")
    verb = parts[0]
    try:
        if verb == "GET" and len(parts) == 2:
            return "OK " + base64.b64encode(dek_for(parts[1])).decode()
        if verb in ("ENC", "DEC") and len(parts) in (3, 4):
            key_id = parts[1]
            data = base64.b64decode(parts[2], validate=True)
            caller = base64.b64decode(parts[3], validate=True) if len(parts) == 4 else None
            aead = AESGCM(dek_for(key_id))
            if verb == "ENC":
                nonce = os.urandom(12)
                body = aead.encrypt(nonce, data, aad_for(key_id, 1, caller))
                return "OK " + base64.b64encode(b"\x01" + struct.pack(">I", 1) + nonce + body).decode()
            version = struct.unpack(">I", data[1:5])[0]
            plain = aead.decrypt(data[5:17], data[17:], aad_for(key_id, version, caller))
            return "OK " + base64.b64encode(plain).decode()
        return "ERR BAD_REQUEST unsupported"
    except Exception:
        return "ERR DECRYPT_FAILED failed"


async def serve(reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        writer.write((handle(line.decode().rstrip("\n")) + "\n").encode())
        await writer.drain()
    writer.close()


async def main(path):
    server = await asyncio.start_unix_server(serve, path=path, limit=2**24)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
