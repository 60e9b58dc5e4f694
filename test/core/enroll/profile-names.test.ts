// Issue 9, finding 7: the names of device certificates, through the path the enrollment engine
// issues by (resolveProfile -> compileTemplate -> deviceNames -> template.issue). Each name the
// hostile-user run got signed is refused here; the same names given to the signer underneath
// (LeafTemplate, which checks nothing) still make a certificate, which is what this path signed
// before. Good names, an IDN among them, come out as OpenSSL reads and verifies them.
import * as crypto from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { issueCa } from "../../../core/ca";
import {
  checkBatchNames,
  compileTemplate,
  type DeviceCertificateProfile,
  deviceNames,
  type IssuerMaterial,
  type NameRules,
  resolveProfile,
} from "../../../core/enroll/profile";
import { FleetError } from "../../../core/errors";
import { LeafTemplate, randomSerial } from "../../../core/x509/cert";
import { EKU, keyIdentifier } from "../../../core/x509/ext";
import { type ExternalSigner, loadPrivateKey, spkiDer } from "../../../core/x509/keys";
import { parseCertificate, subjectKeyIdOf } from "../../../core/x509/parse";
import { pemBlocks, toPem } from "../../../core/x509/pem";
import { checkDirectoryString, checkDnsName, checkUri } from "../../../core/x509/validate-names";
import { verifyChain, x509Text } from "../../helpers/openssl";

// biome-ignore lint/suspicious/noControlCharactersInRegex: what no message may contain
const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

const root = issueCa({
  name: "root",
  role: "root",
  algorithm: "ecdsa-p256",
  subject: { commonName: "Names Root" },
  validityDays: 60,
});
const issuing = issueCa(
  {
    name: "iss",
    role: "issuing",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Names Issuing" },
    validityDays: 30,
  },
  { name: "root", ...root },
);
// a second hierarchy whose root constrains names, as a platform team would for its fleet
const ncRoot = issueCa({
  name: "ncroot",
  role: "root",
  algorithm: "ecdsa-p256",
  subject: { commonName: "Constrained Root" },
  validityDays: 60,
  nameConstraints: {
    permittedDNS: ["devices.example.com", "xn--bcher-kva.example"],
    permittedURI: [".devices.example.com"],
  },
});
const ncIssuing = issueCa(
  {
    name: "nciss",
    role: "issuing",
    algorithm: "ecdsa-p256",
    subject: { commonName: "Constrained Issuing" },
    validityDays: 30,
    nameConstraints: { excludedDNS: ["lab.devices.example.com"] },
  },
  { name: "ncroot", ...ncRoot },
);

/** Issuer material whose key counts its signatures, so a test can tell a refusal came first. */
function material(ca = issuing): IssuerMaterial & { signatures: () => number } {
  const chain = pemBlocks(ca.chainPem, "CERTIFICATE", "chain");
  const key = loadPrivateKey(ca.keyPem, "key");
  let n = 0;
  const signer: ExternalSigner = {
    algorithm: "ecdsa-p256",
    publicKey: crypto.createPublicKey(key),
    sign: (data) => {
      n++;
      return crypto.sign("sha256", data, key);
    },
  };
  return {
    certificate: chain[0]!,
    chain: chain.slice(1),
    key: signer,
    fingerprint: crypto.createHash("sha256").update(chain[0]!).digest("hex"),
    signatures: () => n,
  };
}

const deviceKey = spkiDer(crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey);
const BATCH = "lot-1";
const MODEL = "fg100";
const DEVICE = "fg100-0000042";

/** Issue one device certificate the way the enrollment engine does. */
function issueThrough(
  profile: DeviceCertificateProfile,
  issuer: IssuerMaterial = material(),
  rules: NameRules = {},
  device = DEVICE,
): Buffer {
  const p = resolveProfile(profile, "profile", rules);
  const template = compileTemplate(p, issuer, new Date(), rules);
  const n = deviceNames(p, device, BATCH, MODEL, rules);
  return template.issue(
    randomSerial(),
    n.commonName,
    deviceKey,
    n.san.uri.length || n.san.dns.length ? n.san : undefined,
  );
}

/** The signer alone, given names expanded as the profile code expanded them before: no checks. */
function issueUnchecked(profile: DeviceCertificateProfile, ca = issuing): Buffer {
  const vars: Record<string, string> = { deviceId: DEVICE, batch: BATCH, model: MODEL };
  const fill = (t: string) => t.replace(/\{(\w+)\}/g, (_, k: string) => vars[k] ?? "");
  const c = parseCertificate(pemBlocks(ca.certificatePem, "CERTIFICATE", "c")[0]!);
  const t = new LeafTemplate(
    {
      algorithm: "ecdsa-p256",
      key: loadPrivateKey(ca.keyPem, "key"),
      subject: c.subject,
      keyId: subjectKeyIdOf(c) ?? keyIdentifier(c.spki),
    },
    {
      organization: profile.subject?.organization,
      organizationalUnit: profile.subject?.organizationalUnit,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      keyUsage: ["digitalSignature"],
      extKeyUsage: [EKU.clientAuth],
    },
  );
  return t.issue(randomSerial(), fill(profile.subject?.commonName ?? "{deviceId}"), deviceKey, {
    dns: (profile.sans?.dns ?? []).map(fill),
    uri: (profile.sans?.uri ?? []).map(fill),
  });
}

function thrown(f: () => unknown): FleetError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FleetError);
    return e as FleetError;
  }
  throw new Error("expected a FleetError, got a certificate");
}

/** Every IA5String-typed name (dNSName [2], URI [6]) in the SAN extension of `der`. */
function ia5Names(der: Buffer): Buffer[] {
  const san = parseCertificate(der).extensions.get("2.5.29.17");
  if (!san) return [];
  const out: Buffer[] = [];
  const v = san.value;
  let p = 2; // SEQUENCE header (short form: the test SANs are short)
  while (p < v.length) {
    const tag = v[p]!;
    const len = v[p + 1]!;
    if (tag === 0x82 || tag === 0x86) out.push(v.subarray(p + 2, p + 2 + len));
    p += 2 + len;
  }
  return out;
}

// The names the hostile-user run got signed (issue 9, finding 7), and the field each is refused in.
const HOSTILE: Array<[string, DeviceCertificateProfile, string, RegExp]> = [
  [
    "NUL in O",
    { subject: { organization: "Acme\u0000Evil" } },
    "profile.subject.organization",
    /"Acme\\u0000Evil"/,
  ],
  [
    "newline in O",
    { subject: { organization: "Acme\nOU=admin" } },
    "profile.subject.organization",
    /"Acme\\nOU=admin"/,
  ],
  [
    "NUL in CN",
    { subject: { commonName: "{deviceId}\u0000.evil" } },
    "profile.subject.commonName",
    /\\u0000/,
  ],
  [
    "newline in CN",
    { subject: { commonName: "{deviceId}\nCN=admin" } },
    "profile.subject.commonName",
    /\\nCN=admin/,
  ],
  [
    "a wildcard DNS name",
    { sans: { dns: ["*.example.com"] } },
    "profile.sans.dns[0]",
    /^profile\.sans\.dns\[0\]: got "\*\.example\.com", want an LDH host name \(wildcards are not allowed by policy\)$/,
  ],
  ["a newline in a DNS name", { sans: { dns: ["evil\n.com"] } }, "profile.sans.dns[0]", /"evil\\n\.com"/],
  ["a space and comma in a DNS name", { sans: { dns: ["a b,c"] } }, "profile.sans.dns[0]", /"a b,c"/],
  [
    "a javascript: URI",
    { sans: { uri: ["javascript:alert(1)"] } },
    "profile.sans.uri[0]",
    /scheme is one of urn, https, spiffe/,
  ],
  [
    "a raw 0xE9 in a URI (an IRI)",
    { sans: { uri: ["urn:acme:caf\u00e9"] } },
    "profile.sans.uri[0]",
    /urn:acme:caf%C3%A9/,
  ],
];

describe("hostile names (issue 9, finding 7)", () => {
  it.each(HOSTILE)("%s: the signer alone makes a certificate of it", (_, profile) => {
    const der = issueUnchecked(profile);
    expect(() => new crypto.X509Certificate(der)).not.toThrow();
  });

  it.each(HOSTILE)(
    "%s: refused on the issuing path, naming the field, before signing",
    (_, profile, field, msg) => {
      const issuer = material();
      const e = thrown(() => issueThrough(profile, issuer));
      expect(e.code).toBe("INVALID_INPUT");
      expect(e.field).toBe(field);
      expect(e.message.startsWith(`${field}: got `)).toBe(true);
      expect(e.message).toMatch(msg);
      expect(e.message).not.toMatch(RAW_CONTROL);
      expect(issuer.signatures()).toBe(0);
      // resolving alone (what a preview does) already refuses it
      expect(() => resolveProfile(profile)).toThrow(FleetError);
    },
  );

  it("a DNS name with a raw é is issued as its A-label: every IA5String byte is ASCII", () => {
    const unchecked = ia5Names(issueUnchecked({ sans: { dns: ["caf\u00e9.example.com"] } }));
    expect(unchecked[0]).toContain(0xe9); // what the path signed before
    const der = issueThrough({ sans: { dns: ["caf\u00e9.example.com"], uri: ["urn:acme:{deviceId}"] } });
    const names = ia5Names(der);
    expect(names.map((b) => b.toString("latin1"))).toEqual([
      "xn--caf-dma.example.com",
      "urn:acme:fg100-0000042",
    ]);
    for (const b of names) expect([...b].every((x) => x >= 0x21 && x < 0x7f)).toBe(true);
  });

  it("wildcards pass only under rules that allow them", () => {
    const rules = { allowWildcardDns: true };
    const der = issueThrough({ sans: { dns: ["*.example.com"] } }, material(), rules);
    expect(new crypto.X509Certificate(der).subjectAltName).toBe("DNS:*.example.com");
    // the template refuses the wildcard when its rules do not allow it, whoever made the names
    const p = resolveProfile({ sans: { dns: ["*.example.com"] } }, "profile", rules);
    const names = deviceNames(p, DEVICE, BATCH, MODEL, rules);
    const strict = compileTemplate(p, material(), new Date());
    expect(
      thrown(() => strict.issue(randomSerial(), names.commonName, deviceKey, names.san)).message,
    ).toMatch(/wildcards are not allowed by policy/);
  });

  it("URI schemes come from the rules", () => {
    const rules = { allowedUriSchemes: ["mqtts"] };
    const der = issueThrough(
      { sans: { uri: ["mqtts://{deviceId}.devices.example.com/t"] } },
      material(),
      rules,
    );
    expect(new crypto.X509Certificate(der).subjectAltName).toBe(
      "URI:mqtts://fg100-0000042.devices.example.com/t",
    );
    expect(thrown(() => issueThrough({ sans: { uri: ["urn:acme:x"] } }, material(), rules)).message).toMatch(
      /scheme is one of mqtts/,
    );
  });

  it("CRL distribution points are http(s) URIs", () => {
    expect(thrown(() => resolveProfile({ crlUrls: ["http://crl.example/\nx"] })).field).toBe(
      "profile.crlUrls[0]",
    );
    expect(thrown(() => resolveProfile({ crlUrls: ["ftp://crl.example/a"] })).message).toMatch(
      /scheme is one of http, https \(a CRL distribution point\)/,
    );
    expect(resolveProfile({ crlUrls: ["http://crl.example/a.crl"] }).crlUrls).toEqual([
      "http://crl.example/a.crl",
    ]);
  });

  it("names a person cannot see are escaped in messages, long ones cut", () => {
    const e = thrown(() => resolveProfile({ subject: { organization: `Acme\u202e${"x".repeat(100)}` } }));
    expect(e.message).toMatch(/got "Acme\\u202Ex+"\.\.\., want/);
    expect(
      thrown(() => resolveProfile({ subject: { commonName: `\u009b${"x".repeat(300)}` } })).message,
    ).not.toMatch(RAW_CONTROL);
  });
});

describe("good names", () => {
  const profile: DeviceCertificateProfile = {
    subject: { organization: "Bücher GmbH", organizationalUnit: "Sensors", commonName: "{deviceId}" },
    sans: {
      dns: ["{deviceId}.devices.example.com", "bücher.example"],
      uri: [
        "https://Fleet.Devices.Example.com/d/{deviceId}",
        "spiffe://fleet.devices.example.com/{batch}/{deviceId}",
      ],
    },
  };

  it("are issued normalized, and OpenSSL parses and verifies the certificate under name constraints", () => {
    const der = issueThrough(profile, material(ncIssuing));
    const pem = toPem("CERTIFICATE", der);
    const text = x509Text(pem);
    expect(text).toContain(
      "DNS:fg100-0000042.devices.example.com, DNS:xn--bcher-kva.example, " +
        "URI:https://fleet.devices.example.com/d/fg100-0000042, URI:spiffe://fleet.devices.example.com/lot-1/fg100-0000042",
    );
    expect(text).toMatch(/Subject: O ?= ?B(\\C3\\BC|ü)cher GmbH, OU ?= ?Sensors, CN ?= ?fg100-0000042/);
    const v = verifyChain(ncRoot.certificatePem, ncIssuing.certificatePem, pem);
    expect(v.out).toMatch(/: OK/);
    expect(v.ok).toBe(true);
  });

  it("the CSR subject the device is asked for is the certificate's", () => {
    const n = deviceNames(resolveProfile(profile), DEVICE, BATCH, MODEL);
    expect(n.subject).toEqual([
      ["O", "Bücher GmbH"],
      ["OU", "Sensors"],
      ["CN", "fg100-0000042"],
    ]);
  });

  it("the declared profile is kept as declared, so its digest does not move with normalization", () => {
    const p = resolveProfile(profile);
    expect(p.sans.dns).toEqual(profile.sans!.dns);
    expect(p.sans.uri).toEqual(profile.sans!.uri);
  });
});

describe("name constraints, checked before signing", () => {
  const cases: Array<[string, DeviceCertificateProfile, RegExp]> = [
    [
      "a DNS name outside the root's permitted subtrees",
      { sans: { dns: ["{deviceId}.other.example"] } },
      /^profile\.sans\.dns\[0\]: got "fg100-0000042\.other\.example", want a name within issuer 'Constrained Root' permitted subtrees \[devices\.example\.com, xn--bcher-kva\.example\]/,
    ],
    [
      "a DNS name inside the issuing CA's excluded subtree",
      { sans: { dns: ["{deviceId}.lab.devices.example.com"] } },
      /outside issuer 'Constrained Issuing' excluded subtree lab\.devices\.example\.com/,
    ],
    [
      "a URI host outside the permitted URI subtrees",
      { sans: { uri: ["https://{deviceId}.other.example/"] } },
      /^profile\.sans\.uri\[0\]: .*permitted URI subtrees \[\.devices\.example\.com\]/,
    ],
    [
      "a URI without a host under URI constraints",
      { sans: { uri: ["urn:acme:{deviceId}"] } },
      /^profile\.sans\.uri\[0\]: .*a URI with a host/,
    ],
    [
      "a host-like CN with no DNS name (OpenSSL checks the CN then)",
      { subject: { commonName: "{deviceId}.other.example" } },
      /^profile\.subject\.commonName: .*permitted subtrees/,
    ],
  ];

  it.each(cases)("%s is refused, and nothing is signed", (_, profile, msg) => {
    const issuer = material(ncIssuing);
    const e = thrown(() => issueThrough(profile, issuer));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.message).toMatch(msg);
    expect(e.message).toContain('(the certificate of "fg100-0000042');
    expect(issuer.signatures()).toBe(0);
  });

  it.each(cases)("%s: OpenSSL refuses the certificate the unchecked signer makes", (_, profile) => {
    const pem = toPem("CERTIFICATE", issueUnchecked(profile, ncIssuing));
    const v = verifyChain(ncRoot.certificatePem, ncIssuing.certificatePem, pem);
    expect(v.ok).toBe(false);
    expect(v.out).toMatch(/subtree violation|unsupported or invalid name syntax/);
  });

  it("a preview can check every device of a batch against the chain, without signing", () => {
    const p = resolveProfile({ sans: { dns: ["{deviceId}.devices.example.com"] } });
    const certificates = pemBlocks(ncIssuing.chainPem, "CERTIFICATE", "chain");
    expect(() =>
      checkBatchNames(p, BATCH, MODEL, {}, { certificates, firstSerial: 0, count: 1000 }),
    ).not.toThrow();
    const lab = resolveProfile({ sans: { dns: ["{deviceId}.lab.devices.example.com"] } });
    expect(
      thrown(() => checkBatchNames(lab, BATCH, MODEL, {}, { certificates, firstSerial: 5, count: 10 }))
        .message,
    ).toMatch(
      /^profile\.sans\.dns\[0\]: got "fg100-0000005\.lab\.devices\.example\.com", .*excluded subtree .*\(device "fg100-0000005"\)/,
    );
  });

  it("constraints are checked per device: an exact-host subtree admits one device of the batch", () => {
    const one = issueCa(
      {
        name: "one",
        role: "issuing",
        algorithm: "ecdsa-p256",
        subject: { commonName: "One Device" },
        validityDays: 10,
        nameConstraints: { permittedDNS: ["fg100-0000042.devices.example.com"] },
      },
      { name: "ncroot", ...ncRoot },
    );
    const p = { sans: { dns: ["{deviceId}.devices.example.com"] } };
    expect(() => issueThrough(p, material(one), {}, "fg100-0000042")).not.toThrow();
    expect(thrown(() => issueThrough(p, material(one), {}, "fg100-0000043")).message).toMatch(
      /got "fg100-0000043\.devices\.example\.com"/,
    );
  });
});

describe("the expansion for a batch", () => {
  it("is checked exactly for the batch's model and name, which a preview can call", () => {
    const p = resolveProfile({
      sans: { dns: ["{deviceId}.devices.example.com"], uri: ["urn:acme:{batch}:{deviceId}"] },
    });
    expect(() => checkBatchNames(p, "lot-1", "fg100")).not.toThrow();
    // a model with '_' is a valid model and not a valid DNS label: refused for the batch, with the template named
    const e = thrown(() => checkBatchNames(p, "lot-1", "fg_100"));
    expect(e.message).toBe(
      "profile.sans.dns[0]: got \"fg_100-0000000.devices.example.com\", want an LDH host name: '_' is not allowed " +
        '(the expansion of "{deviceId}.devices.example.com" for device "fg_100-0000000")',
    );
    // the CN bound is exact too: a 63-character batch name overflows 64 characters only when used
    const long = resolveProfile({ subject: { commonName: "{batch}/{model}" } });
    expect(() => checkBatchNames(long, "b".repeat(40), "fg100")).not.toThrow();
    expect(thrown(() => checkBatchNames(long, "b".repeat(63), "fg100")).message).toMatch(
      /at most 64 characters/,
    );
  });

  it("gives every device the names a full check of its own expansion gives", () => {
    const declared: DeviceCertificateProfile = {
      subject: { commonName: "{model} {deviceId}" },
      sans: {
        dns: ["{deviceId}.Devices.example.com", "d{deviceId}0.bücher.example", "static.example.com"],
        uri: [
          "urn:acme:{batch}:{deviceId}",
          "https://{deviceId}.devices.example.com:8443/{deviceId}?b={batch}",
        ],
      },
    };
    const p = resolveProfile(declared);
    const model = "FG.100";
    const reference = (id: string) => {
      const fill = (t: string) =>
        t.replaceAll("{deviceId}", id).replaceAll("{batch}", BATCH).replaceAll("{model}", model);
      return {
        commonName: checkDirectoryString(fill(declared.subject!.commonName!), "cn", 64),
        dns: declared.sans!.dns!.map((d) => checkDnsName(fill(d), "dns")),
        uri: declared.sans!.uri!.map((u) => checkUri(fill(u), "uri").uri),
      };
    };
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 9_999_999 }), (i) => {
        const id = `${model}-${String(i).padStart(7, "0")}`;
        const n = deviceNames(p, id, BATCH, model);
        expect({ commonName: n.commonName, dns: n.san.dns, uri: n.san.uri }).toEqual(reference(id));
      }),
      { numRuns: 500, seed: 7 },
    );
    // an ID outside the batch's shape gets the full check, not the batch's cached one
    expect(deviceNames(p, "other", BATCH, model).san.dns[0]).toBe("other.devices.example.com");
    expect(thrown(() => deviceNames(p, "a_b", BATCH, model)).message).toMatch(/'_' is not allowed/);
  });

  it("is not reused after the profile changes", () => {
    const p = resolveProfile({ sans: { dns: ["{deviceId}.devices.example.com"] } });
    expect(deviceNames(p, DEVICE, BATCH, MODEL).san.dns).toEqual(["fg100-0000042.devices.example.com"]);
    p.sans.dns[0] = "*.{deviceId}.example.com";
    expect(thrown(() => deviceNames(p, DEVICE, BATCH, MODEL)).message).toMatch(/wildcards are not allowed/);
  });

  it("names a caller builds itself are checked and normalized by the template", () => {
    const t = compileTemplate(resolveProfile({}), material(), new Date());
    expect(thrown(() => t.issue(randomSerial(), "fg\n1", deviceKey)).field).toBe(
      "profile.subject.commonName",
    );
    expect(thrown(() => t.issue(randomSerial(), "fg1", deviceKey, { dns: ["a b"] })).field).toBe(
      "profile.sans.dns[0]",
    );
    expect(thrown(() => t.issue(randomSerial(), "fg1", deviceKey, { email: ["a@b.example"] })).field).toBe(
      "profile.sans.email",
    );
    const der = t.issue(randomSerial(), "fg1", deviceKey, { dns: ["Dev.Example.com"], uri: ["URN:acme:1"] });
    expect(new crypto.X509Certificate(der).subjectAltName).toBe("DNS:dev.example.com, URI:urn:acme:1");
    // deviceNames' output cannot be altered behind the template's back
    const n = deviceNames(
      resolveProfile({ sans: { dns: ["{deviceId}.example.com"] } }),
      DEVICE,
      BATCH,
      MODEL,
    );
    expect(() => n.san.dns.push("evil\n.com")).toThrow(TypeError);
  });
});
