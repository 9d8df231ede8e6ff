// The login page: the token field can be shown while typing (tokens are long), and the form
// says it is working while the server checks.

import { byId } from "../dom.ts";

export function loginPage(): void {
  const form = byId<HTMLFormElement>("login-form");
  const token = byId<HTMLInputElement>("login-token");
  const reveal = byId<HTMLInputElement>("login-reveal");
  const submit = byId<HTMLButtonElement>("login-submit");
  reveal.addEventListener("change", () => (token.type = reveal.checked ? "text" : "password"));
  form.addEventListener("submit", () => {
    token.value = token.value.trim();
    submit.disabled = true;
    submit.textContent = "Checking…";
  });
}
