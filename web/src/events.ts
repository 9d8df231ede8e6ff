// The engine's events (`/api/events`, server-sent events): the browser's EventSource reconnects
// by itself; callers hear about each event and about the connection coming and going.

export interface ContainerEvent {
  time: string;
  container_id: string;
  container_name: string;
  action: { type: string; exit_code?: number };
}

export function watchEvents(onEvent: (event: ContainerEvent) => void, onConnection: (connected: boolean) => void): () => void {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => onConnection(true));
  source.addEventListener("error", () => onConnection(false));
  source.addEventListener("container", (message) => {
    try {
      onEvent(JSON.parse((message as MessageEvent<string>).data) as ContainerEvent);
    } catch {
      // A malformed event changes nothing on screen.
    }
  });
  return () => source.close();
}
