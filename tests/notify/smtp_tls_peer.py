"""A real SMTP server for the email channel test: aiosmtpd with STARTTLS required and
AUTH (PLAIN/LOGIN) required over TLS, checking one user and password.

Usage: smtp_tls_peer.py PORT CERT KEY USER PASSWORD OUTDIR

Every accepted message is written to OUTDIR/<n>.json as
{"mail_from", "rcpt_tos", "login", "tls", "content"}; "ready" is printed once listening.
"""

import asyncio
import json
import pathlib
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main() -> None:
    port, cert, key, user, password, outdir = sys.argv[1:7]
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)

    class Store:
        def __init__(self) -> None:
            self.count = 0

        async def handle_DATA(self, server, session, envelope):
            self.count += 1
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "login": session.auth_data,
                "tls": server._tls_protocol is not None,
                "content": envelope.content.decode("utf-8", "replace"),
            }
            path = out / f"{self.count}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            tmp.rename(path)
            return "250 OK"

    controller = Controller(
        Store(),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticate,
    )
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
