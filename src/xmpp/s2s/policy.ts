/**
 * Which remote domains this server federates with (issue 15 "Protection": an allowlist/blocklist
 * of domains in the config). A listed domain covers its subdomains (conference.example.org with
 * example.org). An empty allowlist allows every domain that is not blocked.
 */
export type DomainPolicy = (domain: string) => boolean;

function covers(listed: string, domain: string): boolean {
  return domain === listed || domain.endsWith(`.${listed}`);
}

export function domainPolicy(allowed: readonly string[], blocked: readonly string[]): DomainPolicy {
  const allow = allowed.map((d) => d.toLowerCase());
  const block = blocked.map((d) => d.toLowerCase());
  return (domain) => {
    const d = domain.toLowerCase();
    if (block.some((b) => covers(b, d))) return false;
    return allow.length === 0 || allow.some((a) => covers(a, d));
  };
}
