/** CaHierarchy's CRL arguments: which distribution points name each CA's CRL (pure, no engine). */
import { describe, expect, it } from "vitest";
import { crlUrlsByCa, planHierarchy } from "../../components/CaHierarchy";

describe("crlUrlsByCa", () => {
  it("gives each CA the distribution points its children carry, once each", () => {
    const s = (commonName: string) => ({ commonName });
    const plan = planHierarchy({
      root: { name: "root", subject: s("Root"), validityDays: 3650, pathLen: 2 },
      intermediates: [
        {
          name: "mfg",
          subject: s("Mfg"),
          validityDays: 1825,
          pathLen: 1,
          crlDistributionPoint: "http://pki.example.com/crl/root.crl",
        },
      ],
      issuing: [
        {
          name: "a",
          subject: s("A"),
          validityDays: 730,
          crlDistributionPoint: "http://pki.example.com/crl/mfg.crl",
        },
        {
          name: "b",
          subject: s("B"),
          validityDays: 730,
          crlDistributionPoint: "http://pki.example.com/crl/mfg.crl",
        },
        { name: "c", subject: s("C"), validityDays: 730 },
      ],
    });
    expect(crlUrlsByCa(plan)).toEqual({
      root: ["http://pki.example.com/crl/root.crl"],
      mfg: ["http://pki.example.com/crl/mfg.crl"],
      a: [],
      b: [],
      c: [],
    });
  });
});
