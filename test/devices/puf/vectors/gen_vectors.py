# Independent known-answer vectors for devices/puf (Python standard library + mpmath only).
#   python3 test/devices/puf/vectors/gen_vectors.py
# p256-fips186-5-a21.json: HKDF-SHA-256 (RFC 5869, written out with hmac) -> 320 bits ->
#   d = (c mod (n-1)) + 1 (FIPS 186-5 A.2.1), public point by affine double-and-add.
# failure-rate.json: exact key failure rates of BCH(252,128,t=18) x repetition 9 with mpmath.
import hashlib, hmac, json, os

def hkdf(ikm, salt, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]

p = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
a = p - 3
n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
G = (0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
     0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)

def add(P, Q):
    if P is None: return Q
    if Q is None: return P
    if P[0] == Q[0] and (P[1] + Q[1]) % p == 0: return None
    if P == Q: l = (3 * P[0] * P[0] + a) * pow(2 * P[1], -1, p) % p
    else: l = (Q[1] - P[1]) * pow(Q[0] - P[0], -1, p) % p
    x = (l * l - P[0] - Q[0]) % p
    return (x, (l * (P[0] - x) - P[1]) % p)

def mul(k, P):
    R = None
    while k:
        if k & 1: R = add(R, P)
        P = add(P, P)
        k >>= 1
    return R

vectors = []
secrets = [bytes(32), bytes(range(32)), hashlib.sha256(b"fleetguard puf kat").digest(), b"\xff" * 32]
contexts = ["identity", "epoch/0", "epoch/1", "epoch/4294967296", "tls-client"]
for s in secrets:
    for ctx in contexts:
        okm = hkdf(s, b"fleetguard/puf/p256/v1", ctx.encode(), 40)
        c = int.from_bytes(okm, "big")
        d = c % (n - 1) + 1
        X, Y = mul(d, G)
        vectors.append({"secret": s.hex(), "context": ctx, "hkdf320": okm.hex(), "d": "%064x" % d, "x": "%064x" % X, "y": "%064x" % Y})
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "p256-fips186-5-a21.json"), "w") as f:
    json.dump({"source": "gen_vectors.py: HKDF-SHA-256(ikm=secret, salt='fleetguard/puf/p256/v1', info=context, L=40); d = (c mod (n-1)) + 1 (FIPS 186-5 A.2.1); Q = d*G by affine arithmetic", "vectors": vectors}, f, indent=1)

import mpmath as mp
mp.mp.dps = 50
def tail(N, q, k):
    return mp.fsum(mp.binomial(N, i) * q**i * (1 - q)**(N - i) for i in range(k + 1, N + 1))
rows = []
for ber in ["0.05", "0.10", "0.15", "0.20", "0.22", "0.25", "0.30"]:
    q = mp.mpf(ber)
    pin = tail(9, q, 4)
    rows.append({"ber": float(ber), "inner": mp.nstr(pin, 20), "key": mp.nstr(tail(252, pin, 18), 20)})
with open(os.path.join(here, "failure-rate.json"), "w") as f:
    json.dump({"source": "gen_vectors.py with mpmath (50 digits): inner = P(Bin(9,p) > 4), key = P(Bin(252, inner) > 18)", "rows": rows}, f, indent=1)
print(len(vectors), "p256 vectors,", len(rows), "failure-rate rows")
