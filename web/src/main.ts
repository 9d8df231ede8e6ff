// Entry point of the dashboard bundle.
import { describeHealth, parseHealth } from "./health.ts";

async function showHealth(target: HTMLElement): Promise<void> {
  try {
    const response = await fetch("/healthz", { headers: { accept: "application/json" } });
    if (!response.ok) {
      throw new Error(`the server answered ${response.status}`);
    }
    target.textContent = describeHealth(parseHealth(await response.json()));
    target.dataset["state"] = "ok";
  } catch (error) {
    target.textContent = `Cannot reach the Porthole server: ${(error as Error).message}`;
    target.dataset["state"] = "error";
  }
}

const status = document.getElementById("status");
if (status) {
  void showHealth(status);
}
