#!/usr/bin/python3
"""Independent implementations read and write zsfc's ESP (issue 19 point 8).

Payload ESP (RFC 4106 AES-GCM, tunnel mode) is decrypted and built by scapy's
SecurityAssociation; link ESP (RFC 4543 AES-GMAC, UDP-encapsulated on port 4500, RFC 3948)
by Python's `cryptography` AES-GCM with an empty plaintext, as RFC 4543 section 3 defines it
(AAD = SPI | ESN high half | sequence number | IV | payload | padding | pad length | next
header). Neither shares code with zsfc. Keys come from the nodes' interop keylog
(ZSFC_INTEROP_KEYLOG, crates/node/src/interop.rs).

  esp.py decrypt PCAP KEYLOG           -> JSON counts of what verified and what did not
  esp.py inject PCAP KEYLOG SRC DST N  -> re-seals N captured SRC->DST datagrams with new,
                                          higher sequence numbers and sends them to DST:4500
"""
import json
import os
import socket
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.all import IP, IPv6, UDP, rdpcap
from scapy.layers.ipsec import ESP, SecurityAssociation

LINK_PORT = 4500
MPLS_PORT = 6635
MPLS_IN_IP = 137
GAL = 13


def keylog(path):
    sas = {}
    for line in open(path):
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        spi = int(f["spi"], 16)
        sas[spi] = {
            "alg": f["alg"],
            "esn": f["esn"] == "1",
            "first_seq": int(f["first_seq"]),
            "keymat": bytes.fromhex(f["keymat"]),
        }
    return sas


def high_halves(sa):
    """The ESN high halves a receiver tries (RFC 4303 appendix A: the one of the window, or the next)."""
    if not sa["esn"]:
        return [None]
    hi = sa["first_seq"] >> 32
    return [hi, hi + 1]


def open_link(sa, esp):
    """Verifies a link ESP packet (RFC 4543); returns (inner, high half) or None."""
    key, salt = sa["keymat"][:-4], sa["keymat"][-4:]
    spi, seq = struct.unpack("!II", esp[:8])
    iv, body, icv = esp[8:16], esp[16:-16], esp[-16:]
    for hi in high_halves(sa):
        seqs = struct.pack("!II", spi, hi) + esp[4:8] if hi is not None else esp[:8]
        tag = AESGCM(key).encrypt(salt + iv, b"", seqs + iv + body)
        if tag == icv:
            pad = body[-2]
            if body[-1] != MPLS_IN_IP:
                return None
            return body[: -2 - pad], hi, (hi or 0) << 32 | seq
    return None


def seal_link(sa, spi, seq64, inner):
    """A link ESP packet (RFC 4543) around `inner` with sequence number `seq64`."""
    key, salt = sa["keymat"][:-4], sa["keymat"][-4:]
    pad = (-(len(inner) + 2)) % 4
    body = inner + bytes(range(1, pad + 1)) + bytes([pad, MPLS_IN_IP])
    # Any IV will do (RFC 4543 section 3.1: unique per key, which the receiver never checks).
    iv = os.urandom(8)
    head = struct.pack("!II", spi, seq64 & 0xFFFFFFFF)
    aad = (struct.pack("!II", spi, seq64 >> 32) + head[4:]) if sa["esn"] else head
    tag = AESGCM(key).encrypt(salt + iv, b"", aad + iv + body)
    return head + iv + body + tag


def labels_end(b):
    """Offset past the label stack, and the labels."""
    at, labels = 0, []
    while at + 4 <= len(b):
        (lse,) = struct.unpack("!I", b[at : at + 4])
        labels.append(lse >> 12)
        at += 4
        if lse & 0x100:
            return at, labels
    return None, labels


def payload_esp(b):
    """The offset of the IP packet that carries payload ESP after labels and an NSH, and the
    NSH's TTL (None without one); None for a probe (GAL) or a short packet."""
    at, labels = labels_end(b)
    if at is None or labels[-1] == GAL or at + 2 > len(b):
        return None
    ttl = None
    if b[at] >> 6 == 0:
        # NSH base header (RFC 8300 section 2.2): Ver(2) O U TTL(6) Length(6) in 4-byte words.
        ttl = (b[at] & 0x0F) << 2 | b[at + 1] >> 6
        at += (b[at + 1] & 0x3F) * 4
    return (at, ttl) if at < len(b) else None


def scapy_sa(spi, sa, hi):
    return SecurityAssociation(
        ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=sa["keymat"], auth_algo="NULL",
        esn_en=sa["esn"], esn=hi or 0,
    )


def open_payload(sas, ip_bytes):
    """Decrypts payload ESP with scapy; returns (inner IP packet, spi, high half, seq) or None."""
    pkt = IP(ip_bytes) if ip_bytes[0] >> 4 == 4 else IPv6(ip_bytes)
    if ESP not in pkt:
        return None
    spi, seq = pkt[ESP].spi, pkt[ESP].seq
    sa = sas.get(spi)
    if sa is None:
        return None
    for hi in high_halves(sa):
        try:
            dec = scapy_sa(spi, sa, hi).decrypt(pkt)
        except Exception:
            continue
        return dec, spi, hi, (hi or 0) << 32 | seq
    return None


def segments(data):
    """The datagrams of one captured UDP payload. zsfc sends runs of packets to a peer with UDP
    GSO, and a capture on a veth sees such a run before the kernel cuts it: one payload of
    equal-size segments (the last may be shorter), each beginning with the same SPI and the
    next sequence number (link ESP) - found by looking for that header."""
    if len(data) < 8:
        return [data]
    spi, seq = data[:4], struct.unpack("!I", data[4:8])[0]
    nxt = spi + struct.pack("!I", (seq + 1) & 0xFFFFFFFF)
    at = data.find(nxt, 8)
    if at < 0 or spi == b"\0\0\0\0":
        return [data]
    return [data[k : k + at] for k in range(0, len(data), at)]


def datagrams(pcap):
    for p in rdpcap(pcap):
        if UDP in p and IP in p:
            for d in segments(bytes(p[UDP].payload)):
                yield p[IP].src, p[IP].dst, p[UDP].dport, d


def decrypt(pcap, log):
    sas = keylog(log)
    n = {"link_ok": 0, "link_bad": 0, "payload_ok": 0, "payload_bad": 0, "probes": 0,
         "link_high": [], "payload_high": [], "inner": {}, "nsh_ttl": {}}
    for src, dst, port, data in datagrams(pcap):
        if port == LINK_PORT:
            if len(data) < 32 or data[:4] == b"\0\0\0\0":
                continue
            sa = sas.get(struct.unpack("!I", data[:4])[0])
            opened = open_link(sa, data) if sa else None
            if opened is None:
                n["link_bad"] += 1
                continue
            n["link_ok"] += 1
            inner, hi, _ = opened
            if hi is not None and hi not in n["link_high"]:
                n["link_high"].append(hi)
        elif port == MPLS_PORT:
            inner = data
        else:
            continue
        found = payload_esp(inner)
        if found is None:
            n["probes"] += 1
            continue
        at, ttl = found
        if ttl is not None:
            seen = n["nsh_ttl"].setdefault(f"{src}>{dst}", [])
            if ttl not in seen:
                seen.append(ttl)
        got = open_payload(sas, inner[at:])
        if got is None:
            n["payload_bad"] += 1
            continue
        dec, _, hi, _ = got
        n["payload_ok"] += 1
        if hi is not None and hi not in n["payload_high"]:
            n["payload_high"].append(hi)
        proto = dec.payload.name if dec.payload else "none"
        n["inner"][proto] = n["inner"].get(proto, 0) + 1
    print(json.dumps(n, sort_keys=True))


def inject(pcap, log, src, dst, count):
    """Re-seals the last `count` data datagrams src->dst with new sequence numbers past the
    highest captured (payload ESP by scapy, link ESP by cryptography) and sends them."""
    sas = keylog(log)
    picked, high = [], {}
    for s, d, port, data in datagrams(pcap):
        if (s, d, port) != (src, dst, LINK_PORT) or data[:4] == b"\0\0\0\0":
            continue
        link_spi = struct.unpack("!I", data[:4])[0]
        opened = open_link(sas[link_spi], data)
        if opened is None:
            continue
        inner, _, seq = opened
        high[link_spi] = max(high.get(link_spi, 0), seq)
        found = payload_esp(inner)
        at = found[0] if found else None
        got = open_payload(sas, inner[at:]) if at is not None else None
        if got is None:
            continue
        dec, spi, _, pseq = got
        high[spi] = max(high.get(spi, 0), pseq)
        picked.append((link_spi, inner[:at], spi, dec))
    picked = picked[-count:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    sent, crossed = 0, set()
    for k, (link_spi, head, spi, dec) in enumerate(picked):
        # Ahead of what was seen, inside the receivers' replay windows.
        pseq, lseq = high[spi] + 100 + k, high[link_spi] + 100 + k
        sa = sas[spi]
        # The plaintext scapy decrypted: the outer header of tunnel mode and the inner packet.
        sealed = scapy_sa(spi, sa, pseq >> 32).encrypt(dec, seq_num=pseq & 0xFFFFFFFF)
        crossed.add(pseq >> 32)
        sock.sendto(seal_link(sas[link_spi], link_spi, lseq, head + bytes(sealed)), (dst, LINK_PORT))
        sent += 1
    print(json.dumps({"sent": sent, "payload_high": sorted(crossed)}))


if __name__ == "__main__":
    if sys.argv[1] == "decrypt":
        decrypt(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "inject":
        inject(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        sys.exit(__doc__)
