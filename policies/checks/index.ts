/**
 * The check catalog: every check in policies/checks/<area>/<ID>.ts, listed once. Explicit imports (not a
 * directory scan) so the catalog works the same under tsx, ts-node (the Pulumi engine) and bundlers;
 * test/policies/catalog.test.ts fails when a file is missing here or an entry has no file.
 */
import type { Check } from "../check";
import { check as CA001 } from "./ca/FG-CA-001";
import { check as CA002 } from "./ca/FG-CA-002";
import { check as CA003 } from "./ca/FG-CA-003";
import { check as CERT001 } from "./certificates/FG-CERT-001";
import { check as CERT002 } from "./certificates/FG-CERT-002";
import { check as CERT003 } from "./certificates/FG-CERT-003";
import { check as HUB001 } from "./hubs/FG-HUB-001";
import { check as HUB002 } from "./hubs/FG-HUB-002";
import { check as HUB003 } from "./hubs/FG-HUB-003";
import { check as HUB004 } from "./hubs/FG-HUB-004";
import { check as ID001 } from "./identity/FG-ID-001";
import { check as ID002 } from "./identity/FG-ID-002";
import { check as ID003 } from "./identity/FG-ID-003";
import { check as KEY001 } from "./keys/FG-KEY-001";
import { check as KEY002 } from "./keys/FG-KEY-002";
import { check as KEY003 } from "./keys/FG-KEY-003";
import { check as LIFE001 } from "./lifecycle/FG-LIFE-001";
import { check as LIFE002 } from "./lifecycle/FG-LIFE-002";
import { check as LIFE003 } from "./lifecycle/FG-LIFE-003";
import { check as REV001 } from "./revocation/FG-REV-001";
import { check as REV002 } from "./revocation/FG-REV-002";
import { check as REV003 } from "./revocation/FG-REV-003";
import { check as REV004 } from "./revocation/FG-REV-004";
import { check as REV005 } from "./revocation/FG-REV-005";
import { check as REV006 } from "./revocation/FG-REV-006";
import { check as ROT001 } from "./rotation/FG-ROT-001";

/** Every check, in catalog order (by area, then id). */
export const catalog: readonly Check[] = [
  KEY001,
  KEY002,
  KEY003,
  CERT001,
  CERT002,
  CERT003,
  CA001,
  CA002,
  CA003,
  ID001,
  ID002,
  ID003,
  LIFE001,
  LIFE002,
  LIFE003,
  ROT001,
  REV001,
  REV002,
  REV003,
  REV004,
  REV005,
  REV006,
  HUB001,
  HUB002,
  HUB003,
  HUB004,
];

export const checkIds: ReadonlySet<string> = new Set(catalog.map((c) => c.id));

export function getCheck(id: string): Check | undefined {
  return catalog.find((c) => c.id === id);
}
