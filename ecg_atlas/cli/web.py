"""`ecg-atlas web`: the web atlas in a browser, as a client of a running gRPC server."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from ecg_atlas.cli._client import TOKEN_ENVS, add_client_args
from ecg_atlas.service.config import LOOPBACK_HOSTS, ConfigError


def register(sub) -> None:
    p = sub.add_parser("web", help="the web atlas: search with 12-lead traces, cohort maps and probes in a browser",
                       description="Serve the web atlas. It holds no store: everything it shows comes through the "
                                   "gRPC server's RPCs, with the token it is given or the one a browser sends "
                                   "(Authorization: Bearer). A read token browses; saving a cohort needs write.")
    add_client_args(p)
    g = p.add_argument_group("web listener")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    g.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    g.add_argument("--tls-cert", default=None, help="PEM certificate: serve HTTPS")
    g.add_argument("--tls-key", default=None, help="PEM key of --tls-cert")
    g.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name browsers may use besides the bound address (and, on loopback, localhost/"
                        "127.0.0.1/[::1]) with its port: NAME (any port) or NAME:PORT; repeatable. Other "
                        "names are refused (DNS rebinding guard), e.g. behind a reverse proxy add its name")
    g.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback bind without HTTPS, or with a token of the web process's own")
    p.set_defaults(func=run)


def check_bind(host: str, https: bool, own_token: bool, insecure: bool) -> None:
    """The rules `serve` applies: beyond loopback, patient data travel only over TLS and only to
    callers with a token. Here the browser must bring its own token, so the web process may not
    lend everyone one of its own."""
    if host in LOOPBACK_HOSTS or insecure:
        return
    problems = [what for what, bad in (("without HTTPS (--tls-cert/--tls-key)", not https),
                                       (f"with a token of its own (--token or ${'/$'.join(TOKEN_ENVS)}) that "
                                        f"every visitor would use", own_token)) if bad]
    if problems:
        raise ConfigError(f"refusing to listen on {host} (not loopback) {' and '.join(problems)}: ECGs are "
                          f"patient data. Browsers then send their own token. Bind 127.0.0.1, fix that, "
                          f"or pass --insecure to accept the risk")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ecg_atlas.web import Upstream, create_app
    from ecg_atlas.web.guard import default_allowed_hosts

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"TLS file not found: {path}")
    token = args.token or next((os.environ[e] for e in TOKEN_ENVS if os.environ.get(e)), None)
    check_bind(args.host, args.tls_cert is not None, token is not None, args.insecure)
    for name in args.allowed_host:
        if not name.strip() or "/" in name or any(c.isspace() for c in name.strip()):
            raise ConfigError(f"--allowed-host {name!r}: give a host name, NAME or NAME:PORT (no scheme or path)")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.host, args.port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    port = listener.getsockname()[1]
    allowed_hosts = [*default_allowed_hosts(args.host, port), *(n.strip() for n in args.allowed_host)]
    app = create_app(Upstream(args.server, token=token, tls_ca=args.tls_ca, client_cert=args.client_cert,
                              client_key=args.client_key, timeout=args.timeout), allowed_hosts=allowed_hosts)
    scheme = "https" if args.tls_cert else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"{scheme}://{host}:{port}/"
    print(json.dumps({"url": url, "server": args.server, "allowed_hosts": allowed_hosts}) if args.json else
          f"web atlas on {url} (gRPC server {args.server}; answers to Host {', '.join(allowed_hosts)})", flush=True)
    config = uvicorn.Config(app, log_config=None, access_log=False, ssl_certfile=args.tls_cert,
                            ssl_keyfile=args.tls_key, server_header=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[listener])
    sys.stdout.flush()
    return 0
