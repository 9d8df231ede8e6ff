// A tiny element builder. Text always goes in as text nodes, never as HTML, so whatever the
// server (or a container's name) contains is shown, not interpreted.

import { describeError } from "./api.ts";

type Child = Node | string | number | null | undefined | false;
type Attributes = Record<string, string | number | boolean | null | undefined | EventListener>;

/** `h("button", { class: "x", onclick: f }, "Stop")`. Attributes starting with `on` are listeners. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Attributes = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, ...children);
  return element;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
}

/** Replaces all children. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element as T;
}

/**
 * Shows a message where the user acted: `target` gets the text and a state the stylesheet
 * colours (`error`, `ok`, `busy`); an empty message hides it.
 */
export function notify(target: HTMLElement, message: string, state: "error" | "ok" | "busy" = "error"): void {
  target.textContent = message;
  target.dataset["state"] = state;
  target.hidden = message === "";
  if (state === "error") target.setAttribute("role", "alert");
}

/** Runs an action from a button: disabled while it runs, errors shown in `status`. */
export async function busy(button: HTMLButtonElement, status: HTMLElement, action: () => Promise<void>): Promise<void> {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await action();
  } catch (error) {
    notify(status, describeError(error));
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** A modal confirmation (native <dialog>); resolves true when confirmed. */
export function confirmDialog(title: string, message: string, confirmLabel: string, danger = true): Promise<boolean> {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm" },
      h("form", { method: "dialog" },
        h("h2", {}, title),
        h("p", {}, message),
        h("menu", {},
          h("button", { value: "cancel", type: "submit" }, "Cancel"),
          h("button", { value: "ok", type: "submit", class: danger ? "danger" : "primary", "data-confirm": "" }, confirmLabel))));
    document.body.appendChild(dialog);
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    dialog.showModal();
  });
}
