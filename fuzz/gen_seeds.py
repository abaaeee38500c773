#!/usr/bin/env python3
"""Writes the seed corpora under corpus-seeds/ (run from fuzz/).

packet seeds: byte 0 is the control byte (0 = 127.0.0.1, 2 = ::1,
3 = 10.0.0.1, outside allow_clients), then a DNS request written by hand.
List seeds: short excerpts of the real lists in /work/shared/data (a few
lines each), plus the names the packet target's fixture lists use.
"""
import os
import struct
import sys

OUT = "corpus-seeds"
DATA = os.environ.get("QALQAN_DATA", "/work/shared/data")


def name(n):
    b = b""
    for label in n.strip(".").split("."):
        if label:
            b += bytes([len(label)]) + label.encode()
    return b + b"\0"


def query(qid, qname, qtype=1, qclass=1, flags=0x0100, edns=None, opcode=0):
    flags |= opcode << 11
    arcount = 1 if edns is not None else 0
    msg = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, arcount)
    msg += name(qname) + struct.pack(">HH", qtype, qclass)
    if edns is not None:
        payload, do, opts = edns
        ttl = 0x8000 if do else 0
        msg += b"\0" + struct.pack(">HHIH", 41, payload, ttl, len(opts)) + opts
    return msg


def write(target, fname, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def packets():
    A, AAAA, TXT, ANY, AXFR, HTTPS, PTR = 1, 28, 16, 255, 252, 65, 12
    cookie = struct.pack(">HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
    ecs = struct.pack(">HHHBB", 8, 7, 1, 24, 0) + b"\xc0\x00\x02"
    seeds = [
        ("example-com-a", 0, query(0x1234, "example.com", A)),
        ("blocked-a", 0, query(0x0001, "blocked.example", A)),
        ("blocked-sub-aaaa", 0, query(0x0002, "www.blocked.example", AAAA)),
        ("allowed-sub", 0, query(0x0003, "allowed.blocked.example", A)),
        ("rpz-local-a", 0, query(0x0004, "local.example", A)),
        ("rpz-local-txt", 0, query(0x0005, "local.example", TXT)),
        ("rpz-local-aaaa-edns", 0, query(0x0006, "local.example", AAAA, edns=(1232, True, cookie))),
        ("rpz-wild", 0, query(0x0007, "a.b.wild.example", A)),
        ("rpz-drop", 0, query(0x0008, "drop.example", A)),
        ("rpz-nodata", 0, query(0x0009, "nodata.example", A)),
        ("rpz-redirect", 0, query(0x000A, "redirect.example", A)),
        ("rpz-passthru", 0, query(0x000B, "pass.bad.example", A)),
        ("keyword", 0, query(0x000C, "best-casino.example", A)),
        ("adblock-sinkhole", 0, query(0x000D, "ads.example", AAAA)),
        ("adblock-important", 0, query(0x000E, "important.example", A)),
        ("adblock-regex", 0, query(0x000F, "tracker42.example", A)),
        ("hosts-nodata", 0, query(0x0010, "hosts-blocked.example", HTTPS)),
        ("any", 0, query(0x0011, "blocked.example", ANY)),
        ("axfr", 0, query(0x0012, "example.com", AXFR)),
        ("ptr", 0, query(0x0013, "1.2.0.192.in-addr.arpa", PTR)),
        ("ecs", 0, query(0x0014, "example.com", A, edns=(4096, False, ecs))),
        ("edns-v1", 0, query(0x0015, "example.com", A, edns=(512, False, b"")).replace(b"\x00\x29\x02\x00\x00\x00", b"\x00\x29\x02\x00\x00\x01")),
        ("notify", 0, query(0x0016, "example.com", 6, opcode=4, flags=0)),
        ("update", 0, query(0x0017, "example.com", 6, opcode=5, flags=0)),
        ("chaos", 0, query(0x0018, "version.bind", TXT, qclass=3)),
        ("root-ns", 0, query(0x0019, ".", 2)),
        ("v6-client", 2, query(0x001A, "blocked.example", A)),
        ("refused-client", 3, query(0x001B, "example.com", A)),
        ("idn", 0, query(0x001C, "xn--80ak6aa92e.example", A)),
        ("upper-case", 0, query(0x001D, "BlOcKeD.ExAmPlE", A)),
        ("header-only", 0, struct.pack(">HHHHHH", 0x4242, 0x0100, 0, 0, 0, 0)),
    ]
    # a compression pointer in the question (legal in hickory's decoder)
    seeds.append(("pointer", 0, struct.pack(">HHHHHH", 0x0020, 0x0100, 1, 0, 0, 0)
                  + b"\x03www\xc0\x12\x07example\x00" + struct.pack(">HH", 1, 1)))
    for fname, control, msg in seeds:
        write("packet", fname + ".bin", bytes([control]) + msg)


def excerpt(path, start, count):
    with open(os.path.join(DATA, path), "rb") as f:
        lines = f.read().split(b"\n")
    return b"\n".join(lines[start:start + count]) + b"\n"


def lists():
    # (target, file name, source path, [(start line, line count), ...])
    plan = [
        ("parse_domains", "domains/hagezi-light-domains.txt", [(0, 20), (5000, 10)]),
        ("parse_domains", "domains/hagezi-light-wildcard.txt", [(0, 20)]),
        ("parse_domains", "domains/urlhaus-filter-domains.txt", [(0, 20)]),
        ("parse_hosts", "hosts/adaway-hosts.txt", [(0, 40)]),
        ("parse_hosts", "hosts/someonewhocares-zero.hosts", [(0, 30), (100, 20)]),
        ("parse_hosts", "hosts/stevenblack-unified-fakenews.hosts", [(0, 40)]),
        ("parse_adblock", "adblock/adguard-dns-filter-without-privacy.txt", [(0, 30), (3000, 20)]),
        ("parse_adblock", "adblock/hagezi-light-adblock.txt", [(0, 30)]),
        ("parse_adblock", "adblock/hagezi-whitelist-adblock.txt", [(0, 30)]),
        ("parse_rpz", "rpz/hagezi-light.rpz", [(0, 30)]),
        ("parse_rpz", "rpz/urlhaus-filter-rpz.conf", [(0, 30)]),
        ("parse_urls", "urls/phishing-database-links-ACTIVE.txt", [(0, 20), (1000, 20)]),
        ("parse_registry_csv", "regulator-ru-zapret/dump-2014-04-22.csv", [(0, 15)]),
        ("parse_registry_csv", "regulator-ru-zapret/dump-2016-06-13.csv", [(0, 15), (20000, 10)]),
        ("parse_registry_csv", "regulator-ru-zapret/dump-08-2020-02-16.csv", [(0, 15)]),
        ("parse_domains", "regulator-ru-zapret/nxdomain-2020-02-16.txt", [(0, 20)]),
        ("parse_keywords", "popularity/tranco-top-100k.txt", [(0, 10)]),
    ]
    compile_fmt = {"parse_domains": 0, "parse_hosts": 1, "parse_adblock": 2, "parse_rpz": 3,
                   "parse_urls": 4, "parse_registry_csv": 5, "parse_keywords": 6}
    for target, path, ranges in plan:
        for start, count in ranges:
            try:
                data = excerpt(path, start, count)
            except OSError as e:
                print(f"skip {path}: {e}", file=sys.stderr)
                continue
            base = path.replace("/", "_") + f"-{start}"
            write(target, base, data)
            # compile: format byte, list, NUL, a query name
            first = data.split(b"\n")[0].strip()
            write("compile", target + "-" + base, bytes([compile_fmt[target]]) + data + b"\0sub." + first[:60])
    # hand-written ones covering the less common syntax
    write("parse_rpz", "fixture.rpz", open(os.path.join("..", "tests", "data", "sample.rpz"), "rb").read()
          if os.path.exists(os.path.join("..", "tests", "data", "sample.rpz")) else b"")
    write("parse_keywords", "fixture.txt", "casino\n# comment\nkazino  # trailing\nказино\nbad word\n".encode())
    write("parse_adblock", "fixture.txt",
          b"||ads.example^\n@@||ok.example^$important\n|exact.example^\n/^tr[0-9]+\\./\n"
          b"example.com##.banner\n||x.example^$third-party\n! comment\n[Adblock Plus 2.0]\n")
    write("parse_urls", "fixture.txt",
          b"http://phish.example/login\nhttps://1.2.3.4/x\nhttp://[2001:db8::1]:8080/\nftp://user:pw@h.example\nnot a url\n")
    write("parse_hosts", "fixture.hosts",
          b"\xef\xbb\xbf127.0.0.1 localhost\n0.0.0.0 a.example b.example # c\nfe80::1%lo0 v6.example\n::1 ip6-localhost\r\n")
    write("compile", "keywords-allow", bytes([0x86]) + "casino\nказино\n".encode() + b"\0my-casino.example")
    write("compile", "adblock-both", bytes([0x42]) + b"||a.example^\n@@||b.a.example^\n/^x+\\./\n\0b.a.example")


if __name__ == "__main__":
    packets()
    lists()
