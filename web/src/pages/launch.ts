// The launch form (`/launch`): the images present to pick from, sensible defaults (one click
// runs a shell in busybox), and a launched container that opens straight into its terminal.

import { api, describeError, type EngineStatus, type ImageSummary, type TerminalInfo } from "../api.ts";
import { byId, h, notify, replace } from "../dom.ts";
import { buildConfig, DEFAULT_LAUNCH, FieldError, type LaunchForm } from "../models/launch.ts";

export function launchPage(): void {
  const form = byId<HTMLFormElement>("launch-form");
  const status = byId("launch-status");
  const submit = byId<HTMLButtonElement>("launch-submit");
  const images = byId<HTMLDataListElement>("image-choices");
  const restart = byId<HTMLSelectElement>("launch-restart");
  const retries = byId<HTMLElement>("launch-retries-field");

  const input = (name: keyof LaunchForm) => form.elements.namedItem(name) as HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement;

  // Defaults first (and whatever ?image= asks for, from the images page).
  for (const [name, value] of Object.entries(DEFAULT_LAUNCH) as [keyof LaunchForm, string | boolean][]) {
    const element = input(name);
    if (!element) continue;
    if (element instanceof HTMLInputElement && element.type === "checkbox") element.checked = value as boolean;
    else element.value = value as string;
  }
  const wanted = new URLSearchParams(location.search).get("image");
  if (wanted) input("image").value = wanted;
  restart.addEventListener("change", () => (retries.hidden = restart.value !== "on-failure"));
  retries.hidden = true;

  const engine = byId<HTMLSelectElement>("launch-engine");
  const engineField = byId("launch-engine-field");
  const engineQuery = () => (engine.value ? `engine=${encodeURIComponent(engine.value)}` : "");

  /** The images present on the chosen engine, as suggestions (the field takes any reference). */
  function loadImages(): void {
    void api<ImageSummary[]>(`/api/images?${engineQuery()}`)
      .then((list) => replace(images, ...list.flatMap((image) => image.tags).sort().map((tag) => h("option", { value: tag }))))
      .catch(() => replace(images));
  }
  // With several engines, the user picks one (the default first); with one, nothing to pick.
  void api<EngineStatus[]>("/api/engines")
    .then((engines) => {
      if (engines.length > 1) {
        const ordered = [...engines].sort((a, b) => Number(b.default) - Number(a.default));
        replace(engine, ...ordered.map((e) => h("option", { value: e.name, disabled: !e.available }, `${e.name} (${e.backend}${e.available ? "" : ", unavailable"})`)));
        engineField.hidden = false;
      }
    })
    .catch(() => {})
    .finally(loadImages);
  engine.addEventListener("change", loadImages);

  function read(): LaunchForm {
    const values = {} as Record<string, string | boolean>;
    for (const name of Object.keys(DEFAULT_LAUNCH)) {
      const element = input(name as keyof LaunchForm);
      values[name] = element instanceof HTMLInputElement && element.type === "checkbox" ? element.checked : element.value;
    }
    return values as unknown as LaunchForm;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const marked of form.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
    let config: Record<string, unknown>;
    const values = read();
    try {
      config = buildConfig(values);
    } catch (error) {
      if (error instanceof FieldError) {
        const element = input(error.field);
        element.setAttribute("aria-invalid", "true");
        element.focus();
        notify(status, `${element.labels?.[0]?.firstChild?.textContent?.trim() ?? error.field}: ${error.message}`);
      } else {
        notify(status, describeError(error));
      }
      return;
    }
    submit.disabled = true;
    void launch(config, values)
      .catch((error: unknown) => {
        const message = describeError(error);
        notify(status, /no such image|not found/i.test(message) && !/created/.test(message) ? `${message}. Pull it on the Images page first.` : message);
      })
      .finally(() => (submit.disabled = false));
  });

  async function launch(config: Record<string, unknown>, values: LaunchForm): Promise<void> {
    notify(status, "Creating and starting the container…", "busy");
    const { id } = await api<{ id: string }>(`/api/containers?start=true&${engineQuery()}`, { method: "POST", body: config });
    if (values.tty || values.interactive) {
      notify(status, "Started; opening its terminal…", "busy");
      const terminal = await api<TerminalInfo>(`/api/containers/${encodeURIComponent(id)}/terminals`, { method: "POST", body: { kind: "attach" } });
      location.assign(`/terminals/${encodeURIComponent(terminal.id)}`);
    } else {
      location.assign(`/containers/${encodeURIComponent(id)}#logs`);
    }
  }
}
