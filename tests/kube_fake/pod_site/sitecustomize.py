"""Installed by the fake kubelet in every fake pod's Python (first on PYTHONPATH).

It stands in for the cluster DNS that a real pod's resolver asks: names in the
records file of ``tests/kube_fake/dns.py`` (``$TRAINERKIT_FAKE_DNS_RECORDS``)
resolve to their pod's IP once their ``not_before`` time has come; before
that, and for any other dotted name that is not an IP address, the lookup
fails with ``EAI_NONAME`` at once, as NXDOMAIN from a cluster DNS without
upstream resolvers would. Names without a dot (``localhost``, the machine's
own name) go to the normal resolver. The code under test keeps calling the
ordinary socket functions.
"""

import ipaddress
import json
import os
import socket
import time

_RECORDS = os.environ.get("TRAINERKIT_FAKE_DNS_RECORDS")


def _answer(host):
    """The IP for ``host``, None to resolve it normally; raises gaierror for NXDOMAIN."""
    if not isinstance(host, str) or "." not in host.rstrip("."):
        return None
    name = host.rstrip(".").lower()
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    try:
        with open(_RECORDS, encoding="utf-8") as handle:
            records = json.load(handle).get("records") or {}
    except (OSError, ValueError):
        records = {}
    record = records.get(name)
    if record is None or time.time() < float(record.get("not_before") or 0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return record["ip"]


if _RECORDS:
    _getaddrinfo, _gethostbyname, _gethostbyname_ex = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex

    def getaddrinfo(host, *args, **kwargs):
        ip = _answer(host)
        return _getaddrinfo(host if ip is None else ip, *args, **kwargs)

    def gethostbyname(host):
        ip = _answer(host)
        return _gethostbyname(host) if ip is None else ip

    def gethostbyname_ex(host):
        ip = _answer(host)
        return _gethostbyname_ex(host) if ip is None else (host, [], [ip])

    socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = getaddrinfo, gethostbyname, gethostbyname_ex

    def _translate(address):
        if isinstance(address, tuple) and address and isinstance(address[0], str):
            ip = _answer(address[0])
            if ip is not None:
                return (ip,) + tuple(address[1:])
        return address

    def _wrap(name):
        original = getattr(socket.socket, name)

        def method(self, address):
            return original(self, _translate(address))

        method.__name__ = name
        setattr(socket.socket, name, method)

    for _name in ("bind", "connect", "connect_ex"):
        _wrap(_name)

    _sendto = socket.socket.sendto

    def sendto(self, data, *rest):
        if rest:
            rest = rest[:-1] + (_translate(rest[-1]),)
        return _sendto(self, data, *rest)

    socket.socket.sendto = sendto
