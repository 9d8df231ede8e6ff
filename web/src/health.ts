// Reads the server's health endpoint and turns it into what the page shows.

export interface Health {
  status: string;
  version: string;
  engine: string;
}

/** Parses the JSON body of `GET /healthz`, rejecting anything that is not a health report. */
export function parseHealth(body: unknown): Health {
  if (typeof body !== "object" || body === null) {
    throw new Error("health report is not an object");
  }
  const record = body as Record<string, unknown>;
  const field = (name: string): string => {
    const value = record[name];
    if (typeof value !== "string") {
      throw new Error(`health report field "${name}" is missing or not a string`);
    }
    return value;
  };
  return { status: field("status"), version: field("version"), engine: field("engine") };
}

/** One line for the status bar. */
export function describeHealth(health: Health): string {
  const state = health.status === "ok" ? "running" : `unhealthy (${health.status})`;
  return `Porthole ${health.version} — ${state}, engine: ${health.engine}`;
}
