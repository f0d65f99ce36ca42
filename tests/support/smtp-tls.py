"""aiosmtpd as a mail relay that insists on STARTTLS and AUTH, for the mail
reporter's test: `python smtp-tls.py PORT MAILDIR CERT KEY USER PASSWORD`.
Mail is refused before STARTTLS and before a good login; what is accepted
lands in MAILDIR."""

import signal
import sys
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, cert, key, user, password = sys.argv[1:7]


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    return AuthResult(success=ok)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Mailbox(maildir),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    auth_required=True,
    auth_require_tls=True,
    authenticator=authenticator,
)
controller.start()
print("listening", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
controller.stop()
