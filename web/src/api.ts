// The JSON API as the pages use it: requests with the login cookie, errors turned into words the
// user can act on (the server's own message when it gives one), and a trip to the login page
// when the session is gone.

/** An error from the server, in words, with the server's error kind when it gave one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly kind: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** The message of `{"error": {"kind", "message"}}`, or a description of an unexpected body. */
export function errorFromBody(status: number, body: string): ApiError {
  try {
    const parsed: unknown = JSON.parse(body);
    if (typeof parsed === "object" && parsed !== null && "error" in parsed) {
      const error = (parsed as { error: unknown }).error;
      if (typeof error === "object" && error !== null) {
        const { kind, message } = error as { kind?: unknown; message?: unknown };
        if (typeof message === "string") {
          return new ApiError(message, status, typeof kind === "string" ? kind : "unknown");
        }
      }
    }
  } catch {
    // Not JSON: described below.
  }
  const text = body.trim().slice(0, 200);
  return new ApiError(text ? `the server answered ${status}: ${text}` : `the server answered ${status}`, status, "unknown");
}

/** Words for anything a request can throw. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof TypeError) return "the server cannot be reached (network error)";
  if (error instanceof Error) return error.message;
  return String(error);
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
}

/** Sends a request; JSON in, JSON (or nothing, for 204) out. */
export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const init: RequestInit = { method: options.method ?? "GET", headers: { accept: "application/json" }, credentials: "same-origin" };
  if (options.signal) init.signal = options.signal;
  if (options.body !== undefined) {
    init.body = JSON.stringify(options.body);
    init.headers = { accept: "application/json", "content-type": "application/json" };
  }
  const response = await fetch(path, init);
  if (response.status === 401 && !location.search.includes("link=")) {
    location.assign("/login");
  }
  const text = await response.text();
  if (!response.ok) throw errorFromBody(response.status, text);
  return (text ? JSON.parse(text) : undefined) as T;
}

export interface ContainerState {
  status: "created" | "running" | "restarting" | "exited" | "removing" | "dead";
  pid: number | null;
  exit_code: number | null;
  oom_killed: boolean;
  error: string | null;
  started_at: string | null;
  finished_at: string | null;
  restart_count: number;
}

export interface ContainerSummary {
  id: string;
  name: string;
  image: string;
  image_id: string;
  command: string[];
  created: string;
  state: ContainerState;
  labels: Record<string, string>;
  /** The engine it lives on, and whether that engine answers (a down one's are last known). */
  engine?: string;
  engine_available?: boolean;
}

/** One engine of the server (`GET /api/engines`). */
export interface EngineStatus {
  name: string;
  backend: string;
  address: string;
  available: boolean;
  error: string | null;
  since: string;
  default: boolean;
}

export interface ContainerDetails {
  id: string;
  name: string;
  image: string;
  image_id: string;
  created: string;
  config: Record<string, unknown> & { tty?: boolean; open_stdin?: boolean };
  path: string;
  args: string[];
  env: string[];
  state: ContainerState;
}

export interface Stats {
  read_at: string;
  cpu_total_ns: number;
  online_cpus: number;
  memory_bytes: number;
  memory_limit_bytes: number | null;
  pids: number;
  pids_limit: number | null;
}

export interface ImageSummary {
  id: string;
  tags: string[];
  created: string | null;
  size: number;
}

export interface TerminalInfo {
  id: string;
  container_id: string;
  kind: "attach" | "exec";
  exec_id?: string;
  owner: string;
  created_at: string;
  size: { rows: number; cols: number } | null;
  clients: { client: number; name: string; role: string; via_link: boolean }[];
  output_bytes: number;
  ended: boolean;
  exit_code: number | null;
}

export interface ShareLink {
  id: string;
  role: "viewer" | "writer";
  expires_at: string;
  created_at?: string;
  revoked?: boolean;
  secret?: string;
  url?: string;
}
