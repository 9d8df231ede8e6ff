// Pure logic of the launch form: turning what was typed (a command line, env lines, limits,
// mounts) into the API's container configuration, with errors that name the field.

import { parseSize } from "../format.ts";

export interface LaunchForm {
  image: string;
  name: string;
  command: string;
  env: string;
  user: string;
  workingDir: string;
  tty: boolean;
  interactive: boolean;
  restart: string;
  maxRetries: string;
  memory: string;
  cpus: string;
  pids: string;
  mounts: string;
  network: string;
  autoRemove: boolean;
}

/** What one click launches: a shell in busybox with a terminal. */
export const DEFAULT_LAUNCH: LaunchForm = {
  image: "busybox:latest",
  name: "",
  command: "sh",
  env: "",
  user: "",
  workingDir: "",
  tty: true,
  interactive: true,
  restart: "no",
  maxRetries: "",
  memory: "",
  cpus: "",
  pids: "",
  mounts: "",
  network: "none",
  autoRemove: false,
};

/** A form field that holds a mistake, and what is wrong with it. */
export class FieldError extends Error {
  constructor(
    readonly field: keyof LaunchForm,
    message: string,
  ) {
    super(message);
    this.name = "FieldError";
  }
}

/**
 * Splits a command line into arguments the way a POSIX shell would for simple cases: spaces
 * separate, single quotes keep everything, double quotes keep spaces (with `\"` and `\\`),
 * backslash escapes one character. No expansion happens: the container runs it as given.
 */
export function splitCommand(line: string): string[] {
  const args: string[] = [];
  let current = "";
  let inWord = false;
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (quote === "'") {
      if (c === "'") quote = null;
      else current += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "\\" && (line[i + 1] === '"' || line[i + 1] === "\\")) current += line[++i];
      else current += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < line.length) {
      current += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) args.push(current);
      current = "";
      inWord = false;
    } else {
      current += c;
      inWord = true;
    }
  }
  if (quote) throw new Error(`unclosed ${quote === "'" ? "single" : "double"} quote`);
  if (inWord) args.push(current);
  return args;
}

export type Mount =
  | { type: "bind"; source: string; target: string; read_only: boolean }
  | { type: "volume"; name: string; target: string; read_only: boolean }
  | { type: "tmpfs"; target: string; size_bytes: number };

/** One mount per line: `/host/path:/target[:ro]`, `volume-name:/target[:ro]` or `tmpfs:/target[:size]`. */
export function parseMounts(text: string): Mount[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const parts = line.split(":");
      const [source, target, option] = parts;
      if (parts.length < 2 || parts.length > 3 || !source || !target || !target.startsWith("/")) {
        throw new Error(`"${line}" is not source:/target[:ro]`);
      }
      if (source === "tmpfs") {
        return { type: "tmpfs", target, size_bytes: option ? parseSize(option) : 0 };
      }
      if (option !== undefined && option !== "ro" && option !== "rw") throw new Error(`"${line}": the option must be ro or rw`);
      const read_only = option === "ro";
      return source.startsWith("/") ? { type: "bind", source, target, read_only } : { type: "volume", name: source, target, read_only };
    });
}

/** `KEY=value` lines; blank lines and `#` comments are skipped. */
export function parseEnv(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => {
      if (!/^[^=\s]+=/.test(line)) throw new Error(`"${line}" is not KEY=value`);
      return line;
    });
}

function field<T>(name: keyof LaunchForm, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new FieldError(name, (error as Error).message);
  }
}

/** The `POST /api/containers` body for a form, or a {@link FieldError}. */
export function buildConfig(form: LaunchForm): Record<string, unknown> {
  const image = form.image.trim();
  if (!image) throw new FieldError("image", "choose an image");
  const config: Record<string, unknown> = { image, tty: form.tty, open_stdin: form.interactive };
  if (form.name.trim()) {
    const name = form.name.trim();
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) throw new FieldError("name", "a name uses letters, digits, _ . - and starts with a letter or digit");
    config["name"] = name;
  }
  const command = field("command", () => splitCommand(form.command));
  if (command.length > 0) config["cmd"] = command;
  const env = field("env", () => parseEnv(form.env));
  if (env.length > 0) config["env"] = env;
  if (form.user.trim()) config["user"] = form.user.trim();
  if (form.workingDir.trim()) {
    if (!form.workingDir.trim().startsWith("/")) throw new FieldError("workingDir", "the working directory must be an absolute path");
    config["working_dir"] = form.workingDir.trim();
  }
  const resources: Record<string, number> = {};
  if (form.memory.trim()) resources["memory_bytes"] = field("memory", () => parseSize(form.memory));
  if (form.cpus.trim()) {
    const cpus = Number(form.cpus);
    if (!(cpus > 0) || cpus > 1024) throw new FieldError("cpus", "CPUs must be a number above 0, such as 0.5 or 2");
    resources["cpu_millis"] = Math.round(cpus * 1000);
  }
  if (form.pids.trim()) {
    const pids = Number(form.pids);
    if (!Number.isInteger(pids) || pids < 1) throw new FieldError("pids", "the process limit must be a whole number above 0");
    resources["pids_limit"] = pids;
  }
  if (Object.keys(resources).length > 0) config["resources"] = resources;
  if (form.restart === "on-failure") {
    const retries = form.maxRetries.trim() ? Number(form.maxRetries) : 0;
    if (!Number.isInteger(retries) || retries < 0) throw new FieldError("maxRetries", "retries must be a whole number (0 = no limit)");
    config["restart_policy"] = { name: "on-failure", max_retries: retries };
  } else if (["always", "unless-stopped"].includes(form.restart)) {
    config["restart_policy"] = { name: form.restart };
  }
  const mounts = field("mounts", () => parseMounts(form.mounts));
  if (mounts.length > 0) config["mounts"] = mounts;
  if (form.network === "host") config["network_mode"] = "host";
  if (form.autoRemove) config["auto_remove"] = true;
  return config;
}
