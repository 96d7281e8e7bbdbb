"""EMAIL_ALERT handler: send an alert e-mail to the address given as argument.

Usage: email_alert.py ADDRESS [TEXT...]

Builds an RFC 5322 message. If TITAN_SMTP_HOST is set it is sent through that
server (TITAN_SMTP_PORT, default 25; with TITAN_SMTP_USER/TITAN_SMTP_PASSWORD
it uses STARTTLS and logs in); otherwise it is written as a .eml file to
$TITAN_OUTPUT_DIR (or the current directory). Exit status 2 means the address
is not valid, 1 that sending failed.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import sys
import time
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

# a practical subset of RFC 5322 addr-spec: dot-atom local part, a domain with at least one dot
ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def build_message(to: str, text: str, env: dict[str, str]) -> EmailMessage:
    host = socket.gethostname()
    message = EmailMessage()
    message["From"] = env.get("TITAN_SMTP_FROM") or f"titan@{host}"
    message["To"] = to
    message["Subject"] = f"[Titan] alert from {host}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=host)
    job = env.get("TITAN_JOB_ID")
    lines = [text, "", f"host: {host}", f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}"]
    if job:
        lines.append(f"job:  {job}")
    message.set_content("\n".join(lines) + "\n")
    return message


def send(message: EmailMessage, env: dict[str, str]) -> str:
    host, port = env["TITAN_SMTP_HOST"], int(env.get("TITAN_SMTP_PORT") or 25)
    with smtplib.SMTP(host, port, timeout=15) as smtp:
        if env.get("TITAN_SMTP_USER"):
            smtp.starttls()
            smtp.login(env["TITAN_SMTP_USER"], env.get("TITAN_SMTP_PASSWORD", ""))
        smtp.send_message(message)
    return f"sent to {message['To']} via {host}:{port}"


def save(message: EmailMessage, env: dict[str, str]) -> str:
    safe_to = re.sub(r"[^A-Za-z0-9@._-]", "_", str(message["To"]))
    target = Path(env.get("TITAN_OUTPUT_DIR") or ".") / f"alert-{time.strftime('%Y%m%d-%H%M%S')}-{safe_to}.eml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(message.as_bytes(policy=policy.SMTP))  # CRLF line ends, as RFC 5322 has them
    return f"no TITAN_SMTP_HOST set: wrote {target.resolve()}"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: email_alert.py ADDRESS [TEXT...]", file=sys.stderr)
        return 2
    to = argv[1].strip()
    if len(to) > 254 or not ADDRESS.match(to):
        print(f"email_alert: '{to}' is not a valid e-mail address (expected name@example.com)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    message = build_message(to, " ".join(argv[2:]) or "Titan alert: a job asked to notify you.", env)
    try:
        print(send(message, env) if env.get("TITAN_SMTP_HOST") else save(message, env))
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        print(f"email_alert: could not send to {to}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
