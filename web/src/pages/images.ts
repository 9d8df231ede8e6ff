// The images page (`/images`): the images present with tags and sizes, removal (asks first;
// offers to force when containers use the image), pulls with a progress bar per layer, and
// imports of a `docker save` or rootfs tarball with upload progress.

import { api, describeError, errorFromBody, ApiError, type EngineStatus, type ImageSummary } from "../api.ts";
import { busy, byId, confirmDialog, h, notify, replace } from "../dom.ts";
import { formatBytes, shortId } from "../format.ts";
import { PullProgress, registryOf, SseParser, type LayerProgress } from "../models/pull.ts";

export function imagesPage(): void {
  const rows = byId<HTMLTableSectionElement>("image-rows");
  const status = byId("images-status");
  const engine = byId<HTMLSelectElement>("images-engine");
  const engineQuery = () => (engine.value ? `engine=${encodeURIComponent(engine.value)}` : "");

  async function load(): Promise<void> {
    try {
      const images = await api<ImageSummary[]>(`/api/images?${engineQuery()}`);
      if (images.length === 0) {
        replace(rows, h("tr", { class: "empty" }, h("td", { colspan: 5 }, "No images. Pull one above, or import a tarball.")));
        return;
      }
      replace(rows, ...images.sort((a, b) => (a.tags[0] ?? "~").localeCompare(b.tags[0] ?? "~")).map(row));
    } catch (error) {
      notify(status, `Cannot list the images: ${describeError(error)}`);
    }
  }

  function row(image: ImageSummary): HTMLTableRowElement {
    const rowStatus = h("span", { class: "status", hidden: true });
    const name = image.tags[0] ?? shortId(image.id);
    const remove = h("button", { type: "button", class: "small danger", "data-action": "remove" }, "Remove");
    remove.addEventListener("click", () =>
      void busy(remove, rowStatus, async () => {
        if (!(await confirmDialog(`Remove ${name}?`, "Its layers are deleted unless another image shares them.", "Remove"))) return;
        try {
          await api(`/api/images/${encodeURIComponent(name)}?${engineQuery()}`, { method: "DELETE" });
        } catch (error) {
          if (!(error instanceof ApiError) || error.status !== 409) throw error;
          if (!(await confirmDialog("The image is in use", `${error.message}. Remove it anyway? The containers keep running from their layers.`, "Remove anyway"))) return;
          await api(`/api/images/${encodeURIComponent(name)}?force=true&${engineQuery()}`, { method: "DELETE" });
        }
        await load();
      }),
    );
    return h(
      "tr",
      { "data-id": image.id },
      h("td", {}, ...(image.tags.length ? image.tags.map((t) => h("span", { class: "tag mono" }, t)) : [h("span", { class: "sub" }, "untagged")])),
      h("td", { class: "mono" }, shortId(image.id)),
      h("td", { class: "num" }, formatBytes(image.size)),
      h("td", {}, image.created ? new Date(image.created).toLocaleDateString() : "–"),
      h("td", { class: "actions" }, h("a", { class: "button small", href: `/launch?image=${encodeURIComponent(name)}` }, "Launch"), remove, rowStatus),
    );
  }

  wirePull(load);
  wireImport(load);
  engine.addEventListener("change", () => void load());
  void api<EngineStatus[]>("/api/engines")
    .then((engines) => {
      if (engines.length > 1) {
        const ordered = [...engines].sort((a, b) => Number(b.default) - Number(a.default));
        replace(engine, ...ordered.map((e) => h("option", { value: e.name }, `${e.name} (${e.backend})`)));
        byId("images-engine-field").hidden = false;
      }
    })
    .catch(() => {})
    .finally(() => void load());
}

function wirePull(reload: () => Promise<void>): void {
  const form = byId<HTMLFormElement>("pull-form");
  const reference = byId<HTMLInputElement>("pull-reference");
  const insecure = byId<HTMLInputElement>("pull-insecure");
  const submit = byId<HTMLButtonElement>("pull-submit");
  const status = byId("pull-status");
  const layers = byId("pull-layers");
  const overall = byId<HTMLProgressElement>("pull-overall");

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = reference.value.trim();
    if (!wanted) {
      notify(status, "Name the image to pull, e.g. registry.local:5000/team/app:1.0");
      return;
    }
    submit.disabled = true;
    overall.hidden = false;
    overall.value = 0;
    replace(layers);
    notify(status, `Pulling ${wanted}…`, "busy");
    void pull(wanted, insecure.checked, (progress) => {
      overall.value = progress.fraction;
      replace(layers, ...[...progress.layers.values()].map(layerRow));
    })
      .then(async (progress) => {
        notify(status, `Pulled ${progress.reference || wanted} (${shortId(progress.imageId ?? "")})`, "ok");
        await reload();
      })
      .catch((error: unknown) => notify(status, `Pull failed: ${describeError(error)}`))
      .finally(() => (submit.disabled = false));
  });
}

function layerRow(layer: LayerProgress): HTMLElement {
  const fraction = layer.phase === "exists" || layer.phase === "complete" ? 1 : layer.total > 0 ? Math.min(1, layer.done / layer.total) : 0;
  const words = {
    waiting: "waiting",
    exists: "already present",
    downloading: `downloading ${formatBytes(layer.done)} of ${formatBytes(layer.total)}`,
    extracting: "extracting",
    complete: "done",
  }[layer.phase];
  return h("li", { "data-phase": layer.phase }, h("span", { class: "mono" }, shortId(layer.digest)), h("progress", { max: 1, value: fraction }), h("span", { class: "sub" }, words));
}

interface RegistrySummary {
  registry: string;
  insecure: boolean;
  username: string | null;
}

/**
 * Plain HTTP is a setting of the registry (`PUT /api/registries/{host}`), not of one pull: set it
 * when asked, unless it is set already. Setting it replaces the registry's settings, so one with
 * stored credentials is left alone and the user is told.
 */
async function allowPlainHttp(reference: string): Promise<void> {
  const host = registryOf(reference);
  if (!host) throw new Error("plain HTTP needs a registry in the reference, e.g. 10.0.0.5:5000/team/app:1.0");
  const known = (await api<RegistrySummary[]>("/api/registries")).find((r) => r.registry === host);
  if (known?.insecure) return;
  if (known?.username) {
    throw new Error(`${host} has stored credentials; change its plain-HTTP setting together with them (PUT /api/registries/${host})`);
  }
  await api(`/api/registries/${encodeURIComponent(host)}`, { method: "PUT", body: { insecure: true } });
}

/** Streams `POST /api/images/pull`; resolves when the server says done, rejects with its error. */
async function pull(reference: string, insecure: boolean, onProgress: (progress: PullProgress) => void): Promise<PullProgress> {
  if (insecure) await allowPlainHttp(reference);
  const response = await fetch("/api/images/pull", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ reference }),
  });
  if (!response.ok || !response.body) throw errorFromBody(response.status, await response.text());
  const parser = new SseParser();
  const progress = new PullProgress();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const event of parser.feed(value)) progress.apply(event);
    onProgress(progress);
    if (progress.error) throw new Error(progress.error);
    if (progress.imageId !== null) return progress;
  }
  if (progress.error) throw new Error(progress.error);
  if (progress.imageId === null) throw new Error("the server ended the pull without saying it finished");
  return progress;
}

function wireImport(reload: () => Promise<void>): void {
  const form = byId<HTMLFormElement>("import-form");
  const file = byId<HTMLInputElement>("import-file");
  const tag = byId<HTMLInputElement>("import-tag");
  const submit = byId<HTMLButtonElement>("import-submit");
  const status = byId("import-status");
  const bar = byId<HTMLProgressElement>("import-progress");

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const archive = file.files?.[0];
    if (!archive) {
      notify(status, "Choose a tarball: the output of `docker save`, or a root filesystem (.tar, .tar.gz)");
      return;
    }
    submit.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    const url = new URL("/api/images/import", location.origin);
    if (tag.value.trim()) url.searchParams.set("tag", tag.value.trim());
    // XMLHttpRequest, because fetch cannot report upload progress.
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("content-type", "application/octet-stream");
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) {
        bar.value = e.loaded / e.total;
        notify(status, e.loaded < e.total ? `Uploading… ${formatBytes(e.loaded)} of ${formatBytes(e.total)}` : "Unpacking on the server…", "busy");
      }
    });
    request.addEventListener("load", () => {
      submit.disabled = false;
      if (request.status >= 200 && request.status < 300) {
        const body = JSON.parse(request.responseText) as { images?: { tags?: string[]; id?: string }[] };
        const names = (body.images ?? []).map((i) => i.tags?.[0] ?? shortId(i.id ?? "")).join(", ");
        notify(status, `Imported ${names || "the archive"}`, "ok");
        void reload();
      } else {
        notify(status, `Import failed: ${errorFromBody(request.status, request.responseText).message}`);
      }
    });
    request.addEventListener("error", () => {
      submit.disabled = false;
      notify(status, "Import failed: the server cannot be reached (network error)");
    });
    notify(status, "Uploading…", "busy");
    request.send(archive);
  });
}
