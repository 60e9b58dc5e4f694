// Names in certificates (RFC 5280 4.1.2.4, 4.2.1.6, 4.2.1.10): DirectoryString values, dNSName
// (LDH, A-labels), URIs (RFC 3986, scheme list), name-constraint matching, and the CA subjects
// that core/ca encodes with them; CA certificates checked with OpenSSL.
import { domainToUnicode } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { issueCa, validateCaRequest } from "../../../core/ca";
import { FleetError } from "../../../core/errors";
import { encodeSubject, subjectErrors, subjectString } from "../../../core/x509/names";
import { pemOne } from "../../../core/x509/pem";
import {
  chainNameConstraints,
  checkDirectoryString,
  checkDnsName,
  checkNameConstraints,
  checkPrintableString,
  checkUri,
  dnsWithin,
  shown,
  uriHostWithin,
} from "../../../core/x509/validate-names";
import { x509Text } from "../../helpers/openssl";

// biome-ignore lint/suspicious/noControlCharactersInRegex: what no message may contain
const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;
const LDH = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** The FleetError `f` throws. */
function thrown(f: () => unknown): FleetError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FleetError);
    return e as FleetError;
  }
  throw new Error("expected a FleetError, nothing was thrown");
}

describe("DirectoryString values", () => {
  const bad: Array<[string, string, RegExp]> = [
    [
      "NUL",
      "Acme\u0000Evil",
      /"Acme\\u0000Evil", want a name without control characters.*U\+0000 at position 5/,
    ],
    ["newline", "Acme\nO=Admin", /"Acme\\nO=Admin".*U\+000A at position 5/],
    ["DEL", "Acme\u007f", /"Acme\\u007F"/],
    ["C1 NEL", "Acme\u0085", /"Acme\\u0085"/],
    ["C1 CSI", "Acme\u009b31m", /"Acme\\u009B31m"/],
    ["a bidi override", "Acme\u202egnp.exe", /"Acme\\u202Egnp.exe"/],
    ["a line separator", "Acme\u2028x", /"Acme\\u2028x"/],
    ["an unpaired surrogate", "Acme\ud800", /"Acme\\uD800".*unpaired surrogates/],
    ["a noncharacter", "Acme\uffff", /"Acme\\uFFFF"/],
  ];
  it.each(bad)("refuses %s, naming the field and escaping the value", (_, v, msg) => {
    const e = thrown(() => checkDirectoryString(v, "profile.subject.organization", 64));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.field).toBe("profile.subject.organization");
    expect(e.message).toMatch(/^profile\.subject\.organization: got "/);
    expect(e.message).toMatch(msg);
    expect(e.message).not.toMatch(RAW_CONTROL);
  });

  it("counts characters, not UTF-16 units, against the RFC 5280 upper bound", () => {
    expect(checkDirectoryString("ü".repeat(64), "f", 64)).toBe("ü".repeat(64));
    // 64 astral characters are 128 UTF-16 units and still 64 characters
    expect(checkDirectoryString("🛰".repeat(64), "f", 64)).toHaveLength(128);
    expect(thrown(() => checkDirectoryString("a".repeat(65), "f", 64)).message).toMatch(
      /want at most 64 characters \(RFC 5280 upper bound; got 65\)/,
    );
  });

  it("accepts names in any script, and refuses what is not a non-empty string", () => {
    for (const v of ["Müller GmbH", "株式会社 Acme", "Ελλάδα", "O'Brien & Sons (EU)"])
      expect(checkDirectoryString(v, "f", 64)).toBe(v);
    for (const v of ["", 5, null, undefined, ["a"]])
      expect(thrown(() => checkDirectoryString(v, "f", 64)).code).toBe("INVALID_INPUT");
  });

  it("PrintableString values fit PrintableString", () => {
    expect(checkPrintableString("SN-0001 (a/b)", "f", 64)).toBe("SN-0001 (a/b)");
    for (const v of ["a_b", "a@b", "Müller", "a*b"])
      expect(thrown(() => checkPrintableString(v, "f", 64)).message).toMatch(
        /PrintableString characters only/,
      );
  });

  it("shows values quoted and escaped, cut at 60 characters", () => {
    expect(shown('a"b\\c\n\t\u0000\u{e0001}')).toBe('"a\\"b\\\\c\\n\\t\\u0000\\u{E0001}"');
    expect(shown("x".repeat(100))).toBe(`"${"x".repeat(60)}"...`);
    expect(shown("bücher 日本")).toBe('"bücher 日本"');
  });
});

describe("CA subjects (core/x509/names, as core/ca uses them)", () => {
  it("refuses control characters in a CA subject before the CA is made (it was signed before)", () => {
    const req = {
      name: "root",
      role: "root" as const,
      algorithm: "ecdsa-p256" as const,
      subject: { commonName: "Root\nCN=Evil", organization: "Acme\u0000" },
      validityDays: 30,
    };
    const failures = validateCaRequest(req);
    expect(failures.map((f) => f.field)).toEqual(["subject.organization", "subject.commonName"]);
    expect(failures.map((f) => f.message).join(" ")).not.toMatch(RAW_CONTROL);
    const e = thrown(() => issueCa(req));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.message).toContain('subject.commonName: got "Root\\nCN=Evil"');
    expect(() => encodeSubject(req.subject)).toThrow(FleetError);
  });

  it("encodes DirectoryStrings as UTF8String, countryName and serialNumber as PrintableString", () => {
    const der = encodeSubject({ commonName: "Müller", country: "DE", serialNumber: "0001" });
    const tagOf = (value: string) => der[der.indexOf(Buffer.from(value)) - 2];
    expect(tagOf("DE")).toBe(0x13);
    expect(tagOf("0001")).toBe(0x13);
    expect(tagOf("Müller")).toBe(0x0c);
    expect(subjectErrors({ commonName: "x", serialNumber: "a_1" }, "subject")[0]).toMatch(
      /^subject\.serialNumber: got "a_1", want PrintableString characters only/,
    );
    expect(subjectErrors({ commonName: "x", country: "de" }, "subject")[0]).toMatch(/ISO 3166/);
    expect(subjectString({ commonName: "a\nb" })).toBe("CN=a\\nb");
  });

  it("a CA named in another script parses with OpenSSL", () => {
    const ca = issueCa({
      name: "root",
      role: "root",
      algorithm: "ecdsa-p256",
      subject: { commonName: "Wurzel Zertifizierungsstelle", organization: "Bücher GmbH", serialNumber: "7" },
      validityDays: 30,
    });
    const text = x509Text(ca.certificatePem);
    expect(text).toMatch(/Subject: .*serialNumber ?= ?7/);
    expect(text).toMatch(/O ?= ?B(\\C3\\BC|ü)cher GmbH/);
  });
});

describe("dNSName", () => {
  const good: Array<[string, string]> = [
    ["device-1.example.com", "device-1.example.com"],
    ["Dev.Example.COM", "dev.example.com"],
    ["bücher.example", "xn--bcher-kva.example"],
    ["BÜCHER.example", "xn--bcher-kva.example"],
    ["xn--bcher-kva.example", "xn--bcher-kva.example"],
    ["faß.de", "xn--fa-hia.de"],
    ["日本.example", "xn--wgv71a.example"],
    ["localhost", "localhost"],
    ["1.example.com", "1.example.com"],
    [`${"a".repeat(63)}.com`, `${"a".repeat(63)}.com`],
  ];
  it.each(good)("accepts %s as %s", (v, want) => {
    expect(checkDnsName(v, "f")).toBe(want);
  });

  const bad: Array<[string, RegExp]> = [
    [
      "*.example.com",
      /^f: got "\*\.example\.com", want an LDH host name \(wildcards are not allowed by policy\)$/,
    ],
    ["evil\n.com", /"evil\\n\.com".*no control or invisible characters \(found U\+000A at position 5\)/],
    ["evil\t.com", /"evil\\t\.com"/],
    ["a b,c", /"a b,c", want an LDH host name: ' ' \(space\) is not allowed/],
    ["a_b.example.com", /'_' is not allowed/],
    ["a,b.example.com", /',' is not allowed/],
    ["a%41.com", /'%' is not allowed/],
    ["-a.example.com", /no label starting or ending with '-'/],
    ["a-.example.com", /no label starting or ending with '-'/],
    ["ab--c.example.com", /reserved for IDNA A-labels/],
    ["xn--zz.example.com", /IDNA can convert to A-labels/],
    ["example.com.", /no trailing dot/],
    ["a..example.com", /no empty label/],
    [`${"a".repeat(64)}.com`, /labels of at most 63 characters/],
    [`${"a.".repeat(127)}com`, /at most 253 characters/],
    ["1.2.3.4", /IPv4/],
    ["0x7f.1", /IPv4/],
    ["１２７.０.０.１", /IPv4/],
    ["x\u200b.example.com", /invisible characters \(found U\+200B/],
    ["x\u0085.com", /U\+0085/],
    ["", /a non-empty name/],
  ];
  it.each(bad)("refuses %j", (v, msg) => {
    const e = thrown(() => checkDnsName(v, "f"));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.message).toMatch(msg);
    expect(e.message).not.toMatch(RAW_CONTROL);
  });

  it("accepts a leftmost wildcard only when the rules allow it", () => {
    const rules = { allowWildcardDns: true };
    expect(checkDnsName("*.Example.com", "f", rules)).toBe("*.example.com");
    expect(thrown(() => checkDnsName("*.com", "f", rules)).message).toMatch(/at least two labels/);
    expect(thrown(() => checkDnsName("a.*.com", "f", rules)).message).toMatch(
      /'\*' only as the whole leftmost/,
    );
    expect(thrown(() => checkDnsName("*a.example.com", "f", rules)).message).toMatch(/'\*' only/);
    expect(thrown(() => checkDnsName("a.*.com", "f")).message).toMatch(/wildcards are not allowed by policy/);
  });

  it("refuses what is not a string", () => {
    for (const v of [undefined, null, 3, {}]) expect(thrown(() => checkDnsName(v, "f")).field).toBe("f");
  });

  it("every accepted name is LDH, ASCII and a fixed point, and round-trips through its U-labels", () => {
    const alphabet = [
      ..."abzAZ09-.",
      "ü",
      "é",
      "ß",
      "日",
      "я",
      "Ω",
      "_",
      " ",
      "*",
      "\n",
      "。",
      "xn--",
      "\u0301",
    ];
    const names = fc
      .array(fc.constantFrom(...alphabet), { minLength: 1, maxLength: 40 })
      .map((parts) => parts.join(""));
    let accepted = 0;
    fc.assert(
      fc.property(names, (v) => {
        let out: string;
        try {
          out = checkDnsName(v, "f");
        } catch (e) {
          expect(e).toBeInstanceOf(FleetError);
          expect((e as FleetError).message).not.toMatch(RAW_CONTROL);
          return;
        }
        accepted++;
        expect(out).toMatch(LDH);
        expect(Buffer.from(out, "latin1").toString("ascii")).toBe(out);
        expect(checkDnsName(out, "f")).toBe(out);
        expect(checkDnsName(domainToUnicode(out), "f")).toBe(out);
      }),
      { numRuns: 3000, seed: 9 },
    );
    // the generator must reach the accepting side often enough to mean something
    expect(accepted).toBeGreaterThan(300);
  });
});

describe("URIs", () => {
  const good: Array<[string, string, string | undefined]> = [
    ["urn:acme:device:fg100-0000001", "urn:acme:device:fg100-0000001", undefined],
    ["URN:acme:x", "urn:acme:x", undefined],
    [
      "spiffe://devices.example.com/fleet/fg100-1",
      "spiffe://devices.example.com/fleet/fg100-1",
      "devices.example.com",
    ],
    [
      "https://Devices.Example.com:8443/d/1?a=b#c",
      "https://devices.example.com:8443/d/1?a=b#c",
      "devices.example.com",
    ],
    ["https://h.example/%C3%BC", "https://h.example/%C3%BC", "h.example"],
  ];
  it.each(good)("accepts %s", (v, uri, host) => {
    const u = checkUri(v, "f");
    expect(u.uri).toBe(uri);
    expect(u.host).toBe(host);
  });

  const bad: Array<[string, RegExp]> = [
    [
      "javascript:alert(1)",
      /^f: got "javascript:alert\(1\)", want a URI whose scheme is one of urn, https, spiffe/,
    ],
    ["http://h.example/", /scheme is one of urn, https, spiffe/],
    ["urn:acme:a b", /without spaces or control characters \(found U\+0020/],
    ["urn:acme:a\nb", /"urn:acme:a\\nb"/],
    ["urn:acme:a\u0000", /U\+0000/],
    ["urn:acme:café", /an ASCII URI .* e\.g\. "urn:acme:caf%C3%A9"/],
    ["https://bücher.example/", /e\.g\. "https:\/\/xn--bcher-kva\.example\/"/],
    ["urn:acme:<script>", /'<' must be percent-encoded/],
    ["urn:acme:{deviceId}", /'\{' must be percent-encoded/],
    ["urn:acme:%zz", /'%' followed by two hex digits/],
    ["acme", /starts with a scheme/],
    ["1urn:x:y", /starts with a scheme/],
    ["https:", /scheme-specific part/],
    ["https:/path", /an https URI with a host/],
    ["https://user:pw@h.example/", /without user information/],
    ["https://[::1]/", /host is a DNS name/],
    ["https://h_1.example/", /a URI whose host is an LDH host name: '_' is not allowed/],
    ["https://h.example:99999/", /a port of 0\.\.65535/],
    ["https://h.example/a#b#c", /one '#' at most/],
    ["urn:a:b", /a URN like urn:<namespace>:<name>/],
    ["urn:x", /a URN like/],
    ["spiffe://example.org/a//b", /SPIFFE ID whose path segments/],
    ["spiffe://example.org/a?x", /SPIFFE ID without query/],
    ["spiffe://example.org:443/a", /a SPIFFE ID like/],
  ];
  it.each(bad)("refuses %j", (v, msg) => {
    const e = thrown(() => checkUri(v, "f"));
    expect(e.code).toBe("INVALID_INPUT");
    expect(e.message).toMatch(msg);
    expect(e.message).not.toMatch(RAW_CONTROL);
  });

  it("takes its scheme list from the rules", () => {
    expect(checkUri("mqtts://broker.example/x", "f", { allowedUriSchemes: ["mqtts"] }).host).toBe(
      "broker.example",
    );
    expect(thrown(() => checkUri("urn:a:b1", "f", { allowedUriSchemes: ["mqtts"] })).message).toMatch(
      /scheme is one of mqtts \(the policy's allowed URI schemes\)/,
    );
    expect(thrown(() => checkUri(7, "f")).field).toBe("f");
  });
});

describe("name-constraint matching (RFC 5280 4.2.1.10, as OpenSSL and Go match)", () => {
  it("dNSName: zero or more labels added on the left; a leading dot means below only", () => {
    expect(dnsWithin("example.com", "example.com")).toBe(true);
    expect(dnsWithin("a.b.Example.com", "example.COM")).toBe(true);
    expect(dnsWithin("badexample.com", "example.com")).toBe(false);
    expect(dnsWithin("example.com", ".example.com")).toBe(false);
    expect(dnsWithin("a.example.com", ".example.com")).toBe(true);
    expect(dnsWithin("anything", "")).toBe(true);
  });

  it("URI hosts: a leading dot means below only, otherwise exactly that host", () => {
    expect(uriHostWithin("host.example.com", "host.example.com")).toBe(true);
    expect(uriHostWithin("a.host.example.com", "host.example.com")).toBe(false);
    expect(uriHostWithin("my.host.example.com", ".example.com")).toBe(true);
    expect(uriHostWithin("example.com", ".example.com")).toBe(false);
  });

  const root = issueCa({
    name: "root",
    role: "root",
    algorithm: "ecdsa-p256",
    subject: { commonName: "NC Root" },
    validityDays: 30,
    nameConstraints: { permittedDNS: ["devices.example.com"], permittedURI: [".devices.example.com"] },
  });
  const issuing = issueCa(
    {
      name: "iss",
      role: "issuing",
      algorithm: "ecdsa-p256",
      subject: { commonName: "NC Issuing" },
      validityDays: 20,
      nameConstraints: { excludedDNS: ["lab.devices.example.com"] },
    },
    { name: "root", ...root },
  );
  const chain = [
    pemOne(issuing.certificatePem, "CERTIFICATE", "c"),
    pemOne(root.certificatePem, "CERTIFICATE", "c"),
  ];
  const fields = { dns: "dns", uri: "uri", commonName: "cn" };

  it("reads the constraints of every CA of the chain from the certificates", () => {
    expect(chainNameConstraints(chain)).toEqual([
      {
        ca: "NC Issuing",
        permittedDNS: [],
        excludedDNS: ["lab.devices.example.com"],
        permittedURI: [],
        excludedURI: [],
      },
      {
        ca: "NC Root",
        permittedDNS: ["devices.example.com"],
        excludedDNS: [],
        permittedURI: [".devices.example.com"],
        excludedURI: [],
      },
    ]);
  });

  it("refuses names outside the permitted or inside the excluded subtrees of any CA above", () => {
    const nc = chainNameConstraints(chain);
    const check = (
      dns: string[],
      uris: string[] = [],
      hosts: Array<string | undefined> = [],
      commonName = "d1",
    ) => checkNameConstraints({ dns, uris, hosts, commonName, fields }, nc, () => "device d1");
    expect(() =>
      check(["d1.devices.example.com"], ["https://d1.devices.example.com/"], ["d1.devices.example.com"]),
    ).not.toThrow();
    expect(thrown(() => check(["d1.other.example"])).message).toBe(
      "dns[0]: got \"d1.other.example\", want a name within issuer 'NC Root' permitted subtrees [devices.example.com] (device d1)",
    );
    expect(thrown(() => check(["ok.devices.example.com", "x.lab.devices.example.com"])).message).toMatch(
      /^dns\[1\]: .*outside issuer 'NC Issuing' excluded subtree lab\.devices\.example\.com/,
    );
    expect(thrown(() => check([], ["https://h.other.example/"], ["h.other.example"])).message).toMatch(
      /^uri\[0\]: .*permitted URI subtrees \[\.devices\.example\.com\]/,
    );
    expect(thrown(() => check([], ["urn:acme:d1"], [undefined])).message).toMatch(
      /^uri\[0\]: .*a URI with a host/,
    );
    // no dNSName: a host-like CN is what OpenSSL checks instead
    expect(thrown(() => check([], [], [], "d1.other.example")).field).toBe("cn");
    expect(() => check([], [], [], "d1")).not.toThrow();
  });

  it("a wildcard that covers an excluded host is refused", () => {
    const names = { dns: ["*.devices.example.com"], uris: [], hosts: [], fields };
    expect(thrown(() => checkNameConstraints(names, chainNameConstraints(chain))).message).toMatch(
      /excluded subtree lab\.devices\.example\.com/,
    );
  });
});
