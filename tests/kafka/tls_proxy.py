#!/usr/bin/env python3
"""A TLS-terminating TCP proxy in front of a plaintext Kafka broker, for the TLS test.

    tls_proxy.py LISTEN_PORT BROKER_HOST:PORT CERT.pem KEY.pem

Accepts TLS on 127.0.0.1:LISTEN_PORT with the given certificate and relays the decrypted
bytes to the broker. Prints `listening` once ready and, for every finished TLS handshake,
`handshake <TLS version>` on stdout, so the test can tell that its client really spoke TLS.
"""
import asyncio
import ssl
import sys


async def relay(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main(listen_port, broker, cert, key):
    host, port = broker.rsplit(":", 1)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(client_reader, client_writer):
        version = client_writer.get_extra_info("ssl_object").version()
        print(f"handshake {version}", flush=True)
        try:
            broker_reader, broker_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(relay(client_reader, broker_writer), relay(broker_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", int(listen_port), ssl=context)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
