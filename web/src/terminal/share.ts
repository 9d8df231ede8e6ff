// The owner's share dialog: create a viewer or writer link with an expiry, copy it, see the
// links that are active and revoke them. The secret appears only in the link it belongs to.

import { api, describeError, type ShareLink } from "../api.ts";
import { h, notify, replace } from "../dom.ts";
import { copyText } from "./clipboard.ts";

const LIFETIMES: [string, number][] = [
  ["15 minutes", 15 * 60],
  ["1 hour", 3600],
  ["8 hours", 8 * 3600],
  ["1 day", 86400],
  ["7 days", 7 * 86400],
  ["30 days", 30 * 86400],
];

export function openShareDialog(terminal: string): void {
  const base = `/api/terminals/${encodeURIComponent(terminal)}/links`;
  const status = h("p", { class: "status", hidden: true });
  const role = h("select", { name: "role", "aria-label": "Role" }, h("option", { value: "viewer" }, "Viewer — can watch"), h("option", { value: "writer" }, "Writer — can type"));
  const lifetime = h("select", { name: "expires_in", "aria-label": "Expires after" }, ...LIFETIMES.map(([label, seconds]) => h("option", { value: seconds, selected: seconds === 3600 }, label)));
  const linkField = h("input", { type: "text", readonly: true, class: "share-url", "aria-label": "Share link", "data-testid": "share-url" });
  const copyButton = h("button", { type: "button", class: "primary" }, "Copy");
  const result = h("div", { class: "share-result", hidden: true }, h("label", {}, "Link (shown once)", linkField), copyButton);
  const list = h("ul", { class: "links" });
  const create = h("button", { type: "submit", class: "primary", "data-testid": "create-link" }, "Create link");
  const close = h("button", { type: "button" }, "Close");

  const dialog = h(
    "dialog",
    { class: "share" },
    h(
      "form",
      { method: "dialog" },
      h("h2", {}, "Share this terminal"),
      h("p", { class: "hint" }, "Anyone with the link can open this one terminal (nothing else) until it expires or you revoke it."),
      h("div", { class: "row" }, h("label", {}, "Role ", role), h("label", {}, "Expires after ", lifetime), create),
      result,
      status,
      h("h3", {}, "Active links"),
      list,
      h("menu", {}, close),
    ),
  );

  async function refresh(): Promise<void> {
    try {
      const links = await api<ShareLink[]>(base);
      const active = links.filter((l) => !l.revoked && Date.parse(l.expires_at) > Date.now());
      replace(
        list,
        ...(active.length === 0
          ? [h("li", { class: "empty" }, "No active links.")]
          : active.map((link) =>
              h(
                "li",
                {},
                h("span", { class: `badge role-${link.role}` }, link.role),
                ` expires ${new Date(link.expires_at).toLocaleString()} `,
                h("button", { type: "button", class: "small danger", onclick: () => void revoke(link.id) }, "Revoke"),
              ),
            )),
      );
    } catch (error) {
      notify(status, `Cannot list the links: ${describeError(error)}`);
    }
  }

  async function revoke(id: string): Promise<void> {
    try {
      await api(`${base}/${encodeURIComponent(id)}`, { method: "DELETE" });
      notify(status, "Link revoked; anyone connected with it was disconnected.", "ok");
      await refresh();
    } catch (error) {
      notify(status, `Cannot revoke the link: ${describeError(error)}`);
    }
  }

  create.addEventListener("click", (event) => {
    event.preventDefault();
    create.disabled = true;
    notify(status, "Creating…", "busy");
    api<ShareLink>(base, { method: "POST", body: { role: role.value, expires_in: Number(lifetime.value) } })
      .then(async (link) => {
        linkField.value = new URL(link.url ?? "", location.origin).toString();
        result.hidden = false;
        const copied = await copyText(linkField.value);
        notify(status, copied ? `A ${link.role} link was created and copied to the clipboard.` : `A ${link.role} link was created: copy it from the field.`, "ok");
        linkField.select();
        await refresh();
      })
      .catch((error: unknown) => notify(status, `Cannot create the link: ${describeError(error)}`))
      .finally(() => (create.disabled = false));
  });
  copyButton.addEventListener("click", () => {
    void copyText(linkField.value).then((ok) => notify(status, ok ? "Copied." : "The browser refused to copy: select the link and copy it.", ok ? "ok" : "error"));
  });
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  document.body.appendChild(dialog);
  dialog.showModal();
  void refresh();
}
