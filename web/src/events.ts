// The engine's events (`/api/events`, server-sent events): the browser's EventSource reconnects
// by itself; callers hear about each event and about the connection coming and going.

export interface ContainerEvent {
  engine?: string;
  time: string;
  container_id: string;
  container_name: string;
  action: { type: string; exit_code?: number };
}

/**
 * Calls `onEvent` for each container event, `onConnection` when the stream connects or drops,
 * and `onEngine` when an engine becomes unavailable or available again.
 */
export function watchEvents(onEvent: (event: ContainerEvent) => void, onConnection: (connected: boolean) => void, onEngine?: () => void): () => void {
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
  source.addEventListener("engine", () => onEngine?.());
  return () => source.close();
}
